//! What the mint counts, exposed on `/metrics` as `hashpool_mint_…`.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Default)]
pub struct MintMetrics {
    /// Well-formed quote messages read from the stream (redeliveries included).
    pub messages: Counter,
    pub quotes_created: Counter,
    /// `create` messages for quotes already stored: redeliveries, made harmless.
    pub quotes_redelivered: Counter,
    pub updates_applied: Counter,
    /// Quotes that became PAID (each counted once, however often its update arrives).
    pub quotes_paid: Counter,
    /// Store transactions that applied a run of stream messages together.
    pub batches: Counter,
    /// Runs that could not commit together and were applied one message at a time.
    pub batch_fallbacks: Counter,
    /// Successful `POST /v1/mint/ehash` and `/v1/mint/ehash/batch` requests: quotes issued.
    pub mint_requests: Counter,
    /// Stream entries the group has not read yet, as of the last check.
    pub stream_lag: Gauge<u64, AtomicU64>,
    /// Entries read but not acknowledged yet, as of the last check.
    pub stream_pending: Gauge<u64, AtomicU64>,
    pub dead_letters: Counter,
    /// Attempts left pending to be tried again (store trouble, update before create).
    pub retries: Counter,
    /// Entries taken over from consumers that stopped without acknowledging.
    pub claimed: Counter,
    /// Acknowledged entries deleted from the stream.
    pub stream_trimmed: Counter,
    /// Issued quotes deleted from the store past the retention window.
    pub quotes_pruned: Counter,
    pub redis_errors: Counter,
    /// One series per status code the mint answered; HTTP status codes are a small fixed set.
    http_responses: Family<StatusLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

impl MintMetrics {
    pub fn record_http_status(&self, status: u16) {
        self.http_responses
            .get_or_create(&StatusLabel { status })
            .inc();
    }

    pub fn http_responses(&self, status: u16) -> u64 {
        self.http_responses
            .get(&StatusLabel { status })
            .map_or(0, |count| count.get())
    }

    /// A registry exporting these metrics (it shares their values, not a copy).
    pub fn registry(&self) -> Registry {
        let mut registry = hashpool_service::metrics::registry("mint");
        self.register_counters(&mut registry);
        registry.register(
            "stream_lag_messages",
            "Stream messages not yet read by the consumer group",
            self.stream_lag.clone(),
        );
        registry.register(
            "stream_pending_messages",
            "Stream messages read but not yet acknowledged",
            self.stream_pending.clone(),
        );
        registry.register(
            "http_responses",
            "HTTP responses by status code",
            self.http_responses.clone(),
        );
        registry
    }

    fn register_counters(&self, registry: &mut Registry) {
        let counters = [
            (
                "stream_messages",
                "Well-formed quote messages read from the stream",
                &self.messages,
            ),
            (
                "quotes_created",
                "Quotes stored from create messages",
                &self.quotes_created,
            ),
            (
                "quotes_redelivered",
                "Create messages for quotes already stored",
                &self.quotes_redelivered,
            ),
            (
                "updates_applied",
                "Update messages applied (quotes released)",
                &self.updates_applied,
            ),
            ("quotes_paid", "Quotes that became PAID", &self.quotes_paid),
            (
                "store_batches",
                "Store transactions that applied a run of stream messages",
                &self.batches,
            ),
            (
                "store_batch_fallbacks",
                "Runs of stream messages applied one at a time after their batch failed",
                &self.batch_fallbacks,
            ),
            (
                "mint_requests",
                "Successful mint requests (quotes issued)",
                &self.mint_requests,
            ),
            (
                "dead_letters",
                "Messages moved to the dead-letter stream",
                &self.dead_letters,
            ),
            (
                "stream_trimmed",
                "Acknowledged stream entries deleted from the stream",
                &self.stream_trimmed,
            ),
            (
                "quotes_pruned",
                "Issued quotes deleted from the store past the retention window",
                &self.quotes_pruned,
            ),
            (
                "retries",
                "Message attempts left pending to retry",
                &self.retries,
            ),
            (
                "claimed",
                "Stream entries claimed from stopped consumers",
                &self.claimed,
            ),
            (
                "redis_errors",
                "Redis errors while consuming",
                &self.redis_errors,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_counters_gauges_and_statuses_under_their_names() {
        let metrics = MintMetrics::default();
        metrics.quotes_created.inc_by(3);
        metrics.stream_lag.set(7);
        metrics.record_http_status(200);
        metrics.record_http_status(400);
        metrics.record_http_status(200);
        let text = hashpool_service::metrics::encode(&metrics.registry()).unwrap();
        assert!(
            text.contains("hashpool_mint_quotes_created_total 3\n"),
            "{text}"
        );
        assert!(text.contains("hashpool_mint_stream_messages_total 0\n"));
        assert!(text.contains("# TYPE hashpool_mint_stream_lag_messages gauge\n"));
        assert!(text.contains("hashpool_mint_stream_lag_messages 7\n"));
        assert!(text.contains("hashpool_mint_http_responses_total{status=\"200\"} 2\n"));
        assert!(text.contains("hashpool_mint_http_responses_total{status=\"400\"} 1\n"));
        assert_eq!(metrics.http_responses(200), 2);
        assert_eq!(metrics.http_responses(404), 0);
    }
}
