//! Turning the pool's quote messages into cdk mint quotes, idempotently.
//!
//! A `create` writes an UNPAID quote under its deterministic id, locked to the miner's key, plus
//! an entry in our key -> quotes index, in one store transaction. An `update` records a payment
//! whose id is derived from the quote (and epoch), so a redelivered message is a no-op in cdk.

use std::sync::Arc;

use cdk::mint::{MintQuote, QuoteId};
use cdk::nuts::{
    CurrencyUnit, MintQuoteCustomResponse, NotificationPayload, PaymentMethod, PublicKey,
};
use cdk::{Amount, Mint};
use cdk_common::database::{DynMintTransaction, Error as StoreError};
use cdk_common::payment::{PaymentIdentifier, WaitPaymentResponse};
use ehash::{CreateQuote, EpochRelease, LockingPubkey, Release, UpdateQuote};
use thiserror::Error;
use uuid::Uuid;

use crate::lightning::ledger::{CustodyError, PayoutLedger};

mod batch;
mod plan;
mod postgres;
mod retention;
mod sqlite;
mod written;

pub use batch::{Applied, BatchResults, Batchable};
pub use postgres::{PostgresBatchError, PostgresBatchWriter};
pub use retention::{run_pruner, PruneError, Retention, CLOCK_MARGIN_SECS};
pub use sqlite::{SqliteBatchError, SqliteBatchWriter};

/// KV namespace of the index from locking key to quote ids (cdk has no query by pubkey).
const KEY_INDEX_NAMESPACE: &str = "ehash_quotes_by_key";

/// KV namespace of the index from payout epoch to its quotes and their work, what an epoch's
/// payout is split over.
pub const EPOCH_INDEX_NAMESPACE: &str = "ehash_quotes_by_epoch";

/// Quotes are never refused for age (the pool created them for real work); wallets hide quotes
/// whose expiry has passed, so set it far out.
const QUOTE_EXPIRY_SECS: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Error)]
pub enum QuoteBookError {
    /// The update is for a quote whose `create` has not been processed yet: retry it later.
    #[error("quote {0} is not in the store (yet)")]
    UnknownQuote(Uuid),
    /// Older than the retention window: its quote may have been issued and pruned, and storing
    /// it again would let it be minted twice.
    #[error("quote {quote_id} was created at {created_at}, before {horizon}: past the store's retention window")]
    BeyondRetention {
        quote_id: Uuid,
        created_at: u64,
        horizon: u64,
    },
    #[error("quote {quote_id} has unit {found}; this mint issues {expected}")]
    WrongUnit {
        quote_id: Uuid,
        found: String,
        expected: String,
    },
    /// The epoch's update arrived before all of its creates: retry it later.
    #[error("epoch {epoch}: {held_quotes} of {quotes} quotes ({held_work} of {work} work) stored so far")]
    EpochIncomplete {
        epoch: u64,
        held_quotes: u64,
        held_work: u64,
        quotes: u64,
        work: u64,
    },
    /// The store holds more of the epoch than the pool says it credited: pay nothing.
    #[error("epoch {epoch}: the store holds {held_quotes} quotes with {held_work} work, more than the {quotes} quotes with {work} work the update names")]
    EpochMismatch {
        epoch: u64,
        held_quotes: u64,
        held_work: u64,
        quotes: u64,
        work: u64,
    },
    #[error("epoch {epoch}'s index entry {entry:?} is not a quote id with its work")]
    CorruptEpochIndex { epoch: u64, entry: String },
    #[error("epoch {epoch}'s payout cannot be split: {source}")]
    Split {
        epoch: u64,
        #[source]
        source: ehash::PayoutError,
    },
    #[error("epoch {epoch}'s release is refused: {source}")]
    Custody {
        epoch: u64,
        #[source]
        source: crate::lightning::ledger::CustodyError,
    },
    #[error("mint store: {0}")]
    Store(#[from] StoreError),
    #[error("mint: {0}")]
    Mint(#[from] cdk::Error),
}

impl QuoteBookError {
    /// Whether trying the same message again later can succeed (store trouble, or an update that
    /// overtook its create), as opposed to a message that is wrong for this mint.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            QuoteBookError::WrongUnit { .. }
                | QuoteBookError::BeyondRetention { .. }
                | QuoteBookError::EpochMismatch { .. }
                | QuoteBookError::CorruptEpochIndex { .. }
                | QuoteBookError::Split { .. }
                | QuoteBookError::Custody {
                    source: CustodyError::NotReceived { .. }
                        | CustodyError::ExceedsPayment { .. }
                        | CustodyError::AlreadyReleased { .. },
                    ..
                }
        )
    }

