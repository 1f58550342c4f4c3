//! The quote stream's messages as the mint reads them (`QuoteMessage::from_json`), the miner
//! identity every channel is opened with, and the payout callback's body and signature check.
//!
//! Whatever the input: no panic, and what decodes re-encodes to itself, so the pool and the mint
//! can never disagree about a message both accept.

use ehash::callback::{self, PayoutNotice};
use ehash::{MinerIdentity, QuoteLookupRequest, QuoteMessage};

pub fn check(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(message) = QuoteMessage::from_json(text) {
        let again = QuoteMessage::from_json(&message.to_json())
            .expect("a message the mint accepted re-encodes to one it accepts");
        assert_eq!(again, message);
    }
    if let Ok(identity) = text.parse::<MinerIdentity>() {
        let again: MinerIdentity = identity
            .to_string()
            .parse()
            .expect("an identity prints as one that parses");
        assert_eq!(again, identity);
    }
    if let Ok(notice) = serde_json::from_str::<PayoutNotice>(text) {
        let json = serde_json::to_string(&notice).expect("a notice serializes");
        assert_eq!(
            serde_json::from_str::<PayoutNotice>(&json).ok(),
            Some(notice)
        );
    }
    let _ = serde_json::from_str::<QuoteLookupRequest>(text);
    // The callback's headers are free text from the network: the input's first two lines are
    // the timestamp and signature headers, the rest the body.
    let mut parts = text.splitn(3, '\n');
    let (timestamp, signature, body) = (parts.next(), parts.next(), parts.next());
    let _ = callback::verify(
        b"fuzz secret",
        timestamp,
        signature,
        body.unwrap_or("").as_bytes(),
        1_764_000_000,
    );
}
