//! The miner's wallet.
//!
//! One BIP39 mnemonic backs everything: the cdk wallet's NUT-13 deterministic secrets and the
//! locking key the miner puts in its channel identity (NUT-20 key derivation, counter 0). So the
//! twelve words alone restore both the ecash (NUT-09) and the right to mint quotes still waiting
//! at the mint. The wallet finds its quotes with the mint's signed lookup (page by page), mints
//! every PAID one in NUT-29 batches sized to what the mint accepts, finishes mint requests an
//! earlier run left unresolved (cdk's saga recovery), and sends and receives V4 tokens; all cashu
//! crypto is cdk's.

mod batch;
mod error;
mod keys;
mod lookup;
mod minting;
mod recovery;
mod withdraw;

use std::sync::Arc;

use cdk::mint_url::MintUrl;
use cdk::nuts::CurrencyUnit;
use cdk::wallet::{ReceiveOptions, SendOptions, Wallet, WalletBuilder};
use cdk::Amount;
use cdk_http_client::HttpClient;
use cdk_sqlite::wallet::WalletSqliteDatabase;
use ehash::LockingPubkey;

pub use batch::{BatchLimits, DEFAULT_MAX_REQUEST_BYTES};
pub use error::WalletError;
pub use keys::{WalletDir, WalletKeys};
pub use lookup::{QuotePages, Waiting};
pub use minting::{BatchDone, MintOptions, MintReport};
pub use recovery::{PendingRecovery, Recovery};
pub use withdraw::Withdrawal;

/// Which of the mint's two units a wallet holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WalletUnit {
    /// ehash: quotes PAID for their share's work as soon as the pool validates it.
    #[default]
    Hash,
    /// Payout epochs: quotes PAID their share of a payout that landed, in sats.
    Sat,
}

impl WalletUnit {
    /// The unit's name, as the mint and the quote messages spell it.
    pub fn name(self) -> &'static str {
        match self {
            WalletUnit::Hash => ehash::UNIT,
            WalletUnit::Sat => ehash::EPOCH_UNIT,
        }
    }

    /// The mint's other unit.
    pub fn other(self) -> Self {
        match self {
            WalletUnit::Hash => WalletUnit::Sat,
            WalletUnit::Sat => WalletUnit::Hash,
        }
    }

    pub fn cdk(self) -> CurrencyUnit {
        match self {
            WalletUnit::Hash => CurrencyUnit::custom(ehash::UNIT),
            WalletUnit::Sat => CurrencyUnit::Sat,
        }
    }
}

/// The miner's wallet at one mint, for one unit (`hash` by default).
pub struct MinerWallet {
    pub(crate) wallet: Wallet,
    pub(crate) unit: WalletUnit,
    pub(crate) keys: WalletKeys,
    pub(crate) mint_url: MintUrl,
    pub(crate) http: HttpClient,
}

impl MinerWallet {
    /// Opens the `hash` wallet in `dir` (see [`WalletKeys::create`] to make one).
    pub async fn open(dir: &WalletDir, mint_url: &str) -> Result<Self, WalletError> {
        Self::open_in(dir, mint_url, WalletUnit::Hash).await
    }

    /// Opens the wallet in `dir` for `unit`. Both units share the mnemonic and the store.
    pub async fn open_in(
        dir: &WalletDir,
        mint_url: &str,
        unit: WalletUnit,
    ) -> Result<Self, WalletError> {
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
            .unit(unit.cdk())
            .localstore(Arc::new(store))
            .seed(keys.seed)
            // cdk paces requests per host (a burst, then about one a second), which suits a
            // wallet polling strangers' mints. This one talks to its pool's mint, and saga
            // recovery checks each quote of an interrupted batch with its own request: paced,
            // recovering a few hundred quotes would take minutes.
            .without_rate_limiting()
            .build()?;
        Ok(Self {
            wallet,
            unit,
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

    pub fn unit(&self) -> WalletUnit {
        self.unit
    }

    /// Unspent ecash, in the wallet's unit.
    pub async fn balance(&self) -> Result<u64, WalletError> {
        Ok(u64::from(self.wallet.total_balance().await?))
    }

    /// Refuses, naming both figures, when the wallet holds less than `wanted`.
    pub(crate) async fn ensure_balance(&self, wanted: u64) -> Result<(), WalletError> {
        let balance = self.balance().await?;
        if balance < wanted {
            return Err(WalletError::InsufficientBalance { balance, wanted });
        }
        Ok(())
    }

    /// A V4 token (`cashuB...`) for `amount` of the wallet's unit, taken out of this wallet.
    pub async fn send(&self, amount: u64) -> Result<String, WalletError> {
        self.ensure_balance(amount).await?;
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

    /// A transport failure says which mint could not be reached, not just "HTTP error".
    pub(crate) fn reachability(&self, error: WalletError) -> WalletError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
