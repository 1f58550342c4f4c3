//! The miner's wallet.
//!
//! One BIP39 mnemonic backs everything: the cdk wallet's NUT-13 deterministic secrets and the
//! locking key the miner puts in its channel identity (NUT-20 key derivation, counter 0). So the
//! twelve words alone restore both the ecash (NUT-09) and the right to mint quotes still waiting
//! at the mint. The wallet finds its quotes with the mint's signed lookup, mints every PAID one in
//! NUT-29 batches, and sends and receives V4 tokens; all cashu crypto is cdk's.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cdk::amount::SplitTarget;
use cdk::mint_url::MintUrl;
use cdk::nuts::nut20::derive_quote_locking_key;
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, SecretKey};
use cdk::wallet::{MintQuote, ReceiveOptions, SendOptions, Wallet, WalletBuilder};
use cdk::Amount;
use cdk_http_client::HttpClient;
use cdk_sqlite::wallet::WalletSqliteDatabase;
use ehash::{
    lookup_message, LockingPubkey, QuoteLookupRequest, QuoteLookupResponse, QuoteState,
    QuoteSummary,
};
use hashpool_service::{create_secret, read_secret, SecretFileError};
use thiserror::Error;

/// Quotes per NUT-29 batch when the mint does not say.
const DEFAULT_BATCH_SIZE: usize = 100;

#[derive(Debug, Error)]
pub enum WalletError {
    #[error("no wallet in {0}; run `wallet init` first")]
    NotInitialised(PathBuf),
    #[error("a wallet already exists in {0}")]
    AlreadyInitialised(PathBuf),
    #[error("the mnemonic in {path} is not a valid BIP39 phrase: {reason}")]
    BadMnemonic { path: PathBuf, reason: String },
    #[error("not a BIP39 phrase: {0}")]
    BadPhrase(String),
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
    #[error("bad mint URL {url}: {reason}")]
    BadMintUrl { url: String, reason: String },
    #[error("cannot reach the mint at {url}: {reason}")]
    MintUnreachable { url: String, reason: String },
    #[error("the mint refused: {0}")]
    MintRefused(String),
    #[error("the mint sent an answer this wallet cannot read: {0}")]
    BadMintAnswer(String),
    #[error("balance is {balance} hash, less than the {wanted} asked for")]
    InsufficientBalance { balance: u64, wanted: u64 },
    #[error("wallet store: {0}")]
    Store(String),
    #[error("{0}")]
    Cashu(cdk::Error),
}

impl From<cdk::cdk_database::Error> for WalletError {
    fn from(error: cdk::cdk_database::Error) -> Self {
        WalletError::Store(error.to_string())
    }
}

impl From<cdk::Error> for WalletError {
    fn from(error: cdk::Error) -> Self {
        WalletError::Cashu(error)
    }
}

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

/// What a `mint` pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MintReport {
    /// PAID quotes minted.
    pub quotes: usize,
    /// Ecash minted, in hash.
    pub amount: u64,
    /// Quotes still UNPAID at the mint (their shares are not yet released).
    pub unpaid: usize,
}

/// The secrets behind a wallet: its seed and the locking key derived from it.
pub struct WalletKeys {
    seed: [u8; 64],
    locking_key: SecretKey,
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

/// The miner's wallet at one mint, for unit `hash`.
pub struct MinerWallet {
    wallet: Wallet,
    keys: WalletKeys,
    mint_url: MintUrl,
    http: HttpClient,
}

impl MinerWallet {
    /// Opens the wallet in `dir` (see [`WalletKeys::create`] to make one).
    pub async fn open(dir: &WalletDir, mint_url: &str) -> Result<Self, WalletError> {
        let keys = WalletKeys::load(dir)?;
        let mint_url: MintUrl =
            mint_url
                .parse()
                .map_err(|error: cdk::mint_url::Error| WalletError::BadMintUrl {
                    url: mint_url.to_owned(),
                    reason: error.to_string(),
                })?;
        let store = WalletSqliteDatabase::new(dir.store_file())
            .await
            .map_err(|error| WalletError::Store(error.to_string()))?;
        let wallet = WalletBuilder::new()
            .mint_url(mint_url.clone())
            .unit(CurrencyUnit::custom(ehash::UNIT))
            .localstore(Arc::new(store))
            .seed(keys.seed)
            .build()?;
        Ok(Self {
            wallet,
            keys,
            mint_url,
            http: HttpClient::new(),
        })
    }

