//! Splitting PAID quotes into NUT-29 batch requests the mint will take.
//!
//! Three limits bound a batch: the quotes the mint advertises per batch (NUT-29
//! `max_batch_size`), the outputs it signs per request (NUT-06 `max_array_length`) and the request
//! body it reads, which the mint does not advertise. The wallet sizes each batch by the request
//! it will actually send: per quote its id, its NUT-20 signature and its amount; per output a
//! blinded message, one for each power of two in the amount (cdk's default split on the `hash`
//! keyset, which has every power of two).

use cdk::nuts::MintInfo;
use ehash::QuoteSummary;

/// Request body the wallet stays under unless told otherwise: the hashpool mint's default
/// `max_body_bytes` (256 KiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 256 * 1024;

/// Quotes per batch when the mint advertises no NUT-29 size.
const DEFAULT_MAX_QUOTES: usize = 100;

/// Outputs per request when the mint advertises no `max_array_length` (cdk's default limit).
const DEFAULT_MAX_OUTPUTS: usize = 1000;

/// The JSON of one output at its largest:
/// `{"amount":9223372036854775808,"id":"<66 hex>","B_":"<66 hex>"},` is 179 bytes.
const OUTPUT_BYTES: usize = 180;

/// Per quote, besides its id and amount: `"<id>",` quotes and comma, `"<128 hex>",` for the
/// NUT-20 signature, a comma after the amount.
const QUOTE_OVERHEAD_BYTES: usize = 3 + 131 + 1;

/// The request's fixed part: field names and brackets (about 70 bytes), rounded up.
const REQUEST_BASE_BYTES: usize = 128;

/// What one batch request may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_quotes: usize,
    pub max_outputs: usize,
    pub max_bytes: usize,
}

impl BatchLimits {
    /// The mint's advertised limits (defaults where it says nothing) and a body budget.
    pub fn from_info(info: Option<&MintInfo>, max_bytes: usize) -> Self {
        let advertised = |value: Option<u64>| {
            value
                .and_then(|value| usize::try_from(value).ok())
                .filter(|value| *value > 0)
        };
        Self {
            max_quotes: advertised(info.and_then(|info| info.nuts.nut29.max_batch_size))
                .unwrap_or(DEFAULT_MAX_QUOTES),
            max_outputs: advertised(info.and_then(|info| info.max_array_length))
                .unwrap_or(DEFAULT_MAX_OUTPUTS),
            max_bytes,
        }
    }

    /// The same limits with at most `quotes` quotes per batch.
    pub fn with_max_quotes(self, quotes: usize) -> Self {
        Self {
            max_quotes: quotes.max(1),
            ..self
        }
    }
}

/// Outputs cdk makes for `amount` on a keyset of every power of two.
pub fn outputs_for(amount: u64) -> usize {
    amount.count_ones() as usize
}

/// Bytes `quote` adds to a batch request: its part of the quote lists and its outputs.
pub fn quote_bytes(quote: &QuoteSummary) -> usize {
    let amount = quote.mintable();
    quote.quote.len()
        + QUOTE_OVERHEAD_BYTES
        + amount.to_string().len()
        + outputs_for(amount) * OUTPUT_BYTES
}

/// Splits `quotes` (in order) into consecutive batches within `limits`. A quote too large for any
/// batch on its own still gets one, so the mint's refusal names the problem.
pub fn plan<'a>(
    quotes: &'a [&'a QuoteSummary],
    limits: BatchLimits,
) -> Vec<&'a [&'a QuoteSummary]> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < quotes.len() {
        let (mut end, mut outputs, mut bytes) = (start, 0, REQUEST_BASE_BYTES);
        while end < quotes.len() && end - start < limits.max_quotes {
            let quote = quotes[end];
            let more_outputs = outputs + outputs_for(quote.mintable());
            let more_bytes = bytes + quote_bytes(quote);
            if end > start && (more_outputs > limits.max_outputs || more_bytes > limits.max_bytes) {
                break;
            }
            (end, outputs, bytes) = (end + 1, more_outputs, more_bytes);
        }
        batches.push(&quotes[start..end]);
        start = end;
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use ehash::QuoteState;

    fn paid(amount: u64) -> QuoteSummary {
        QuoteSummary {
            quote: uuid_like(amount),
            state: QuoteState::Paid,
            unit: "hash".into(),
            amount,
            amount_paid: amount,
            amount_issued: 0,
            created_at: 0,
        }
    }

    fn uuid_like(seed: u64) -> String {
        format!("{:08x}-0000-5000-8000-{:012x}", seed as u32, seed)
    }

    #[test]
    fn batches_respect_every_limit_and_keep_every_quote_once() {
        let quotes: Vec<QuoteSummary> = (1..=2000).map(|i| paid(i * 37)).collect();
        let refs: Vec<&QuoteSummary> = quotes.iter().collect();
        let limits = BatchLimits {
            max_quotes: 300,
            max_outputs: 1000,
            max_bytes: 100_000,
        };
        let batches = plan(&refs, limits);
        let mut seen = 0;
        for batch in &batches {
            assert!(batch.len() <= 300);
            let outputs: usize = batch.iter().map(|q| outputs_for(q.mintable())).sum();
            assert!(outputs <= 1000, "{outputs}");
            let bytes: usize =
                REQUEST_BASE_BYTES + batch.iter().map(|q| quote_bytes(q)).sum::<usize>();
            assert!(bytes <= 100_000, "{bytes}");
            seen += batch.len();
        }
        assert_eq!(seen, 2000);
        assert!(batches.len() > 2000 / 300, "the byte limit binds here");
    }

    #[test]
    fn a_huge_quote_gets_a_batch_of_its_own() {
        let quotes = [paid(1), paid(u64::MAX), paid(2)];
        let refs: Vec<&QuoteSummary> = quotes.iter().collect();
        let limits = BatchLimits {
            max_quotes: 10,
            max_outputs: 10,
            max_bytes: 1_000_000,
        };
        let sizes: Vec<usize> = plan(&refs, limits).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
    }

    #[test]
    fn the_estimate_covers_what_cdk_sends() {
        // A real NUT-29 request as cdk serializes it, for one quote of a 20-bit amount.
        let quote = paid(0xF_FFFF);
        let key = cdk::nuts::SecretKey::generate();
        let keyset: cdk::nuts::Id =
            "01adc013fa9d85171586660abab27579888611659d357bc86bc09cb26eee8bc035"
                .parse()
                .unwrap();
        let outputs = (0..20)
            .map(|bit| {
                cdk::nuts::BlindedMessage::new(
                    cdk::Amount::from(1u64 << bit),
                    keyset,
                    key.public_key(),
                )
            })
            .collect();
        let request = cdk::nuts::BatchMintRequest {
            quotes: vec![quote.quote.clone()],
            quote_amounts: Some(vec![cdk::Amount::from(quote.amount)]),
            outputs,
            signatures: Some(vec![Some(key.sign(b"x").unwrap().to_string())]),
        };
        let sent = serde_json::to_string(&request).unwrap().len();
        let estimate = REQUEST_BASE_BYTES + quote_bytes(&quote);
        assert!(estimate >= sent, "{estimate} < {sent}");
        assert!(
            estimate < sent + sent / 5,
            "not wildly over: {estimate} vs {sent}"
        );
    }
}
