//! Miner identity: the key that will own a share's ecash.
//!
//! A miner puts its cashu locking key (NUT-20) in the Sv2 channel's `user_identity`, or in the
//! Sv1 username through the translator, as a compressed secp256k1 public key in hex, optionally
//! followed by `.worker`: `02ab…ef.bitaxe-1`.

use std::fmt;
use std::str::FromStr;

use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Longest identity an Sv2 `user_identity` (STR0_255) can carry.
pub const MAX_IDENTITY_LEN: usize = 255;
/// Longest worker name accepted after the key.
pub const MAX_WORKER_LEN: usize = 64;
const COMPRESSED_KEY_HEX_LEN: usize = 66;

/// Why a `user_identity` is not a valid miner identity.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentityError {
    #[error("identity is empty: expected a compressed secp256k1 public key in hex, optionally followed by .worker")]
    Empty,
    #[error("identity is {len} bytes long; at most {MAX_IDENTITY_LEN} are allowed")]
    TooLong { len: usize },
    #[error("public key is {len} characters long; a compressed public key is {COMPRESSED_KEY_HEX_LEN} hex characters")]
    WrongKeyLength { len: usize },
    #[error("public key is not hex")]
    NotHex,
    #[error("public key must be compressed (prefix 02 or 03), found prefix {prefix:02x}")]
    NotCompressed { prefix: u8 },
    #[error("public key is not a point on secp256k1")]
    NotOnCurve,
    #[error("worker name after '.' is empty")]
    EmptyWorker,
    #[error("worker name is {len} characters long; at most {MAX_WORKER_LEN} are allowed")]
    WorkerTooLong { len: usize },
    #[error("worker name contains {found:?}; allowed are ASCII letters, digits, '.', '_' and '-'")]
    InvalidWorkerChar { found: char },
}

impl IdentityError {
    /// Short machine-readable reason, fit for an Sv2 `OpenMiningChannel.Error` error code or a
    /// Sv1 error message prefix.
    pub fn code(&self) -> &'static str {
        match self {
            IdentityError::Empty => "identity-missing",
            IdentityError::TooLong { .. } => "identity-too-long",
            IdentityError::WrongKeyLength { .. } => "identity-key-bad-length",
            IdentityError::NotHex => "identity-key-not-hex",
            IdentityError::NotCompressed { .. } => "identity-key-not-compressed",
            IdentityError::NotOnCurve => "identity-key-not-on-curve",
            IdentityError::EmptyWorker
            | IdentityError::WorkerTooLong { .. }
            | IdentityError::InvalidWorkerChar { .. } => "identity-bad-worker-name",
        }
    }
}

/// A compressed secp256k1 public key that locks a quote (NUT-20). Serialized as 66 hex characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockingPubkey(PublicKey);

impl LockingPubkey {
    pub fn new(key: PublicKey) -> Self {
        Self(key)
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.0
    }

    pub fn to_bytes(&self) -> [u8; 33] {
        self.0.serialize()
    }
}

impl FromStr for LockingPubkey {
    type Err = IdentityError;

    fn from_str(hex_key: &str) -> Result<Self, Self::Err> {
        if hex_key.len() != COMPRESSED_KEY_HEX_LEN {
            return Err(IdentityError::WrongKeyLength { len: hex_key.len() });
        }
        let mut bytes = [0u8; 33];
        hex::decode_to_slice(hex_key, &mut bytes).map_err(|_| IdentityError::NotHex)?;
        if bytes[0] != 0x02 && bytes[0] != 0x03 {
            return Err(IdentityError::NotCompressed { prefix: bytes[0] });
        }
        PublicKey::from_slice(&bytes)
            .map(Self)
            .map_err(|_| IdentityError::NotOnCurve)
    }
}

impl fmt::Display for LockingPubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.serialize()))
    }
}

impl Serialize for LockingPubkey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LockingPubkey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A parsed `user_identity`: the locking key and an optional worker name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MinerIdentity {
    locking_key: LockingPubkey,
    worker: Option<String>,
}

impl MinerIdentity {
    pub fn new(locking_key: LockingPubkey, worker: Option<String>) -> Result<Self, IdentityError> {
        if let Some(worker) = &worker {
            validate_worker(worker)?;
        }
        Ok(Self {
            locking_key,
            worker,
        })
    }

    pub fn locking_key(&self) -> LockingPubkey {
        self.locking_key
    }

    pub fn worker(&self) -> Option<&str> {
        self.worker.as_deref()
    }
}

impl FromStr for MinerIdentity {
    type Err = IdentityError;