    pub fn pubkey(&self) -> LockingPubkey {
        self.keys.pubkey()
    }

    pub fn mint_url(&self) -> &MintUrl {
        &self.mint_url
    }

    pub fn cdk(&self) -> &Wallet {
        &self.wallet
    }

    /// This key's quotes at the mint, proven with a fresh signature (the mint's signed lookup).
    pub async fn quotes(&self) -> Result<Vec<QuoteSummary>, WalletError> {
        let pubkey = self.pubkey();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(0);
        let signature = self
            .keys
            .locking_key
            .sign(lookup_message(&pubkey, timestamp).as_bytes())
            .map_err(|error| WalletError::Store(error.to_string()))?;
        let request = QuoteLookupRequest {
            pubkey: pubkey.to_string(),
            timestamp,
            signature: signature.to_string(),
        };
        let url = self
            .mint_url
            .join_paths(&["v1", "ehash", "quotes"])
            .map_err(|error| WalletError::BadMintUrl {
                url: self.mint_url.to_string(),
                reason: error.to_string(),
            })?;
        let response = self
            .http
            .post(url.as_str())
            .json(&request)
            .send()
            .await
            .map_err(|error| WalletError::MintUnreachable {
                url: self.mint_url.to_string(),
                reason: error.to_string(),
            })?;
        let body = response.body_lossy();
        if !response.is_success() {
            return Err(WalletError::MintRefused(refusal(response.status(), &body)));
        }
        let answer: QuoteLookupResponse = serde_json::from_str(&body)
            .map_err(|error| WalletError::BadMintAnswer(error.to_string()))?;
        Ok(answer.quotes)
    }

    /// Mints every PAID quote of this key, in NUT-29 batches.
    pub async fn mint_paid(&self) -> Result<MintReport, WalletError> {
        let quotes = self.quotes().await?;
        let mut report = MintReport {
            unpaid: quotes
                .iter()
                .filter(|quote| quote.state == QuoteState::Unpaid)
                .count(),
            ..MintReport::default()
        };
        let mintable: Vec<&QuoteSummary> =
            quotes.iter().filter(|quote| quote.mintable() > 0).collect();
        if mintable.is_empty() {
            return Ok(report);
        }
        let batch_size = self.batch_size().await;
        for batch in mintable.chunks(batch_size) {
            for quote in batch {
                self.remember(quote).await?;
            }
            let ids: Vec<&str> = batch.iter().map(|quote| quote.quote.as_str()).collect();
            let proofs = self
                .wallet
                .batch_mint(&ids, SplitTarget::default(), None, None)
                .await
                .map_err(|error| self.reachability(error.into()))?;
            let minted = proofs
                .iter()
                .map(|proof| u64::from(proof.amount))
                .sum::<u64>();
            tracing::info!(quotes = batch.len(), amount = minted, "minted");
            report.quotes += batch.len();
            report.amount += minted;
        }
        Ok(report)
    }

    /// Unspent ecash, in hash.
    pub async fn balance(&self) -> Result<u64, WalletError> {
        Ok(u64::from(self.wallet.total_balance().await?))
    }

    /// A V4 token (`cashuB...`) for `amount` hash, taken out of this wallet.
    pub async fn send(&self, amount: u64) -> Result<String, WalletError> {
        let balance = self.balance().await?;
        if balance < amount {
            return Err(WalletError::InsufficientBalance {
                balance,
                wanted: amount,
            });
        }
        let prepared = self
            .wallet
            .prepare_send(Amount::from(amount), SendOptions::default())
            .await
            .map_err(|error| self.reachability(error.into()))?;
        let token = prepared
            .confirm(None)
            .await
            .map_err(|error| self.reachability(error.into()))?;
        Ok(token.to_string())
    }

