//! How a wallet proves it holds a locking key when it asks the mint for that key's quotes.
//!
//! The wallet signs [`lookup_message`] for its key and the current Unix time with BIP340 Schnorr
//! over SHA-256 (the same scheme as NUT-20's mint signatures) and sends
//! `{"pubkey", "timestamp", "signature"}`. The mint accepts a timestamp within
//! [`LOOKUP_FRESHNESS_SECS`] of its clock and each signature only once, so a captured request
//! cannot be replayed to list someone's quotes.

use crate::identity::LockingPubkey;

/// How far a lookup's timestamp may be from the mint's clock, either way.
pub const LOOKUP_FRESHNESS_SECS: u64 = 60;

/// Domain-separated text the wallet signs: `hashpool-quote-lookup-v1:<pubkey hex>:<unix secs>`.
pub fn lookup_message(pubkey: &LockingPubkey, timestamp: u64) -> String {
    format!("hashpool-quote-lookup-v1:{pubkey}:{timestamp}")
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
}