    /// Whether this is a message waiting for creates that have not arrived (yet).
    pub fn awaits_creates(&self) -> bool {
        matches!(
            self,
            QuoteBookError::UnknownQuote(_) | QuoteBookError::EpochIncomplete { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyStored,
}

/// A page of a key's quotes, see [`QuoteBook::quotes_for_key_page`].
#[derive(Debug)]
pub struct QuotePage {
    pub quotes: Vec<MintQuote>,
    /// The last id of this page when more follow.
    pub next: Option<String>,
}

#[derive(Clone)]
pub struct QuoteBook {
    mint: Arc<Mint>,
    method: PaymentMethod,
    /// When set, an epoch is released only against a payout this mint's node received.
    custody: Option<PayoutLedger>,
    /// Writes batches with its own SQL instead of cdk's row-at-a-time API, when set.
    batch_writer: Option<BatchWriter>,
    /// When set, issued quotes are pruned after a while, and creates older than that refused.
    retention: Option<Retention>,
}

/// The mint's own writer of batches, for the store cdk is on.
#[derive(Clone)]
enum BatchWriter {
    Postgres(Arc<PostgresBatchWriter>),
    Sqlite(Arc<SqliteBatchWriter>),
}

/// The cdk unit of a create's unit, `hash` (ehash) or `sat` (payout epochs).
fn cdk_unit(create: &CreateQuote) -> Result<CurrencyUnit, QuoteBookError> {
    match create.unit.as_str() {
        ehash::UNIT => Ok(CurrencyUnit::custom(ehash::UNIT)),
        ehash::EPOCH_UNIT => Ok(CurrencyUnit::Sat),
        other => Err(QuoteBookError::WrongUnit {
            quote_id: create.quote_id,
            found: other.to_owned(),
            expected: format!("{} or {}", ehash::UNIT, ehash::EPOCH_UNIT),
        }),
    }
}

/// Refuses to store a create made before `horizon` (see [`Retention`]).
fn within_retention(create: &CreateQuote, horizon: Option<u64>) -> Result<(), QuoteBookError> {
    match horizon {
        Some(horizon) if create.created_at < horizon => Err(QuoteBookError::BeyondRetention {
            quote_id: create.quote_id,
            created_at: create.created_at,
            horizon,
        }),
        _ => Ok(()),
    }
}

/// An entry of our indexes in cdk's key-value store.
struct IndexEntry {
    namespace: &'static str,
    secondary: String,
    key: String,
    value: [u8; 8],
}

/// A create's entries in our indexes: by locking key (for the lookup, valued by creation time),
/// and by epoch for a sat quote (what the epoch's payout is split over, valued by its work).
/// Every way of writing a create writes these.
fn index_entries(create: &CreateQuote, unit: &CurrencyUnit) -> impl Iterator<Item = IndexEntry> {
    let by_key = IndexEntry {
        namespace: KEY_INDEX_NAMESPACE,
        secondary: create.locking_pubkey.to_string(),
        key: create.quote_id.to_string(),
        value: create.created_at.to_be_bytes(),
    };
    let by_epoch = (*unit == CurrencyUnit::Sat).then(|| IndexEntry {
        namespace: EPOCH_INDEX_NAMESPACE,
        secondary: create.epoch.to_string(),
        key: create.quote_id.to_string(),
        value: create.amount.to_be_bytes(),
    });
    std::iter::once(by_key).chain(by_epoch)
}

/// Adds a create's quote to our indexes, through cdk.
async fn write_indexes(
    tx: &mut DynMintTransaction,
    create: &CreateQuote,
    unit: &CurrencyUnit,
) -> Result<(), StoreError> {
    for entry in index_entries(create, unit) {
        tx.kv_write(entry.namespace, &entry.secondary, &entry.key, &entry.value)
            .await?;
    }
    Ok(())
}

/// The id of the payment an update records on a quote. It is derived from the quote (and
/// epoch), so the store records it once however often the update is delivered.
fn payment_id(quote_id: Uuid, epoch: Option<u64>) -> String {
    match epoch {
        None => format!("ehash-{quote_id}"),
        Some(epoch) => format!("epoch-{epoch}-{quote_id}"),
    }
}

/// The epoch of a payment an epoch release recorded (see [`payment_id`]).
fn epoch_of_payment(payment_id: &str) -> Option<u64> {
    payment_id
        .strip_prefix("epoch-")?
        .split_once('-')?
        .0
        .parse()
        .ok()
}

/// The payment an update records on a quote, as cdk takes it.
fn ehash_payment(
    quote: &MintQuote,
    quote_id: Uuid,
    epoch: Option<u64>,
    amount: Amount<CurrencyUnit>,
) -> WaitPaymentResponse {
    WaitPaymentResponse {
        payment_identifier: quote.request_lookup_id.clone(),
        payment_amount: amount,
        payment_id: payment_id(quote_id, epoch),
    }
}

impl QuoteBook {
    pub fn new(mint: Arc<Mint>) -> Self {
        Self {
            mint,
            method: PaymentMethod::Custom(ehash::PAYMENT_METHOD.to_owned()),
            custody: None,
            batch_writer: None,
            retention: None,
        }
    }

    /// Refuses creates older than `retention`'s window, whose quotes it may have pruned.
    pub fn with_retention(mut self, retention: Option<Retention>) -> Self {
        self.retention = retention;
        self
    }

    /// Creates made before this are refused (see [`Retention`]); none when every quote is kept.
    fn refuse_created_before(&self) -> Option<u64> {
        self.retention
            .map(|retention| retention.refuse_created_before(cdk::util::unix_time()))
    }

    /// The set-based writer batches go through, on PostgreSQL.
    pub fn postgres_writer(&self) -> Option<&PostgresBatchWriter> {
        match &self.batch_writer {
            Some(BatchWriter::Postgres(writer)) => Some(writer),
            _ => None,
        }
    }

    /// Writes batches through `writer` (the store must be the PostgreSQL it connects to).
    pub fn with_postgres_writer(mut self, writer: PostgresBatchWriter) -> Self {
        self.batch_writer = Some(BatchWriter::Postgres(Arc::new(writer)));
        self
    }

    /// Whether batches go through the mint's own writer rather than cdk's store API.
    pub fn has_batch_writer(&self) -> bool {
        self.batch_writer.is_some()
    }

    /// The writer batches go through, on SQLite.
    pub fn sqlite_writer(&self) -> Option<&SqliteBatchWriter> {
        match &self.batch_writer {
            Some(BatchWriter::Sqlite(writer)) => Some(writer),
            _ => None,
        }
    }

    /// Writes batches through `writer` (the store must be the SQLite file it opened).
    pub fn with_sqlite_writer(mut self, writer: SqliteBatchWriter) -> Self {
        self.batch_writer = Some(BatchWriter::Sqlite(Arc::new(writer)));
        self
    }

    /// Releases epochs only against payouts `ledger` records as received.
    pub fn with_custody(mut self, ledger: PayoutLedger) -> Self {
        self.custody = Some(ledger);
        self
    }

    pub fn mint(&self) -> &Arc<Mint> {
        &self.mint
    }

    /// Stores the quote UNPAID; a quote already stored under that id is left as it is.
    #[tracing::instrument(skip_all, fields(quote_id = %create.quote_id))]
    pub async fn create(&self, create: &CreateQuote) -> Result<Created, QuoteBookError> {
        let unit = cdk_unit(create)?;
        let id = QuoteId::from(create.quote_id);
        let store = self.mint.localstore();
        if store.get_mint_quote(&id).await?.is_some() {
            return Ok(Created::AlreadyStored);
        }
        within_retention(create, self.refuse_created_before())?;

        let quote = self.unpaid_quote(create, id, unit.clone());
        let notice = MintQuoteCustomResponse::<QuoteId>::try_from(quote.clone());
        let mut tx = store.begin_transaction().await?;
        match tx.add_mint_quote(quote).await {
            Ok(_) => {}
            // Another consumer stored it between our lookup and this insert.
            Err(StoreError::Duplicate) => {
                tx.rollback().await?;
                return Ok(Created::AlreadyStored);
            }
            Err(error) => {
                tx.rollback().await?;
                return Err(error.into());
            }
        }
        write_indexes(&mut tx, create, &unit).await?;
        tx.commit().await?;
        self.notify_created(notice);
        tracing::debug!(amount = create.amount, "quote stored UNPAID");
        Ok(Created::New)
    }

    /// The cdk quote for a create: UNPAID, locked to the miner's key (NUT-20). An ehash quote is
    /// for the share's credited work; an epoch quote's amount is its share of a payout that has
    /// not landed yet, so it has none until then.
    fn unpaid_quote(&self, create: &CreateQuote, id: QuoteId, unit: CurrencyUnit) -> MintQuote {
        // The key as parsed already: parsing its bytes again (a square root on the curve) cost
        // as much as the rest of the quote.
        let pubkey = PublicKey::from(*create.locking_pubkey.public_key());
        let zero = Amount::new(0, unit.clone());
        let amount = (unit != CurrencyUnit::Sat).then(|| Amount::new(create.amount, unit.clone()));
        MintQuote::new(
            Some(id.clone()),
            format!("ehash:{}", create.share_hash),
            unit,
            amount,
            create.created_at.saturating_add(QUOTE_EXPIRY_SECS),
            PaymentIdentifier::QuoteId(id),
            Some(pubkey),
            zero.clone(),
            zero,
            self.method.clone(),
            create.created_at,
            create.created_at,
            Vec::new(),
            Vec::new(),
            None,
        )
    }

    /// NUT-17: a wallet subscribed to this quote id sees it appear UNPAID (cdk publishes the
    /// later changes: PAID on our update, ISSUED on its mint).
    fn notify_created(
        &self,
        notice: Result<MintQuoteCustomResponse<QuoteId>, impl std::fmt::Display>,
    ) {
        match notice {
            Ok(response) => {
                self.mint
                    .pubsub_manager()
                    .publish(NotificationPayload::CustomMintQuoteResponse(
                        self.method.to_string(),
                        response,
                    ))
            }
            Err(error) => tracing::warn!(%error, "cannot notify subscribers of the new quote"),
        }
    }

    /// Marks the named quotes PAID and returns how many were not PAID before. Applying the same
    /// update twice changes nothing.
    pub async fn release(&self, update: &UpdateQuote) -> Result<usize, QuoteBookError> {
        let mut newly_paid = 0;
        match &update.release {
            Release::Quotes(ids) => newly_paid = self.pay_quotes(ids).await?,
            Release::Epoch(release) => {
                let split = self.epoch_split(release).await?;
                if let Some(ledger) = &self.custody {
                    ledger
                        .admit(release)
                        .await
                        .map_err(|source| QuoteBookError::Custody {
                            epoch: release.epoch,
                            source,
                        })?;
                }
                for (id, amount) in split {
                    let amount = Amount::new(amount, CurrencyUnit::Sat);
                    newly_paid += usize::from(
                        self.pay(id, Some(release.epoch), |_| Some(amount.clone()))
                            .await?,
                    );
                }
            }
        }
        Ok(newly_paid)
    }

    /// Marks ehash quotes PAID for their created amounts, one transaction each; returns how many
    /// were not PAID before.
    async fn pay_quotes(&self, ids: &[Uuid]) -> Result<usize, QuoteBookError> {
        let mut newly_paid = 0;
        for id in ids {
            newly_paid += usize::from(self.pay(*id, None, |quote| quote.amount.clone()).await?);
        }
        Ok(newly_paid)
    }

    /// Each of the epoch's quotes with its share of the payout, once the store holds exactly
    /// the quotes and work the update names. The split is deterministic, so a redelivered
    /// update, or one applied again after a crash part-way, pays every quote the same amount.
    async fn epoch_split(
        &self,
        release: &EpochRelease,
    ) -> Result<Vec<(Uuid, u64)>, QuoteBookError> {
        let epoch = release.epoch;
        let store = self.mint.localstore();
        let ids = store
            .kv_list(EPOCH_INDEX_NAMESPACE, &epoch.to_string())
            .await?;
        let mut work = Vec::with_capacity(ids.len());
        for id in ids {
            let value = store
                .kv_read(EPOCH_INDEX_NAMESPACE, &epoch.to_string(), &id)
                .await?
                .unwrap_or_default();
            let (Ok(quote_id), Ok(bytes)) = (Uuid::parse_str(&id), <[u8; 8]>::try_from(value))
            else {
                // Only `create` writes this index: anything else in it is a damaged store, which
                // waiting cannot mend.
                return Err(QuoteBookError::CorruptEpochIndex { epoch, entry: id });
            };
            work.push((quote_id, u64::from_be_bytes(bytes)));
        }
        let held_quotes = work.len() as u64;
        let held_work: u64 = work.iter().map(|&(_, w)| w).sum();
        let (quotes, total) = (release.quotes, release.total_work);
        if held_quotes > quotes || held_work > total {
            return Err(QuoteBookError::EpochMismatch {
                epoch,
                held_quotes,
                held_work,
                quotes,
                work: total,
            });
        }
        if held_quotes < quotes || held_work < total {
            return Err(QuoteBookError::EpochIncomplete {
                epoch,
                held_quotes,
                held_work,
                quotes,
                work: total,
            });
        }
        let amounts = ehash::split_payout(release.payout, &work)
            .map_err(|source| QuoteBookError::Split { epoch, source })?;
        Ok(amounts.into_iter().collect())
    }

    #[tracing::instrument(skip_all, fields(quote_id = %quote_id))]
    async fn pay(
        &self,
        quote_id: Uuid,
        epoch: Option<u64>,
        amount_of: impl FnOnce(&MintQuote) -> Option<Amount<CurrencyUnit>>,
    ) -> Result<bool, QuoteBookError> {
        let id = QuoteId::from(quote_id);
        let mut tx = self.mint.localstore().begin_transaction().await?;
        let Some(mut quote) = tx.get_mint_quote(&id).await? else {
            tx.rollback().await?;
            return Err(QuoteBookError::UnknownQuote(quote_id));
        };
        let Some(amount) = amount_of(&quote).filter(|amount| amount.value() > 0) else {
            // An epoch share of zero: nothing to pay.
            tx.rollback().await?;
            return Ok(false);
        };
        let payment = ehash_payment(&quote, quote_id, epoch, amount);
        let newly_paid = self
            .mint
            .pay_mint_quote(&mut tx, &mut quote, payment)
            .await?;
        tx.commit().await?;
        if newly_paid {
            self.mint
                .pubsub_manager()
                .mint_quote_payment(&quote, quote.amount_paid());
            tracing::debug!("quote PAID");
        }
        Ok(newly_paid)
    }

    /// One page of the quotes locked to `key`, in quote-id order: at most `limit` quotes whose id
    /// sorts after `after`, and the id to continue after when more follow.
    ///
    /// cdk's key-value store lists a namespace's keys sorted but whole, so each page lists the
    /// key's ids (36 bytes each: under 1 MB for 20,000 quotes) and loads only its own quotes.
    pub async fn quotes_for_key_page(
        &self,
        key: &LockingPubkey,
        after: Option<&str>,
        limit: usize,
    ) -> Result<QuotePage, QuoteBookError> {
        let store = self.mint.localstore();
        let mut ids = store.kv_list(KEY_INDEX_NAMESPACE, &key.to_string()).await?;
        // Sorted here, byte-wise, rather than trusting the database's collation (PostgreSQL's
        // may not be byte order), so `after` means the same on every store.
        ids.sort_unstable();
        let start = match after {
            Some(after) => ids.partition_point(|id| id.as_str() <= after),
            None => 0,
        };
        let end = start.saturating_add(limit.max(1)).min(ids.len());
        let page: Vec<QuoteId> = ids[start..end]
            .iter()
            .filter_map(|id| id.parse::<Uuid>().ok().map(QuoteId::from))
            .collect();
        let quotes = store
            .get_mint_quotes_by_ids(&page)
            .await?
            .into_iter()
            .flatten()
            .collect();
        Ok(QuotePage {
            quotes,
            next: (end < ids.len()).then(|| ids[end - 1].clone()),
        })
    }

    /// The quotes locked to `key`, oldest first.
    pub async fn quotes_for_key(
        &self,
        key: &LockingPubkey,
    ) -> Result<Vec<MintQuote>, QuoteBookError> {
        let store = self.mint.localstore();
        let ids: Vec<QuoteId> = store
            .kv_list(KEY_INDEX_NAMESPACE, &key.to_string())
            .await?
            .iter()
            .filter_map(|id| id.parse::<Uuid>().ok().map(QuoteId::from))
            .collect();
        let mut quotes: Vec<MintQuote> = store
            .get_mint_quotes_by_ids(&ids)
            .await?
            .into_iter()
            .flatten()
            .collect();
        quotes.sort_by_key(|quote| quote.created_time);
        Ok(quotes)
    }
}
