//! Counters for `/metrics` (Prometheus text format), served on the metrics address.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct TranslatorMetrics {
    /// Sv1 connections open now.
    pub downstreams_connected: AtomicU64,
    pub downstreams_total: AtomicU64,
    /// Sv1 connections closed for bad input (malformed JSON, oversize line, ...).
    pub downstreams_dropped: AtomicU64,
    /// Upstream channels open now (one per authorized miner while the pool is reachable).
    pub channels_open: AtomicU64,
    /// 1 while the Sv2 connection to the pool is set up, else 0.
    pub upstream_connected: AtomicU64,
    /// Connections made to the pool after the first.
    pub upstream_reconnects: AtomicU64,
    /// Shares answered to Sv1 miners, by result ("accepted", or the rejection reason).
    shares: Mutex<BTreeMap<String, u64>>,
}

impl TranslatorMetrics {
    /// One channel fewer; never below zero (a gauge reset on reconnect may race a close).
    pub fn channel_closed(&self) {
        let _ = self
            .channels_open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |open| {
                Some(open.saturating_sub(1))
            });
    }

    pub fn share(&self, result: &str) {
        let mut shares = self.shares.lock().expect("metrics lock");
        *shares.entry(result.to_owned()).or_default() += 1;
    }

    pub fn shares(&self, result: &str) -> u64 {
        self.shares
            .lock()
            .expect("metrics lock")
            .get(result)
            .copied()
            .unwrap_or_default()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        gauge(
            &mut out,
            "translator_downstreams_connected",
            "Sv1 miners connected now.",
            "gauge",
            load(&self.downstreams_connected),
        );
        gauge(
            &mut out,
            "translator_downstreams_total",
            "Sv1 connections accepted.",
            "counter",
            load(&self.downstreams_total),
        );
        gauge(
            &mut out,
            "translator_downstreams_dropped_total",
            "Sv1 connections closed for bad input.",
            "counter",
            load(&self.downstreams_dropped),
        );
        gauge(
            &mut out,
            "translator_channels_open",
            "Upstream Sv2 channels open now (one per authorized miner).",
            "gauge",
            load(&self.channels_open),
        );
        gauge(
            &mut out,
            "translator_upstream_connected",
            "1 while the Sv2 connection to the pool is up.",
            "gauge",
            load(&self.upstream_connected),
        );
        gauge(
            &mut out,
            "translator_upstream_reconnects_total",
            "Reconnections to the pool after the first connection.",
            "counter",
            load(&self.upstream_reconnects),
        );
        let _ = writeln!(
            out,
            "# HELP translator_shares_total Sv1 shares answered, by result.\n# TYPE translator_shares_total counter"
        );
        for (result, count) in self.shares.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "translator_shares_total{{result=\"{}\"}} {count}",
                result.replace(['"', '\\', '\n'], "_")
            );
        }
        out
    }
}

/// Serves `GET /metrics` until shutdown.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<TranslatorMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { metrics.render() }
        }),
    );
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "metrics server failed");
    }
}

/// Binds the metrics listener; split from [`serve`] so start-up reports a taken port.
pub async fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(address).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = TranslatorMetrics::default();
        metrics.downstreams_connected.store(2, Ordering::Relaxed);
        metrics.share("accepted");
        metrics.share("accepted");
        metrics.share("stale-share");
        let text = metrics.render();
        assert!(
            text.contains("translator_downstreams_connected 2"),
            "{text}"
        );
        assert!(text.contains("translator_shares_total{result=\"accepted\"} 2"));
        assert!(text.contains("translator_shares_total{result=\"stale-share\"} 1"));
        assert!(text.contains("translator_upstream_connected 0"));
    }
}
