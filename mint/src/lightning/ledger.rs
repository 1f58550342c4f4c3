//! What the mint's node received for payouts, and which epoch each payment released: the mint
//! holds the sats, so it releases an epoch only against a payout it actually received.
//!
//! Kept in cdk's key-value store, beside the quotes, so a release check and the quotes it pays
//! are in the same store.

use cdk_common::database::{DynMintDatabase, Error as StoreError};
use ehash::EpochRelease;
use thiserror::Error;

const NAMESPACE: &str = "hashpool_payouts";
/// payment hash -> amount received, msat (u64 big-endian).
const RECEIVED: &str = "received";
/// payment hash -> the epoch it released (u64 big-endian).
const RELEASED: &str = "released";
/// payment hash -> empty: the pool acknowledged the callback.
const DELIVERED: &str = "delivered";
/// What the node shows payers: "offer" -> the payout offer (BOLT12, bech32), "funding" -> the
/// on-chain address shown to whoever funds it.
const NODE: &str = "node";
const OFFER: &str = "offer";
const FUNDING: &str = "funding";

/// Why an epoch's release is refused: none of these mends by waiting.
#[derive(Debug, Error)]
pub enum CustodyError {
    #[error("payment {payment} was not received by this mint's node as a payout")]
    NotReceived { payment: String },
    #[error(
        "payout {payout_sat} sat is more than the {received_msat} msat payment {payment} brought"
    )]
    ExceedsPayment {
        payment: String,
        payout_sat: u64,
        received_msat: u64,
    },
    #[error("payment {payment} already released epoch {released}")]
    AlreadyReleased { payment: String, released: u64 },
    #[error("payout ledger: {0}")]
    Store(#[from] StoreError),
}

fn to_u64(bytes: Vec<u8>) -> Option<u64> {
    <[u8; 8]>::try_from(bytes).ok().map(u64::from_be_bytes)
}

#[derive(Clone)]
pub struct PayoutLedger {
    store: DynMintDatabase,
}

impl PayoutLedger {
    pub fn new(store: DynMintDatabase) -> Self {
        Self { store }
    }

    async fn write(&self, secondary: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.store.begin_transaction().await?;
        tx.kv_write(NAMESPACE, secondary, key, value).await?;
        tx.commit().await
    }

    async fn read(&self, secondary: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.kv_read(NAMESPACE, secondary, key).await
    }

    pub async fn record_received(&self, payment: &str, amount_msat: u64) -> Result<(), StoreError> {
        self.write(RECEIVED, payment, &amount_msat.to_be_bytes())
            .await
    }

    pub async fn received_msat(&self, payment: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.read(RECEIVED, payment).await?.and_then(to_u64))
    }

    pub async fn mark_delivered(&self, payment: &str) -> Result<(), StoreError> {
        self.write(DELIVERED, payment, &[]).await
    }

    pub async fn is_delivered(&self, payment: &str) -> Result<bool, StoreError> {
        Ok(self.read(DELIVERED, payment).await?.is_some())
    }

    /// One of the node's texts (offer, funding address), if kept.
    async fn node_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .read(NODE, key)
            .await?
            .and_then(|bytes| String::from_utf8(bytes).ok()))
    }

    pub async fn offer(&self) -> Result<Option<String>, StoreError> {
        self.node_text(OFFER).await
    }

    pub async fn set_offer(&self, offer: &str) -> Result<(), StoreError> {
        self.write(NODE, OFFER, offer.as_bytes()).await
    }

    pub async fn funding_address(&self) -> Result<Option<String>, StoreError> {
        self.node_text(FUNDING).await
    }

    pub async fn set_funding_address(&self, address: &str) -> Result<(), StoreError> {
        self.write(NODE, FUNDING, address.as_bytes()).await
    }

    /// Admits `release` if its payment reached this node, covers the payout, and released no
    /// other epoch; the payment is then bound to this epoch, so the check passes again for the
    /// same release (a redelivery) and never for another.
    pub async fn admit(&self, release: &EpochRelease) -> Result<(), CustodyError> {
        let payment = release.payment_id.clone();
        let Some(received_msat) = self.received_msat(&payment).await? else {
            return Err(CustodyError::NotReceived { payment });
        };
        if release.payout.saturating_mul(1000) > received_msat {
            return Err(CustodyError::ExceedsPayment {
                payment,
                payout_sat: release.payout,
                received_msat,
            });
        }
        match self.read(RELEASED, &payment).await?.and_then(to_u64) {
            Some(epoch) if epoch == release.epoch => Ok(()),
            Some(released) => Err(CustodyError::AlreadyReleased { payment, released }),
            None => {
                self.write(RELEASED, &payment, &release.epoch.to_be_bytes())
                    .await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn release(epoch: u64, payout: u64, payment: &str) -> EpochRelease {
        EpochRelease {
            epoch,
            payout,
            total_work: 10,
            quotes: 2,
            payment_id: payment.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_release_needs_a_received_payment_that_covers_it_and_paid_no_other_epoch() {
        let store = Arc::new(cdk_sqlite::mint::memory::empty().await.unwrap());
        let ledger = PayoutLedger::new(store);
        assert!(matches!(
            ledger.admit(&release(1, 50, "aa")).await,
            Err(CustodyError::NotReceived { .. })
        ));
        ledger.record_received("aa", 50_999).await.unwrap();
        assert!(matches!(
            ledger.admit(&release(1, 51, "aa")).await,
            Err(CustodyError::ExceedsPayment {
                payout_sat: 51,
                received_msat: 50_999,
                ..
            })
        ));
        ledger.admit(&release(1, 50, "aa")).await.unwrap();
        // The same release again (a redelivery) passes; another epoch on the payment does not.
        ledger.admit(&release(1, 50, "aa")).await.unwrap();
        assert!(matches!(
            ledger.admit(&release(2, 10, "aa")).await,
            Err(CustodyError::AlreadyReleased { released: 1, .. })
        ));
    }

    #[tokio::test]
    async fn the_offer_and_deliveries_are_remembered() {
        let store = Arc::new(cdk_sqlite::mint::memory::empty().await.unwrap());
        let ledger = PayoutLedger::new(store);
        assert_eq!(ledger.offer().await.unwrap(), None);
        ledger.set_offer("lno1example").await.unwrap();
        assert_eq!(
            ledger.offer().await.unwrap().as_deref(),
            Some("lno1example")
        );
        assert!(!ledger.is_delivered("bb").await.unwrap());
        ledger.mark_delivered("bb").await.unwrap();
        assert!(ledger.is_delivered("bb").await.unwrap());
    }
}
