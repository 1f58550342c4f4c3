//! The contract between the hashpool pool and mint.
//!
//! The pool and the mint never call each other: the pool appends [`QuoteMessage`]s to a Redis
//! stream and the mint consumes them. Everything both sides must agree on lives here, and
//! nothing here does I/O:
//!
//! - the stream, its field and the consumer group ([`QUOTE_STREAM`], [`STREAM_FIELD`],
//!   [`MINT_CONSUMER_GROUP`]);
//! - the `create` and `update` messages, versioned JSON ([`message`]);
//! - the quote id, derived from the share hash so a re-sent share cannot make a second quote
//!   ([`quote_id_for_share`]);
//! - the unit (one `hash` is 2^12 expected hashes) and the amount a share earns: the work the
//!   pool asked for, exactly, never the luck of the hash ([`credited_work`], [`ShareWork`]);
//! - who gets paid: the miner's locking key parsed from the channel's `user_identity`
//!   ([`MinerIdentity`]);
//! - the two release policies and the pro-rata split of an epoch payout ([`policy`]);
//! - the message a wallet signs to list its quotes at the mint ([`lookup`]).

pub mod callback;
pub mod identity;
pub mod lookup;
pub mod message;
pub mod policy;
pub mod work;

pub use identity::{IdentityError, LockingPubkey, MinerIdentity};
pub use lookup::{
    lookup_message, QuoteLookupRequest, QuoteLookupResponse, QuoteState, QuoteSummary,
    LOOKUP_FRESHNESS_SECS,
};
pub use message::{
    AcceptedShare, CreateQuote, EpochRelease, MessageError, QuoteMessage, Release, UpdateQuote,
};
pub use policy::{split_payout, PayoutError, ReleasePolicy};
pub use work::{
    credited_work, expected_hashes, quote_id_for_share, ShareHash, ShareWork, HASHES_PER_UNIT_LOG2,
    QUOTE_ID_NAMESPACE,
};

/// Redis stream the pool appends quote messages to.
pub const QUOTE_STREAM: &str = "hashpool:quotes";

/// Consumer group the mint reads the quote stream with.
pub const MINT_CONSUMER_GROUP: &str = "mint";

/// The single field of each stream entry; its value is the message JSON.
pub const STREAM_FIELD: &str = "msg";

/// Cashu currency unit of ehash quotes and keysets: one `hash` is 2^12 expected hashes (see
/// [`work`]).
pub const UNIT: &str = "hash";

/// Cashu currency unit of payout-epoch quotes: their amount is their share of a payout that
/// landed in sats. (A create in this unit carries the share's work, in `hash` units, which the
/// split is pro-rata to.)
pub const EPOCH_UNIT: &str = "sat";

/// What the unit means, for the mint's NUT-06 description.
pub const UNIT_DESCRIPTION: &str = "Ecash for proof of work: one quote per accepted share. \
Unit hash: 1 hash = 4096 (2^12) expected hashes; a share at a target T earns 2^256/(T+1)/4096, \
exactly, as every share target is a power of two.";

/// Cashu payment method under which the mint serves ehash quotes (`/v1/mint/quote/ehash/...`).
pub const PAYMENT_METHOD: &str = "ehash";

/// Redis hash holding what the pool credited in a payout epoch on `quote_stream`: fields `work`
/// (units) and `quotes`. The pool's publisher updates it in the same transaction that appends
/// the epoch's creates, so it always matches exactly the creates on the stream.
pub fn epoch_totals_key(quote_stream: &str, epoch: u64) -> String {
    format!("{quote_stream}:epoch:{epoch}")
}

/// Stream where the mint parks messages it cannot process, with the reason.
pub fn dead_letter_stream(quote_stream: &str) -> String {
    format!("{quote_stream}:dead")
}
