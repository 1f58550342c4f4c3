//! How many quotes one NUT-29 batch may hold, computed from the mint's own limits.
//!
//! A batch request carries, per quote, its id, its NUT-20 signature and its amount, plus one shared
//! list of outputs that cdk caps at [`MAX_OUTPUTS`]. The mint advertises the largest batch whose
//! worst case (the longest id, amount and signature, and a full output list of the largest
//! amounts) still fits in `max_body_bytes` with [`BODY_MARGIN_PERCENT`] to spare. The sizes are
//! measured by serializing real cashu types, not estimated, so they follow the wire format.

use cdk::nuts::{BatchMintRequest, BlindedMessage, Id, SecretKey};
use cdk::Amount;
use thiserror::Error;

/// Outputs (and inputs) one request may carry; given to cdk (`MintBuilder::with_limits`), which
/// refuses more with code 11015, and used here to size batches.
pub const MAX_OUTPUTS: usize = 1000;

/// Share of `max_body_bytes` kept free in a worst-case full batch, for what the measurement does
/// not see (a client's JSON spacing or field order).
pub const BODY_MARGIN_PERCENT: usize = 10;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LimitsError {
    #[error(
        "max_body_bytes = {max_body_bytes} cannot hold one quote with {MAX_OUTPUTS} outputs \
         ({needed} bytes with a {BODY_MARGIN_PERCENT}% margin); raise it"
    )]
    BodyTooSmall {
        max_body_bytes: usize,
        needed: usize,
    },
}

/// Serialized sizes of a batch request's parts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchWireSize {
    /// A request with one quote and one output.
    pub base: usize,
    /// Each further quote (id, signature and amount, with separators).
    pub per_quote: usize,
    /// Each further output.
    pub per_output: usize,
}

impl BatchWireSize {
    /// Measures the worst case for outputs of `keyset` (its id's length is what varies).
    pub fn measure(keyset: Id) -> Self {
        let one = worst_case_request(keyset, 1, 1).len();
        Self {
            base: one,
            per_quote: worst_case_request(keyset, 2, 1).len() - one,
            per_output: worst_case_request(keyset, 1, 2).len() - one,
        }
    }

    /// The body of a batch of `quotes` quotes and `outputs` outputs at their largest.
    pub fn body(&self, quotes: usize, outputs: usize) -> usize {
        self.base
            + quotes.saturating_sub(1) * self.per_quote
            + outputs.saturating_sub(1) * self.per_output
    }

    /// The most quotes a batch may hold so that any batch cdk would accept (at most
    /// [`MAX_OUTPUTS`] outputs, one at least per quote) fits in `max_body_bytes` with the margin.
    pub fn max_batch_size(&self, max_body_bytes: usize) -> Result<usize, LimitsError> {
        let budget = max_body_bytes / 100 * (100 - BODY_MARGIN_PERCENT);
        let full_outputs = self.body(1, MAX_OUTPUTS);
        if full_outputs > budget {
            return Err(LimitsError::BodyTooSmall {
                max_body_bytes,
                needed: full_outputs * 100 / (100 - BODY_MARGIN_PERCENT) + 1,
            });
        }
        let quotes = 1 + (budget - full_outputs) / self.per_quote;
        Ok(quotes.min(MAX_OUTPUTS))
    }
}

/// A batch request as a cdk wallet sends it, every variable field at its longest: UUID quote ids
/// (what the pool makes), `u64::MAX` amounts, 2^63 outputs, a BIP340 signature per quote.
pub fn worst_case_request(keyset: Id, quotes: usize, outputs: usize) -> String {
    let key = SecretKey::from_slice(&[7u8; 32]).expect("a valid secret key");
    let signature = key.sign(b"worst case").expect("signing works").to_string();
    let request = BatchMintRequest {
        quotes: (0..quotes)
            .map(|_| "ffffffff-ffff-5fff-bfff-ffffffffffff".to_owned())
            .collect(),
        quote_amounts: Some(vec![Amount::from(u64::MAX); quotes]),
        outputs: (0..outputs)
            .map(|_| BlindedMessage::new(Amount::from(1u64 << 63), keyset, key.public_key()))
            .collect(),
        signatures: Some(vec![Some(signature); quotes]),
    };
    serde_json::to_string(&request).expect("a batch request serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn keyset_v2() -> Id {
        // A version-2 keyset id (33 bytes), the longest form cdk issues.
        Id::from_str("01adc013fa9d85171586660abab27579888611659d357bc86bc09cb26eee8bc035").unwrap()
    }

    #[test]
    fn a_full_batch_of_the_advertised_size_fits_the_body_limit_with_margin() {
        let size = BatchWireSize::measure(keyset_v2());
        for max_body in [256 * 1024, 1024 * 1024, 4 * 1024 * 1024] {
            let quotes = size.max_batch_size(max_body).unwrap();
            let body = worst_case_request(keyset_v2(), quotes, MAX_OUTPUTS).len();
            assert!(
                body <= max_body / 100 * (100 - BODY_MARGIN_PERCENT),
                "{quotes} quotes: {body} bytes for a {max_body} byte limit"
            );
            assert_eq!(size.body(quotes, MAX_OUTPUTS), body, "sizes are linear");
            if quotes < MAX_OUTPUTS {
                let over = worst_case_request(keyset_v2(), quotes + 1, MAX_OUTPUTS).len();
                assert!(over > max_body / 100 * (100 - BODY_MARGIN_PERCENT));
            }
        }
        // 256 KiB, the shipped limit: a few hundred quotes, not cdk's default of 1000.
        let shipped = size.max_batch_size(256 * 1024).unwrap();
        assert!((100..1000).contains(&shipped), "{shipped}");
    }

    #[test]
    fn a_limit_too_small_for_one_full_request_is_refused() {
        let size = BatchWireSize::measure(keyset_v2());
        assert!(matches!(
            size.max_batch_size(16 * 1024),
            Err(LimitsError::BodyTooSmall { .. })
        ));
        let huge = size.max_batch_size(64 * 1024 * 1024).unwrap();
        assert_eq!(huge, MAX_OUTPUTS, "never more quotes than outputs");
    }
}
