//! What the pool counts, for `/metrics` (Prometheus text, `hashpool_pool_…`) and `/stats` (JSON).

mod miners;
mod quotes;
pub mod rate;
mod rejections;
mod upstream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

pub use miners::MinerStats;
pub use upstream::{UpstreamMetrics, UpstreamStats};

use crate::dashboard::book::Now;
use crate::dashboard::Dashboard;
use crate::publisher::PublisherMetrics;
use miners::{miner_stats, MinerCollector};
use quotes::QuoteCollector;
use rejections::Rejections;

#[derive(Debug, Default)]
pub struct PoolMetrics {
    /// Miner connections open now.
    pub connections: Gauge<u64, AtomicU64>,
    pub connections_total: Counter,
    /// Mining channels open now.
    pub channels: Gauge<u64, AtomicU64>,
    pub shares_accepted: Counter,
    pub blocks_found: Counter,
    pub blocks_rejected: Counter,
    /// Valid blocks that lost the race for their height.
    pub blocks_stale: Counter,
    /// Block candidates not submitted: their previous block was no longer bitcoind's tip.
    pub blocks_skipped_stale: Counter,
    /// Block candidates dropped because the submission queue was full.
    pub blocks_dropped: Counter,
    /// Work credited to miners, in units of `hash`.
    pub work_credited: Counter,
    /// Proxy mode only.
    pub upstream: UpstreamMetrics,
    rejected: Arc<Rejections>,
}

#[derive(Debug, Serialize)]
pub struct PoolStats {
    pub connections: u64,
    pub channels: u64,
    pub shares_accepted: u64,
    pub shares_rejected: BTreeMap<String, u64>,
    pub work_credited: u64,
    pub blocks_found: u64,
    pub quotes_published: u64,
    pub quotes_buffered: u64,
    pub quotes_dropped: u64,
    pub redis_up: bool,
    /// Proxy mode: the upstream connection and the shares forwarded on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamStats>,
    pub miners: Vec<MinerStats>,
}

impl PoolMetrics {
    pub fn share_rejected(&self, reason: &str) {
        self.rejected.record(reason);
    }

    /// A share accepted and credited `work` units. Each key's work is counted by the dashboard's
    /// book, which `/stats` and `/metrics` read per miner.
    pub fn share_accepted(&self, work: u64) {
        self.shares_accepted.inc();
        self.work_credited.inc_by(work);
    }

    /// `/stats`: these counters, the quote publisher's and each miner's line from `dashboard`.
    pub fn stats(&self, quotes: &PublisherMetrics, dashboard: &Dashboard) -> PoolStats {
        PoolStats {
            connections: self.connections.get(),
            channels: self.channels.get(),
            shares_accepted: self.shares_accepted.get(),
            shares_rejected: self.rejected.by_reason(),
            work_credited: self.work_credited.get(),
            blocks_found: self.blocks_found.get(),
            quotes_published: quotes.published.load(Ordering::Relaxed),
            quotes_buffered: quotes.buffered(),
            quotes_dropped: quotes.overflowed.load(Ordering::Relaxed),
            redis_up: quotes.redis_up.load(Ordering::Relaxed),
            upstream: (self.upstream.sessions.get() > 0).then(|| self.upstream.stats()),
            miners: dashboard.read(|book| miner_stats(book, Now::current())),
        }
    }