    fn from_str(identity: &str) -> Result<Self, Self::Err> {
        if identity.is_empty() {
            return Err(IdentityError::Empty);
        }
        if identity.len() > MAX_IDENTITY_LEN {
            return Err(IdentityError::TooLong {
                len: identity.len(),
            });
        }
        let (key, worker) = match identity.split_once('.') {
            Some((key, worker)) => (key, Some(worker)),
            None => (identity, None),
        };
        let locking_key = key.parse()?;
        Self::new(locking_key, worker.map(str::to_owned))
    }
}

impl fmt::Display for MinerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.worker {
            Some(worker) => write!(f, "{}.{worker}", self.locking_key),
            None => write!(f, "{}", self.locking_key),
        }
    }
}

fn validate_worker(worker: &str) -> Result<(), IdentityError> {
    if worker.is_empty() {
        return Err(IdentityError::EmptyWorker);
    }
    let len = worker.chars().count();
    if len > MAX_WORKER_LEN {
        return Err(IdentityError::WorkerTooLong { len });
    }
    match worker
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(found) => Err(IdentityError::InvalidWorkerChar { found }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The secp256k1 generator point, a valid compressed key.
    const G: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

    #[test]
    fn parses_bare_key() {
        let id: MinerIdentity = G.parse().unwrap();
        assert_eq!(id.locking_key().to_string(), G);
        assert_eq!(id.worker(), None);
        assert_eq!(id.to_string(), G);
    }

    #[test]
    fn parses_key_with_worker_and_round_trips() {
        let text = format!("{G}.bitaxe-1");
        let id: MinerIdentity = text.parse().unwrap();
        assert_eq!(id.worker(), Some("bitaxe-1"));
        assert_eq!(id.to_string(), text);
    }

    #[test]
    fn worker_may_contain_dots() {
        let id: MinerIdentity = format!("{G}.rack1.s19").parse().unwrap();
        assert_eq!(id.worker(), Some("rack1.s19"));
    }

    #[test]
    fn uppercase_hex_is_the_same_key() {
        let upper: MinerIdentity = G.to_uppercase().parse().unwrap();
        assert_eq!(upper.locking_key().to_string(), G);
    }

    #[test]
    fn rejects_every_bad_form() {
        let cases: Vec<(String, IdentityError)> = vec![
            (String::new(), IdentityError::Empty),
            ("x".repeat(256), IdentityError::TooLong { len: 256 }),
            (
                G[..64].to_string(),
                IdentityError::WrongKeyLength { len: 64 },
            ),
            (format!("{}zz", &G[..64]), IdentityError::NotHex),
            (
                format!("04{}", &G[2..]),
                IdentityError::NotCompressed { prefix: 4 },
            ),
            // x = 5 has no point on secp256k1.
            (format!("02{:064x}", 5), IdentityError::NotOnCurve),
            (format!("{G}."), IdentityError::EmptyWorker),
            (
                format!("{G}.{}", "w".repeat(65)),
                IdentityError::WorkerTooLong { len: 65 },
            ),
            (
                format!("{G}.my worker"),
                IdentityError::InvalidWorkerChar { found: ' ' },
            ),
            (
                "bc1qxyz".to_string(),
                IdentityError::WrongKeyLength { len: 7 },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(input.parse::<MinerIdentity>(), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn every_error_has_a_code_that_fits_sv2() {
        let errors = [
            IdentityError::Empty,
            IdentityError::TooLong { len: 300 },
            IdentityError::WrongKeyLength { len: 1 },
            IdentityError::NotHex,
            IdentityError::NotCompressed { prefix: 4 },
            IdentityError::NotOnCurve,
            IdentityError::EmptyWorker,
            IdentityError::WorkerTooLong { len: 99 },
            IdentityError::InvalidWorkerChar { found: '!' },
        ];
        for error in errors {
            assert!(error.code().len() <= 32 && error.code().is_ascii());
        }
    }

    proptest::proptest! {
        // user_identity comes straight off the wire.
        #[test]
        fn parsing_arbitrary_identities_never_panics(text in "\\PC{0,300}") {
            let _ = text.parse::<MinerIdentity>();
        }

        #[test]
        fn every_valid_key_with_a_worker_round_trips(worker in "[A-Za-z0-9._-]{1,64}") {
            let text = format!("{G}.{worker}");
            let id: MinerIdentity = text.parse().unwrap();
            proptest::prop_assert_eq!(id.to_string(), text);
        }
    }

    #[test]
    fn locking_key_serde_is_hex() {
        let key: LockingPubkey = G.parse().unwrap();
        let json = serde_json::to_string(&key).unwrap();
        assert_eq!(json, format!("\"{G}\""));
        assert_eq!(serde_json::from_str::<LockingPubkey>(&json).unwrap(), key);
        assert!(serde_json::from_str::<LockingPubkey>("\"02\"").is_err());
    }
}
