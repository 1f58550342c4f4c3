//! Proxy mode: the upstream connection and the shares forwarded on it.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// 1 while an upstream channel is open.
    pub connected: Gauge,
    pub sessions: Counter,
    /// Shares submitted upstream.
    pub forwarded: Counter,
    pub accepted: Counter,
    pub rejected: Counter,
    /// Shares that met the upstream target but were not submitted: queue full, their upstream
    /// gone, or refused by the upstream channel's own checks (a stale upstream job).
    pub dropped: Counter,
    /// Shares credited here that do not meet the upstream's target (its difficulty is higher
    /// than the miner's, or, over Sv1, in the 1 in 65,536 between the two definitions of
    /// difficulty 1): not forwarded.
    pub below_target: Counter,
    failures: Family<[(&'static str, &'static str); 1], Counter>,
}

/// The upstream's line of `/stats`.
#[derive(Debug, Serialize)]
pub struct UpstreamStats {
    pub connected: bool,
    pub sessions: u64,
    pub forwarded: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub dropped: u64,
    pub below_target: u64,
}

impl UpstreamMetrics {
    /// A session that ended, by why (see `UpstreamError::kind`).
    pub fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn stats(&self) -> UpstreamStats {
        UpstreamStats {
            connected: self.connected.get() == 1,
            sessions: self.sessions.get(),
            forwarded: self.forwarded.get(),
            accepted: self.accepted.get(),
            rejected: self.rejected.get(),
            dropped: self.dropped.get(),
            below_target: self.below_target.get(),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "upstream_connected",
            "1 while the proxy's upstream channel is open",
            self.connected.clone(),
        );
        for (name, help, counter) in [
            (
                "upstream_sessions",
                "Upstream connections that opened a channel",
                &self.sessions,
            ),
            (
                "upstream_shares_forwarded",
                "Shares submitted upstream",
                &self.forwarded,
            ),
            (
                "upstream_shares_accepted",
                "Shares the upstream accepted",
                &self.accepted,
            ),
            (
                "upstream_shares_rejected",
                "Shares the upstream rejected",
                &self.rejected,
            ),
            (
                "upstream_shares_dropped",
                "Shares meeting the upstream target that were not submitted",
                &self.dropped,
            ),
            (
                "upstream_shares_below_target",
                "Shares credited here that do not meet the upstream's target",
                &self.below_target,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "upstream_failures",
            "Upstream sessions that ended, by reason",
            self.failures.clone(),
        );
    }
}
