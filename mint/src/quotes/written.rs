//! What a set-based batch writer did, and how the mint reports and announces it.
//!
//! The PostgreSQL and SQLite writers write the same rows in their own SQL; what they did is
//! reported in one form, so they cannot differ in the results the consumer acknowledges on or in
//! the NUT-17 notifications wallets see.

use std::collections::HashMap;
use std::str::FromStr;

use cdk::mint::{MintQuote, QuoteId};
use cdk::nuts::{CurrencyUnit, MintQuoteCustomResponse, PublicKey};
use cdk::Amount;
use cdk_common::payment::PaymentIdentifier;
use uuid::Uuid;

use super::{Applied, BatchResults, Created, QuoteBook};

/// The columns a set-based writer writes or reads back, per table: each writer checks them at
/// start, so a cdk schema that differs sends batches through cdk's API instead.
pub(super) const WRITTEN_COLUMNS: [(&str, &[&str]); 3] = [
    (
        "mint_quote",
        &[
            "id",
            "amount",
            "unit",
            "request",
            "expiry",
            "request_lookup_id",
            "pubkey",
            "created_time",
            "updated_at",
            "last_checked",
            "payment_method",
            "request_lookup_id_kind",
            "extra_json",
            "amount_paid",
            "amount_issued",
        ],
    ),
    (
        "mint_quote_payments",
        &["quote_id", "payment_id", "amount", "timestamp"],
    ),
    (
        "kv_store",
        &[
            "primary_namespace",
            "secondary_namespace",
            "key",
            "value",
            "created_time",
            "updated_time",
        ],
    ),
];

/// A quote the batch's plan inserts.
pub(super) struct WrittenCreate {
    /// The message it came from.
    pub message: usize,
    /// The quote as the cdk path would have stored it.
    pub quote: MintQuote,
    /// Whether this batch inserted it (else another writer had).
    pub inserted: bool,
}

/// A committed batch: the plan's results, and what of its plan this batch did itself.
pub(super) struct Written {
    pub results: BatchResults,
    /// The quotes the plan inserts, in the plan's order.
    pub creates: Vec<WrittenCreate>,
    /// The payments the plan records: the update each came from, and whether this batch
    /// recorded it (else another writer had).
    pub payments: Vec<(usize, bool)>,
    /// The quotes this batch paid, as stored after its writes.
    pub paid_quotes: Vec<MintQuote>,
}

/// A paid quote's columns, as a writer reads them back once its payments are in.
pub(super) struct PaidRow {
    pub id: String,
    pub request: String,
    pub unit: String,
    pub amount: Option<i64>,
    pub expiry: i64,
    pub pubkey: Option<String>,
    pub created_time: i64,
    pub amount_paid: i64,
    pub amount_issued: i64,
    pub updated_at: i64,
}

impl PaidRow {
    /// The row of `quote` (whose key is stored as `pubkey`) inserted already paid
    /// `amount_paid` at `updated_at`: what reading it back would give.
    pub fn inserted(
        quote: &MintQuote,
        pubkey: Option<String>,
        amount_paid: i64,
        updated_at: i64,
    ) -> Self {
        Self {
            id: quote.id.to_string(),
            request: quote.request.clone(),
            unit: quote.unit.to_string(),
            amount: quote.amount.as_ref().map(|amount| amount.value() as i64),
            expiry: quote.expiry as i64,
            pubkey,
            created_time: quote.created_time as i64,
            amount_paid,
            amount_issued: 0,
            updated_at,
        }
    }
}

/// A quote's `updated_at` once a payment is recorded at `now`: bumped past its last value, as
/// cdk's `update_mint_quote` does. A writer inserting a quote already paid stores this.
pub(super) fn paid_updated_at(updated_at: u64, now: i64) -> i64 {
    now.max(updated_at as i64 + 1)
}

/// Locking keys by their hex, as quotes store them. Parsing a key is a square root on the curve,
/// which cost more than the rest of a paid quote's row; a batch's quotes were mostly created in
/// it, and a miner's quotes share a key.
#[derive(Default)]
pub(super) struct Pubkeys(HashMap<String, PublicKey>);

impl Pubkeys {
    /// Remembers `key`, stored as `hex`.
    pub fn remember(&mut self, hex: &str, key: PublicKey) {
        if !self.0.contains_key(hex) {
            self.0.insert(hex.to_owned(), key);
        }
    }

    /// The key stored as `hex`, if it is one.
    fn parse(&mut self, hex: String) -> Option<PublicKey> {
        if let Some(key) = self.0.get(&hex) {
            return Some(*key);
        }
        let key = PublicKey::from_hex(&hex).ok()?;
        self.0.insert(hex, key);
        Some(key)
    }
}

impl QuoteBook {
    /// The batch's results, less what other writers had already done; subscribers are told of
    /// what this batch did (after its commit: what they hear of is stored).
    pub(super) fn announce(&self, written: Written) -> BatchResults {
        let Written {
            mut results,
            creates,
            payments,
            paid_quotes,
        } = written;
        let mut created = Vec::with_capacity(creates.len());
        for create in creates {
            if create.inserted {
                created.push(MintQuoteCustomResponse::<QuoteId>::try_from(create.quote));
            } else {
                results[create.message] = Ok(Applied::Created(Created::AlreadyStored));
            }
        }
        let mut paid_by_message: HashMap<usize, usize> = HashMap::new();
        for (message, recorded) in payments {
            *paid_by_message.entry(message).or_default() += usize::from(recorded);
        }
        for (message, count) in paid_by_message {
            results[message] = Ok(Applied::Paid(count));
        }
        for notice in created {
            self.notify_created(notice);
        }
        self.notify_paid(&paid_quotes);
        results
    }

    /// A quote a batch paid, as NUT-17 subscribers are told of it: the quote as
    /// [`QuoteBook::unpaid_quote`] made it, with the amounts now stored.
    pub(super) fn paid_quote(&self, row: PaidRow, keys: &mut Pubkeys) -> Option<MintQuote> {
        let id = QuoteId::from(Uuid::parse_str(&row.id).ok()?);
        let unit = CurrencyUnit::from_str(&row.unit).ok()?;
        let amount = |value: i64| Amount::new(value as u64, unit.clone());
        let pubkey = match row.pubkey {
            Some(hex) => Some(keys.parse(hex)?),
            None => None,
        };
        Some(MintQuote::new(
            Some(id.clone()),
            row.request,
            unit.clone(),
            row.amount.map(amount),
            row.expiry as u64,
            PaymentIdentifier::QuoteId(id),
            pubkey,
            amount(row.amount_paid),
            amount(row.amount_issued),
            self.method.clone(),
            row.created_time as u64,
            row.updated_at as u64,
            Vec::new(),
            Vec::new(),
            None,
        ))
    }
}
