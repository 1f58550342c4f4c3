//! What the translator counts, served on the metrics address as `/metrics` (`hashpool_translator_…`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct TranslatorMetrics {
    /// Sv1 connections open now.
    pub downstreams_connected: Gauge<u64, AtomicU64>,
    pub downstreams_total: Counter,
    /// Sv1 connections closed for bad input (malformed JSON, oversize line, ...).
    pub downstreams_dropped: Counter,
    /// Upstream channels open now (one per authorized miner while the pool is reachable).
    pub channels_open: Gauge<u64, AtomicU64>,
    /// 1 while the Sv2 connection to the pool is set up, else 0.
    pub upstream_connected: Gauge<u64, AtomicU64>,
    /// Connections made to the pool after the first.
    pub upstream_reconnects: Counter,
    /// Shares answered to Sv1 miners, by result: "accepted", or the rejection code. Not bounded
    /// here: the codes are the translator's own plus the error codes the (configured, trusted)
    /// pool sends back.
    shares: Family<ResultLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

impl TranslatorMetrics {
    /// One channel fewer; never below zero (a gauge reset on reconnect may race a close).
    pub fn channel_closed(&self) {
        let _ =
            self.channels_open
                .inner()
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                    Some(open.saturating_sub(1))
                });
    }

    pub fn share(&self, result: &str) {
        self.shares
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn shares(&self, result: &str) -> u64 {
        self.shares
            .get(&ResultLabel {
                result: result.to_owned(),
            })
            .map_or(0, |count| count.get())
    }

    /// A registry exporting these metrics (it shares their values, not a copy).
    pub fn registry(&self) -> Registry {
        let mut registry = hashpool_service::metrics::registry("translator");
        let gauges = [
            (
                "downstreams_connected",
                "Sv1 miners connected now",
                &self.downstreams_connected,
            ),
            (
                "channels_open",
                "Upstream Sv2 channels open now (one per authorized miner)",
                &self.channels_open,
            ),
            (
                "upstream_connected",
                "1 while the Sv2 connection to the pool is up",
                &self.upstream_connected,
            ),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let counters = [
            (
                "downstreams",
                "Sv1 connections accepted",
                &self.downstreams_total,
            ),
            (
                "downstreams_dropped",
                "Sv1 connections closed for bad input",
                &self.downstreams_dropped,
            ),
            (
                "upstream_reconnects",
                "Reconnections to the pool after the first connection",
                &self.upstream_reconnects,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "shares",
            "Sv1 shares answered, by result",
            self.shares.clone(),
        );
        registry
    }
}

/// Serves `GET /metrics` until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<TranslatorMetrics>,
    shutdown: watch::Receiver<bool>,
) {
    let app = hashpool_service::metrics::route(Arc::new(metrics.registry()));
    hashpool_service::metrics::serve(listener, app, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_gauges_counters_and_shares_by_result() {
        let metrics = TranslatorMetrics::default();
        metrics.downstreams_connected.set(2);
        metrics.downstreams_total.inc_by(3);
        metrics.share("accepted");
        metrics.share("accepted");
        metrics.share("stale-share");
        let text = hashpool_service::metrics::encode(&metrics.registry()).unwrap();
        for line in [
            "# TYPE hashpool_translator_downstreams_connected gauge\n",
            "hashpool_translator_downstreams_connected 2\n",
            "# TYPE hashpool_translator_downstreams_total counter\n",
            "hashpool_translator_downstreams_total 3\n",
            "hashpool_translator_downstreams_dropped_total 0\n",
            "hashpool_translator_upstream_connected 0\n",
            "hashpool_translator_shares_total{result=\"accepted\"} 2\n",
            "hashpool_translator_shares_total{result=\"stale-share\"} 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        assert_eq!(metrics.shares("accepted"), 2);
        assert_eq!(metrics.shares("job-not-found"), 0);
    }

    #[test]
    fn a_close_after_a_reset_leaves_the_channel_gauge_at_zero() {
        let metrics = TranslatorMetrics::default();
        metrics.channels_open.set(0);
        metrics.channel_closed();
        assert_eq!(metrics.channels_open.get(), 0);
    }

    #[test]
    fn result_labels_are_escaped() {
        let metrics = TranslatorMetrics::default();
        metrics.share("odd\"code");
        let text = hashpool_service::metrics::encode(&metrics.registry()).unwrap();
        assert!(
            text.contains("hashpool_translator_shares_total{result=\"odd\\\"code\"} 1\n"),
            "{text}"
        );
    }
}
