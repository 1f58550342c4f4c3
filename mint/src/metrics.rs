//! Counters the mint exposes on `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MintMetrics {
    /// Well-formed quote messages read from the stream (redeliveries included).
    pub messages: AtomicU64,
    pub quotes_created: AtomicU64,
    /// `create` messages for quotes already stored: redeliveries, made harmless.
    pub quotes_redelivered: AtomicU64,
    pub updates_applied: AtomicU64,
    /// Quotes that became PAID (each counted once, however often its update arrives).
    pub quotes_paid: AtomicU64,
    /// Successful `POST /v1/mint/ehash` and `/v1/mint/ehash/batch` requests: quotes issued.
    pub mint_requests: AtomicU64,
    /// Stream entries the group has not read yet, as of the last check.
    pub stream_lag: AtomicU64,
    /// Entries read but not acknowledged yet, as of the last check.
    pub stream_pending: AtomicU64,
    pub dead_letters: AtomicU64,
    /// Attempts left pending to be tried again (store trouble, update before create).
    pub retries: AtomicU64,
    /// Entries taken over from consumers that stopped without acknowledging.
    pub claimed: AtomicU64,
    pub redis_errors: AtomicU64,
    http_responses: Mutex<BTreeMap<u16, u64>>,
}

impl MintMetrics {
    pub fn record_http_status(&self, status: u16) {
        *self
            .http_responses
            .lock()
            .expect("metrics lock is never poisoned")
            .entry(status)
            .or_default() += 1;
    }

    pub fn http_responses(&self, status: u16) -> u64 {
        self.http_responses
            .lock()
            .expect("metrics lock is never poisoned")
            .get(&status)
            .copied()
            .unwrap_or(0)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "hashpool_mint_stream_messages_total",
                "Well-formed quote messages read from the stream.",
                &self.messages,
            ),
            (
                "hashpool_mint_quotes_created_total",
                "Quotes stored from create messages.",
                &self.quotes_created,
            ),
            (
                "hashpool_mint_quotes_redelivered_total",
                "Create messages for quotes already stored.",
                &self.quotes_redelivered,
            ),
            (
                "hashpool_mint_updates_applied_total",
                "Update messages applied (quotes released).",
                &self.updates_applied,
            ),
            (
                "hashpool_mint_quotes_paid_total",
                "Quotes that became PAID.",
                &self.quotes_paid,
            ),
            (
                "hashpool_mint_mint_requests_total",
                "Successful mint requests (quotes issued).",
                &self.mint_requests,
            ),
            (
                "hashpool_mint_dead_letters_total",
                "Messages moved to the dead-letter stream.",
                &self.dead_letters,
            ),
            (
                "hashpool_mint_retries_total",
                "Message attempts left pending to retry.",
                &self.retries,
            ),
            (
                "hashpool_mint_claimed_total",
                "Entries claimed from stopped consumers.",
                &self.claimed,
            ),
            (
                "hashpool_mint_redis_errors_total",
                "Redis errors while consuming.",
                &self.redis_errors,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in [
            (
                "hashpool_mint_stream_lag",
                "Stream entries not yet read by the group.",
                &self.stream_lag,
            ),
            (
                "hashpool_mint_stream_pending",
                "Entries read but not yet acknowledged.",
                &self.stream_pending,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let name = "hashpool_mint_http_responses_total";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP responses by status code.\n# TYPE {name} counter"
        );
        for (status, count) in self
            .http_responses
            .lock()
            .expect("metrics lock is never poisoned")
            .iter()
        {
            let _ = writeln!(out, "{name}{{status=\"{status}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_statuses() {
        let metrics = MintMetrics::default();
        metrics.quotes_created.fetch_add(3, Ordering::Relaxed);
        metrics.record_http_status(200);
        metrics.record_http_status(400);
        metrics.record_http_status(200);
        let text = metrics.render();
        assert!(text.contains("hashpool_mint_quotes_created_total 3\n"));
        assert!(text.contains("hashpool_mint_http_responses_total{status=\"200\"} 2\n"));
        assert!(text.contains("hashpool_mint_http_responses_total{status=\"400\"} 1\n"));
        assert_eq!(metrics.http_responses(404), 0);
    }
}
