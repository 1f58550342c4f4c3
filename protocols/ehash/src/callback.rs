//! The payout callback: "a payout of P msat landed" (for epoch E, or for the oldest closed
//! epoch not yet paid), sent to the pool by whatever receives its payouts.
//!
//! The request is authenticated with HMAC-SHA256 of `timestamp "." body` under a secret the
//! sender and the pool share, in [`SIGNATURE_HEADER`], and [`TIMESTAMP_HEADER`] holds the Unix
//! time it was signed. A request whose signature does not verify, or that is more than
//! [`MAX_CLOCK_SKEW_SECS`] from the pool's clock, is refused: a captured request cannot be altered
//! or replayed later. One replayed within the window changes nothing, as the pool releases each
//! payment id once.

use bitcoin::hashes::{sha256, Hash, HashEngine, Hmac, HmacEngine};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const TIMESTAMP_HEADER: &str = "x-hashpool-timestamp";
pub const SIGNATURE_HEADER: &str = "x-hashpool-signature";

/// How far a request's timestamp may be from the receiver's clock.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

/// The body of a payout callback (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PayoutNotice {
    /// The payment that landed (a Lightning payment hash): one payment releases one epoch.
    pub payment_id: String,
    pub amount_msat: u64,
    /// The epoch it pays; the oldest closed epoch not yet paid when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallbackAuthError {
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    #[error("the timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("the timestamp is {skew_secs} s from this clock, more than {MAX_CLOCK_SKEW_SECS} s")]
    Stale { skew_secs: u64 },
    #[error("the signature does not verify")]
    BadSignature,
}

/// The hex HMAC-SHA256 of `timestamp "." body` under `secret`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    hmac_sha256_hex(secret, &[timestamp.to_string().as_bytes(), b".", body])
}

fn hmac_sha256_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut engine = HmacEngine::<sha256::Hash>::new(secret);
    for part in parts {
        engine.input(part);
    }
    hex::encode(Hmac::<sha256::Hash>::from_engine(engine).to_byte_array())
}

/// Checks a request's headers against `body` at time `now` (Unix seconds).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), CallbackAuthError> {
    let timestamp = timestamp.ok_or(CallbackAuthError::MissingHeader(TIMESTAMP_HEADER))?;
    let signature = signature.ok_or(CallbackAuthError::MissingHeader(SIGNATURE_HEADER))?;
    let timestamp: u64 = timestamp
        .trim()
        .parse()
        .map_err(|_| CallbackAuthError::BadTimestamp)?;
    let skew_secs = now.abs_diff(timestamp);
    if skew_secs > MAX_CLOCK_SKEW_SECS {
        return Err(CallbackAuthError::Stale { skew_secs });
    }
    let expected = sign(secret, timestamp, body);
    if !constant_time_eq(expected.as_bytes(), signature.trim().as_bytes()) {
        return Err(CallbackAuthError::BadSignature);
    }
    Ok(())
}

/// Compares without stopping at the first difference, so timing does not reveal how much of a
/// guessed signature was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"shared secret";
    const NOW: u64 = 1_764_000_000;

    #[test]
    fn a_signed_request_verifies_within_the_window_only() {
        let body = br#"{"payment_id":"ab","amount_msat":5000}"#;
        let signature = sign(SECRET, NOW, body);
        let verify_at = |now| verify(SECRET, Some(&NOW.to_string()), Some(&signature), body, now);
        assert_eq!(verify_at(NOW), Ok(()));
        assert_eq!(verify_at(NOW + MAX_CLOCK_SKEW_SECS), Ok(()));
        assert_eq!(
            verify_at(NOW + MAX_CLOCK_SKEW_SECS + 1),
            Err(CallbackAuthError::Stale {
                skew_secs: MAX_CLOCK_SKEW_SECS + 1
            })
        );
        assert!(matches!(
            verify_at(NOW - MAX_CLOCK_SKEW_SECS - 1),
            Err(CallbackAuthError::Stale { .. })
        ));
    }

    #[test]
    fn anything_changed_fails_the_signature() {
        let body = br#"{"payment_id":"ab","amount_msat":5000}"#;
        let signature = sign(SECRET, NOW, body);
        let timestamp = NOW.to_string();
        let altered = br#"{"payment_id":"ab","amount_msat":5001}"#;
        assert_eq!(
            verify(SECRET, Some(&timestamp), Some(&signature), altered, NOW),
            Err(CallbackAuthError::BadSignature)
        );
        assert_eq!(
            verify(
                b"another secret",
                Some(&timestamp),
                Some(&signature),
                body,
                NOW
            ),
            Err(CallbackAuthError::BadSignature)
        );
        let later = (NOW + 1).to_string();
        assert_eq!(
            verify(SECRET, Some(&later), Some(&signature), body, NOW),
            Err(CallbackAuthError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, None, Some(&signature), body, NOW),
            Err(CallbackAuthError::MissingHeader(TIMESTAMP_HEADER))
        );
        assert_eq!(
            verify(SECRET, Some("soon"), Some(&signature), body, NOW),
            Err(CallbackAuthError::BadTimestamp)
        );
    }

    #[test]
    fn the_mac_is_standard_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            hmac_sha256_hex(b"Jefe", &[b"what do ya want ", b"for nothing?"]),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            sign(b"Jefe", 1, b"{}"),
            hmac_sha256_hex(b"Jefe", &[b"1.{}"])
        );
    }
}
