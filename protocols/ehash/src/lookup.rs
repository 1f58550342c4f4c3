//! How a wallet proves it holds a locking key when it asks the mint for that key's quotes.
//!
//! The wallet signs [`lookup_message`] for its key and the current Unix time with BIP340 Schnorr
//! over SHA-256 (the same scheme as NUT-20's mint signatures) and sends
//! `{"pubkey", "timestamp", "signature"}`. The mint accepts a timestamp within
//! [`LOOKUP_FRESHNESS_SECS`] of its clock and each signature only once, so a captured request
//! cannot be replayed to list someone's quotes.
//!
//! The answer comes in pages of at most [`LOOKUP_PAGE_MAX`] quotes, in quote-id order: a wallet
//! with a backlog of any size reads it page by page, passing the previous answer's `next` as
//! `after` (each page with a fresh signature). A request without `after` gets the first page, so
//! a client that knows nothing of pages still works for keys with fewer quotes than a page.

use serde::{Deserialize, Serialize};

use crate::identity::LockingPubkey;

/// How far a lookup's timestamp may be from the mint's clock, either way.
pub const LOOKUP_FRESHNESS_SECS: u64 = 60;

/// The most quotes one lookup answer lists (and the page size when `limit` is absent): about
/// 200 KB of JSON, so neither side holds a key's whole backlog at once.
pub const LOOKUP_PAGE_MAX: usize = 1000;

/// Domain-separated text the wallet signs: `hashpool-quote-lookup-v1:<pubkey hex>:<unix secs>`.
pub fn lookup_message(pubkey: &LockingPubkey, timestamp: u64) -> String {
    format!("hashpool-quote-lookup-v1:{pubkey}:{timestamp}")
}

/// `POST /v1/ehash/quotes` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLookupRequest {
    /// The locking key, compressed, hex.
    pub pubkey: String,
    /// Unix time, seconds, when the wallet signed.
    pub timestamp: u64,
    /// BIP340 Schnorr signature, hex, of [`lookup_message`] for `pubkey` and `timestamp`.
    pub signature: String,
    /// List the quotes whose id sorts after this one (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Page size, at most [`LOOKUP_PAGE_MAX`] (also the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// A quote's state as NUT-04 names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QuoteState {
    /// Created by the pool; its share is not yet released for minting.
    Unpaid,
    /// Released: the key holder may mint it.
    Paid,
    /// Minted.
    Issued,
}

impl std::fmt::Display for QuoteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            QuoteState::Unpaid => "UNPAID",
            QuoteState::Paid => "PAID",
            QuoteState::Issued => "ISSUED",
        })
    }
}

/// One quote locked to the key, as the lookup lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteSummary {
    /// The quote id (what `GET /v1/mint/quote/ehash/{id}` and `POST /v1/mint/ehash` take).
    pub quote: String,
    pub state: QuoteState,
    pub unit: String,
    pub amount: u64,
    pub amount_paid: u64,
    pub amount_issued: u64,
    /// Unix seconds.
    pub created_at: u64,
}

impl QuoteSummary {
    /// What the key holder can mint now.
    pub fn mintable(&self) -> u64 {
        self.amount_paid.saturating_sub(self.amount_issued)
    }
}

/// `POST /v1/ehash/quotes` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteLookupResponse {
    pub pubkey: String,
    pub quotes: Vec<QuoteSummary>,
    /// Present when more quotes follow: send it as `after` to read the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_binds_key_and_time() {
        let key: LockingPubkey =
            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                .parse()
                .unwrap();
        assert_eq!(
            lookup_message(&key, 1_764_000_000),
            "hashpool-quote-lookup-v1:0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798:1764000000"
        );
        assert_ne!(lookup_message(&key, 1), lookup_message(&key, 2));
    }

    #[test]
    fn page_fields_are_optional_on_the_wire() {
        let old: QuoteLookupRequest =
            serde_json::from_str(r#"{"pubkey":"02","timestamp":1,"signature":"00"}"#).unwrap();
        assert_eq!((&old.after, old.limit), (&None, None));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"pubkey":"02","timestamp":1,"signature":"00"}"#
        );
        let last: QuoteLookupResponse =
            serde_json::from_str(r#"{"pubkey":"02","quotes":[]}"#).unwrap();
        assert_eq!(last.next, None);
    }

    #[test]
    fn states_use_the_nut04_names() {
        for (state, name) in [
            (QuoteState::Unpaid, "\"UNPAID\""),
            (QuoteState::Paid, "\"PAID\""),
            (QuoteState::Issued, "\"ISSUED\""),
        ] {
            assert_eq!(serde_json::to_string(&state).unwrap(), name);
            assert_eq!(format!("\"{state}\""), name);
        }
    }
}
