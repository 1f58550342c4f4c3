//! Issued quotes leave the store once they are old, so it holds what miners may still mint and
//! a window of history, instead of every share ever accepted.
//!
//! A quote is pruned when it was created more than `keep_issued_secs` ago and everything paid on
//! it has been issued: the wallet has its ecash (cdk keeps the blind signatures, so NUT-09
//! restore still works), and nobody can mint it again. What the store does not hold any more it
//! must not take back: a create redelivered later (the pool published it again after a Redis
//! failover, say) would store the quote afresh, UNPAID, and an update would pay it twice. So
//! the mint refuses every create older than the window (it goes to the dead letters, with its
//! reason) and prunes only quotes older than the window by a margin more: a create it refuses
//! is never one it stored, and a create it takes is never one it pruned, for mint workers whose
//! clocks differ by less than the margin. Updates need no rule: an update naming a pruned quote
//! finds it missing and waits, then is dead-lettered, paying nothing.
//!
//! Quotes never paid or not yet minted are never pruned: they are the miners' ecash.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;

use super::{
    epoch_of_payment, BatchWriter, PostgresBatchError, QuoteBook, SqliteBatchError,
    EPOCH_INDEX_NAMESPACE, KEY_INDEX_NAMESPACE,
};
use crate::config::RetentionConfig;
use crate::metrics::MintMetrics;

/// How much older than the window a quote must be before it is pruned: the clock difference
/// between mint workers that the rule above tolerates.
pub const CLOCK_MARGIN_SECS: u64 = 3600;

/// How long issued quotes are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    keep_issued_secs: u64,
}

impl Retention {
    /// Keeps issued quotes `keep_issued_secs` after their creation; `None` for 0 (keep them all).
    pub fn keeping(keep_issued_secs: u64) -> Option<Self> {
        (keep_issued_secs > 0).then_some(Self { keep_issued_secs })
    }

    /// Creates made before this (Unix seconds, `now` being the mint's clock) are refused.
    pub fn refuse_created_before(&self, now: u64) -> u64 {
        now.saturating_sub(self.keep_issued_secs)
    }

    /// Issued quotes created before this are pruned.
    pub fn prune_created_before(&self, now: u64) -> u64 {
        self.refuse_created_before(now)
            .saturating_sub(CLOCK_MARGIN_SECS)
    }
}

#[derive(Debug, Error)]
pub enum PruneError {
    #[error(transparent)]
    Sqlite(#[from] SqliteBatchError),
    #[error(transparent)]
    Postgres(#[from] PostgresBatchError),
    #[error("issued quotes are pruned by the mint's own store writer, which is not running")]
    NoWriter,
}

/// A quote to prune, with what its index entries are keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prunable {
    pub id: String,
    pub pubkey: Option<String>,
    /// The epoch of a sat quote, from the payment its release recorded.
    pub epoch: Option<u64>,
}

impl Prunable {
    /// A quote with its locking key and the payments recorded on it.
    pub fn new<'a>(
        id: String,
        pubkey: Option<String>,
        payment_ids: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let epoch = payment_ids.into_iter().find_map(epoch_of_payment);
        Self { id, pubkey, epoch }
    }

    /// Its entries in our indexes (see `index_entries`): namespace, secondary key, key.
    pub fn index_keys(&self) -> impl Iterator<Item = (&'static str, String, &str)> {
        let by_key = self
            .pubkey
            .clone()
            .map(|pubkey| (KEY_INDEX_NAMESPACE, pubkey, self.id.as_str()));
        let by_epoch = self
            .epoch
            .map(|epoch| (EPOCH_INDEX_NAMESPACE, epoch.to_string(), self.id.as_str()));
        by_key.into_iter().chain(by_epoch)
    }
}

impl QuoteBook {
    /// Deletes up to `limit` issued quotes created before `created_before` (Unix seconds), with
    /// their payments, issuances and index entries, in one transaction; how many.
    pub async fn prune_issued(&self, created_before: u64, limit: usize) -> Result<u64, PruneError> {
        match &self.batch_writer {
            Some(BatchWriter::Sqlite(writer)) => {
                Ok(writer.prune_issued(created_before, limit).await?)
            }
            Some(BatchWriter::Postgres(writer)) => {
                Ok(writer.prune_issued(created_before, limit).await?)
            }
            None => Err(PruneError::NoWriter),
        }
    }

    /// Deletes every issued quote created before `created_before`, `batch` a transaction; how
    /// many.
    pub async fn prune_all_issued(
        &self,
        created_before: u64,
        batch: usize,
    ) -> Result<u64, PruneError> {
        let mut pruned = 0;
        loop {
            let deleted = self.prune_issued(created_before, batch).await?;
            pruned += deleted;
            if deleted < batch as u64 {
                return Ok(pruned);
            }
        }
    }
}

/// Prunes issued quotes past the book's retention window every `prune_interval_secs` until
/// shutdown; nothing when the book keeps every quote.
pub async fn run_pruner(
    book: QuoteBook,
    config: RetentionConfig,
    metrics: Arc<MintMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(retention) = book.retention else {
        return;
    };
    let period = Duration::from_secs(config.prune_interval_secs.max(1));
    let batch = config.prune_batch.max(1);
    loop {
        let created_before = retention.prune_created_before(cdk::util::unix_time());
        match book.prune_all_issued(created_before, batch).await {
            Ok(0) => {}
            Ok(pruned) => {
                metrics.quotes_pruned.inc_by(pruned);
                tracing::info!(pruned, "issued quotes past the retention window pruned");
            }
            Err(PruneError::NoWriter) => {
                tracing::warn!(
                    "issued quotes are kept: the mint's own store writer is not running"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "pruning issued quotes failed; trying again later")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pruned_quote_is_older_than_any_create_taken_by_a_worker_within_the_margin() {
        let retention = Retention::keeping(86_400).expect("a window");
        let now = 1_800_000_000;
        let pruned_before = retention.prune_created_before(now);
        // A worker whose clock is behind by less than the margin still refuses what was pruned.
        let behind = retention.refuse_created_before(now - CLOCK_MARGIN_SECS + 1);
        assert!(pruned_before < behind);
        assert_eq!(retention.refuse_created_before(now), now - 86_400);
    }

    #[test]
    fn a_sat_quote_is_found_in_the_epoch_its_payment_names() {
        let id = "9d8f3c1e-0000-4000-8000-000000000001".to_owned();
        let payment = super::super::payment_id(id.parse().unwrap(), Some(812));
        let quote = Prunable::new(id.clone(), Some("02ab".into()), [payment.as_str()]);
        let keys: Vec<_> = quote.index_keys().collect();
        assert_eq!(
            keys,
            [
                (KEY_INDEX_NAMESPACE, "02ab".to_owned(), id.as_str()),
                (EPOCH_INDEX_NAMESPACE, "812".to_owned(), id.as_str()),
            ]
        );
        let ehash = super::super::payment_id(id.parse().unwrap(), None);
        assert_eq!(
            Prunable::new(id, None, [ehash.as_str()])
                .index_keys()
                .count(),
            0
        );
    }

    #[test]
    fn a_window_of_zero_keeps_everything() {
        assert_eq!(Retention::keeping(0), None);
    }
}