    /// A registry exporting these metrics, the quote publisher's and each miner's from the
    /// dashboard's book (it shares their values, not a copy).
    pub fn registry(&self, quotes: Arc<PublisherMetrics>, dashboard: Arc<Dashboard>) -> Registry {
        let mut registry = hashpool_service::metrics::registry("pool");
        let gauges = [
            (
                "connections_open",
                "Open miner connections",
                &self.connections,
            ),
            ("channels_open", "Open mining channels", &self.channels),
        ];
        for (name, help, gauge) in gauges {
            registry.register(name, help, gauge.clone());
        }
        let counters = [
            ("connections", "Miner connections accepted", &self.connections_total),
            ("shares_accepted", "Shares accepted", &self.shares_accepted),
            (
                "work_credited_hash_units",
                "Work credited to miners, in the ecash unit hash (2^12 expected hashes)",
                &self.work_credited,
            ),
            ("blocks_found", "Blocks found and accepted by bitcoind", &self.blocks_found),
            ("blocks_rejected", "Blocks found but refused by bitcoind", &self.blocks_rejected),
            (
                "blocks_stale",
                "Blocks found valid but not on the best chain (another block at the height came first)",
                &self.blocks_stale,
            ),
            (
                "blocks_skipped_stale",
                "Block candidates not submitted: their previous block was no longer the tip",
                &self.blocks_skipped_stale,
            ),
            (
                "blocks_dropped",
                "Block candidates dropped because the submission queue was full",
                &self.blocks_dropped,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        self.upstream.register(&mut registry);
        registry.register_collector(Box::new(QuoteCollector(quotes)));
        registry.register_collector(Box::new(self.rejected.clone()));
        registry.register_collector(Box::new(MinerCollector(dashboard)));
        registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::book::{Book, CountedShare};

    fn scrape(
        metrics: &PoolMetrics,
        quotes: Arc<PublisherMetrics>,
        dashboard: Arc<Dashboard>,
    ) -> String {
        hashpool_service::metrics::encode(&metrics.registry(quotes, dashboard)).unwrap()
    }

    /// A dashboard whose book counted `shares` (locking key, credited work, proven hashes), as
    /// the pool counts an accepted share into both.
    fn counted(metrics: &PoolMetrics, shares: &[(&str, u64, u128)]) -> Arc<Dashboard> {
        let mut book = Book::default();
        for &(key, work, proven_hashes) in shares {
            metrics.share_accepted(work);
            let share = CountedShare {
                work,
                proven_hashes,
                difficulty: 1.0,
                epoch: None,
            };
            book.count(key, "rig", share, Now::current());
        }
        Arc::new(Dashboard::restored(book, Vec::new()))
    }

    #[test]
    fn exports_counts_under_their_names() {
        let metrics = PoolMetrics::default();
        let quotes = Arc::new(PublisherMetrics::default());
        metrics.connections.inc();
        metrics.connections_total.inc();
        metrics.connections_total.inc();
        metrics.blocks_found.inc();
        metrics.share_rejected("stale-share");
        metrics.share_rejected("stale-share");
        quotes.published.store(5, Ordering::Relaxed);
        quotes.redis_up.store(true, Ordering::Relaxed);
        let text = scrape(&metrics, quotes, counted(&metrics, &[]));
        for line in [
            "# TYPE hashpool_pool_connections_open gauge\n",
            "hashpool_pool_connections_open 1\n",
            "# TYPE hashpool_pool_connections_total counter\n",
            "hashpool_pool_connections_total 2\n",
            "hashpool_pool_blocks_found_total 1\n",
            "hashpool_pool_blocks_stale_total 0\n",
            "hashpool_pool_shares_rejected_total{reason=\"stale-share\"} 2\n",
            "hashpool_pool_quotes_published_total 5\n",
            "hashpool_pool_quotes_buffered 0\n",
            "hashpool_pool_redis_up 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn stats_and_metrics_agree_on_each_miners_work() {
        let metrics = PoolMetrics::default();
        let quotes = Arc::new(PublisherMetrics::default());
        let dashboard = counted(
            &metrics,
            &[
                ("02aa", 16, 16 << 12),
                ("02aa", 16, 16 << 12),
                ("02bb", 1, 1 << 12),
            ],
        );
        dashboard.upstream_answer("02aa", true);
        dashboard.upstream_answer("02aa", false);
        let stats = metrics.stats(&quotes, &dashboard);
        assert_eq!(stats.shares_accepted, 3);
        assert_eq!(stats.work_credited, 33);
        let aa = &stats.miners[0];
        assert_eq!(
            (aa.locking_key.as_str(), aa.shares, aa.work),
            ("02aa", 2, 32)
        );
        assert_eq!(aa.credited_hashes, 32 << 12);
        assert_eq!(aa.proven_hashes, 32 << 12);
        assert_eq!((aa.upstream_accepted, aa.upstream_rejected), (1, 1));
        let text = scrape(&metrics, quotes, dashboard);
        for line in [
            "hashpool_pool_shares_accepted_total 3\n",
            "hashpool_pool_work_credited_hash_units_total 33\n",
            "hashpool_pool_miner_credited_hashes_total{locking_key=\"02aa\"} 131072\n",
            "hashpool_pool_miner_proven_hashes_total{locking_key=\"02aa\"} 131072\n",
            "hashpool_pool_miner_proven_hashes_total{locking_key=\"02bb\"} 4096\n",
            "# TYPE hashpool_pool_miner_hashrate_hashes_per_second gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
    }

    #[test]
    fn hash_totals_beyond_u64_are_exported_as_floats() {
        let metrics = PoolMetrics::default();
        let dashboard = counted(&metrics, &[("02aa", 1, 1 << 70)]);
        let text = scrape(&metrics, Arc::new(PublisherMetrics::default()), dashboard);
        let value: f64 = text
            .lines()
            .find_map(|line| {
                line.strip_prefix("hashpool_pool_miner_proven_hashes_total{locking_key=\"02aa\"} ")
            })
            .expect("the miner's proven hashes")
            .parse()
            .unwrap();
        assert_eq!(value, (1u128 << 70) as f64);
    }
}