    /// Swaps a token's proofs into this wallet; returns the amount received.
    pub async fn receive(&self, token: &str) -> Result<u64, WalletError> {
        let amount = self
            .wallet
            .receive(token.trim(), ReceiveOptions::default())
            .await
            .map_err(|error| self.reachability(error.into()))?;
        Ok(u64::from(amount))
    }

    /// Recovers this mnemonic's ecash from the mint (NUT-09); returns the unspent amount.
    pub async fn restore(&self) -> Result<u64, WalletError> {
        let restored = self
            .wallet
            .restore()
            .await
            .map_err(|error| self.reachability(error.into()))?;
        Ok(u64::from(restored.unspent))
    }

    /// Stores a PAID quote locally, with its NUT-20 key, so cdk can sign and mint it.
    async fn remember(&self, quote: &QuoteSummary) -> Result<(), WalletError> {
        if let Some(known) = self.wallet.localstore.get_mint_quote(&quote.quote).await? {
            if known.amount_mintable() > Amount::ZERO || known.used_by_operation.is_some() {
                return Ok(());
            }
        }
        let mut local = MintQuote::new(
            quote.quote.clone(),
            self.mint_url.clone(),
            PaymentMethod::Custom(ehash::PAYMENT_METHOD.into()),
            Some(Amount::from(quote.amount)),
            self.wallet.unit.clone(),
            String::new(),
            0,
            Some(self.keys.locking_key.clone()),
        );
        local.state = MintQuoteState::Paid;
        local.amount_paid = Amount::from(quote.amount_paid);
        local.amount_issued = Amount::from(quote.amount_issued);
        self.wallet.localstore.add_mint_quote(local).await?;
        Ok(())
    }

    async fn batch_size(&self) -> usize {
        match self.wallet.fetch_mint_info().await {
            Ok(Some(info)) => info
                .nuts
                .nut29
                .max_batch_size
                .and_then(|size| usize::try_from(size).ok())
                .filter(|size| *size > 0)
                .unwrap_or(DEFAULT_BATCH_SIZE),
            _ => DEFAULT_BATCH_SIZE,
        }
    }

    /// A transport failure says which mint could not be reached, not just "HTTP error".
    fn reachability(&self, error: WalletError) -> WalletError {
        match error {
            WalletError::Cashu(cdk::Error::HttpError(None, reason)) => {
                WalletError::MintUnreachable {
                    url: self.mint_url.to_string(),
                    reason,
                }
            }
            other => other,
        }
    }
}

/// A mint's error answer as one line: its cashu code and detail when it sent them.
fn refusal(status: u16, body: &str) -> String {
    #[derive(serde::Deserialize)]
    struct CashuError {
        code: u32,
        detail: Option<String>,
    }
    match serde_json::from_str::<CashuError>(body) {
        Ok(error) => format!(
            "{} (code {}, HTTP {status})",
            error.detail.unwrap_or_default(),
            error.code
        ),
        Err(_) => format!(
            "HTTP {status}: {}",
            body.chars().take(200).collect::<String>()
        ),
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

    #[tokio::test]
    async fn an_unreachable_mint_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let dir = WalletDir::new(dir.path());
        WalletKeys::create(&dir, None).unwrap();
        // Nothing listens on port 1.
        let wallet = MinerWallet::open(&dir, "http://127.0.0.1:1").await.unwrap();
        let error = wallet.mint_paid().await.unwrap_err();
        assert!(
            matches!(error, WalletError::MintUnreachable { ref url, .. } if url.contains("127.0.0.1:1")),
            "{error}"
        );
    }

    #[test]
    fn refusals_keep_the_cashu_code() {
        assert_eq!(
            refusal(400, r#"{"code":20008,"detail":"stale"}"#),
            "stale (code 20008, HTTP 400)"
        );
        assert_eq!(refusal(502, "<html>"), "HTTP 502: <html>");
    }
}
