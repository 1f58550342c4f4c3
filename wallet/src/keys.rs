//! The wallet's directory and the keys its mnemonic derives.

use std::path::{Path, PathBuf};

use cdk::nuts::nut20::derive_quote_locking_key;
use cdk::nuts::SecretKey;
use ehash::LockingPubkey;
use hashpool_service::{create_secret, read_secret, SecretFileError};

use crate::WalletError;

/// Where a wallet keeps its files.
#[derive(Debug, Clone)]
pub struct WalletDir {
    root: PathBuf,
}

impl WalletDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The backup phrase, owner-only.
    pub fn mnemonic_file(&self) -> PathBuf {
        self.root.join("mnemonic")
    }

    pub fn store_file(&self) -> PathBuf {
        self.root.join("wallet.sqlite")
    }

    pub fn exists(&self) -> bool {
        self.mnemonic_file().exists()
    }
}

/// The secrets behind a wallet: its seed and the locking key derived from it.
pub struct WalletKeys {
    pub(crate) seed: [u8; 64],
    pub(crate) locking_key: SecretKey,
}

impl WalletKeys {
    /// Writes a new mnemonic into `dir` (or `phrase`, to restore one) and derives the keys.
    pub fn create(dir: &WalletDir, phrase: Option<&str>) -> Result<Self, WalletError> {
        let mnemonic = match phrase {
            Some(phrase) => bip39::Mnemonic::parse_normalized(phrase.trim())
                .map_err(|error| WalletError::BadPhrase(error.to_string()))?,
            None => bip39::Mnemonic::generate(12)
                .map_err(|error| WalletError::BadPhrase(error.to_string()))?,
        };
        match create_secret(&dir.mnemonic_file(), &format!("{mnemonic}\n")) {
            Ok(()) => Self::from_mnemonic(&mnemonic),
            Err(SecretFileError::Exists(_)) => {
                Err(WalletError::AlreadyInitialised(dir.path().to_owned()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The keys of the wallet in `dir`.
    pub fn load(dir: &WalletDir) -> Result<Self, WalletError> {
        let path = dir.mnemonic_file();
        let phrase = read_secret(&path)?
            .ok_or_else(|| WalletError::NotInitialised(dir.path().to_owned()))?;
        let mnemonic = bip39::Mnemonic::parse_normalized(&phrase).map_err(|error| {
            WalletError::BadMnemonic {
                path: path.clone(),
                reason: error.to_string(),
            }
        })?;
        Self::from_mnemonic(&mnemonic)
    }

    /// The keys of the wallet in `dir`, created first if there is none. Safe when several
    /// processes race to do it: they all end up with the one mnemonic that was written.
    pub fn load_or_create(dir: &WalletDir) -> Result<Self, WalletError> {
        match Self::load(dir) {
            Err(WalletError::NotInitialised(_)) => match Self::create(dir, None) {
                Err(WalletError::AlreadyInitialised(_)) => Self::load(dir),
                created => created,
            },
            loaded => loaded,
        }
    }

    fn from_mnemonic(mnemonic: &bip39::Mnemonic) -> Result<Self, WalletError> {
        let seed = mnemonic.to_seed_normalized("");
        let locking_key = derive_quote_locking_key(&seed, 0)
            .map_err(|error| WalletError::Store(error.to_string()))?;
        Ok(Self { seed, locking_key })
    }

    /// The key to put in the channel identity (`<pubkey>[.worker]`).
    pub fn pubkey(&self) -> LockingPubkey {
        self.locking_key
            .public_key()
            .to_hex()
            .parse()
            .expect("a cdk public key is a compressed secp256k1 key")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mnemonic_alone_determines_the_locking_key() {
        let first = tempfile::tempdir().unwrap();
        let dir = WalletDir::new(first.path());
        let keys = WalletKeys::create(&dir, None).unwrap();
        let phrase = std::fs::read_to_string(dir.mnemonic_file()).unwrap();
        assert_eq!(phrase.split_whitespace().count(), 12);
        assert_eq!(WalletKeys::load(&dir).unwrap().pubkey(), keys.pubkey());
        assert_eq!(
            WalletKeys::load_or_create(&dir).unwrap().pubkey(),
            keys.pubkey()
        );
        assert!(matches!(
            WalletKeys::create(&dir, None),
            Err(WalletError::AlreadyInitialised(_))
        ));

        let second = tempfile::tempdir().unwrap();
        let restored = WalletKeys::create(&WalletDir::new(second.path()), Some(&phrase)).unwrap();
        assert_eq!(restored.pubkey(), keys.pubkey());

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            WalletKeys::load(&WalletDir::new(empty.path())),
            Err(WalletError::NotInitialised(_))
        ));
        assert!(matches!(
            WalletKeys::create(&WalletDir::new(empty.path()), Some("not a phrase")),
            Err(WalletError::BadPhrase(_))
        ));
    }

    #[test]
    fn racing_creators_agree_on_one_key() {
        let root = tempfile::tempdir().unwrap();
        let keys: Vec<String> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        WalletKeys::load_or_create(&WalletDir::new(root.path()))
                            .unwrap()
                            .pubkey()
                            .to_string()
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().unwrap())
                .collect()
        });
        assert!(keys.iter().all(|key| *key == keys[0]), "{keys:?}");
    }
}
