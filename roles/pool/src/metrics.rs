//! What the pool counts, for `/metrics` (Prometheus text) and `/stats` (JSON).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::publisher::PublisherMetrics;

/// Window over which a miner's hashrate is estimated from its credited work.
const HASHRATE_WINDOW_SECS: f64 = 600.0;

#[derive(Debug, Default)]
pub struct PoolMetrics {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub channels: AtomicU64,
    pub shares_accepted: AtomicU64,
    pub blocks_found: AtomicU64,
    pub blocks_rejected: AtomicU64,
    /// Valid blocks that lost the race for their height.
    pub blocks_stale: AtomicU64,
    pub work_credited: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    miners: Mutex<BTreeMap<String, MinerWork>>,
}

#[derive(Debug)]
struct MinerWork {
    /// (time, difficulty of the share's target) of recent shares: the expected hashes behind
    /// each, unlike credited work, which is at least 1 however easy the target.
    recent: std::collections::VecDeque<(Instant, f64)>,
    shares: u64,
    work: u64,
}

#[derive(Debug, Serialize)]
pub struct MinerStats {
    pub locking_key: String,
    pub shares: u64,
    pub work: u64,
    pub hashrate: f64,
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
    pub miners: Vec<MinerStats>,
}

impl PoolMetrics {
    pub fn share_rejected(&self, reason: &str) {
        *self
            .rejected
            .lock()
            .expect("metrics lock")
            .entry(reason.to_owned())
            .or_default() += 1;
    }

    pub fn share_accepted(&self, locking_key: &str, work: u64, difficulty: f64) {
        self.shares_accepted.fetch_add(1, Ordering::Relaxed);
        self.work_credited.fetch_add(work, Ordering::Relaxed);
        let now = Instant::now();
        let mut miners = self.miners.lock().expect("metrics lock");
        let miner = miners
            .entry(locking_key.to_owned())
            .or_insert_with(|| MinerWork {
                recent: Default::default(),
                shares: 0,
                work: 0,
            });
        miner.shares += 1;
        miner.work = miner.work.saturating_add(work);
        miner.recent.push_back((now, difficulty));
        while miner
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at).as_secs_f64() > HASHRATE_WINDOW_SECS)
        {
            miner.recent.pop_front();
        }
    }

    pub fn stats(&self, quotes: &PublisherMetrics) -> PoolStats {
        let now = Instant::now();
        let miners = self
            .miners
            .lock()
            .expect("metrics lock")
            .iter()
            .map(|(key, miner)| {
                let window_difficulty: f64 = miner
                    .recent
                    .iter()
                    .filter(|(at, _)| now.duration_since(*at).as_secs_f64() <= HASHRATE_WINDOW_SECS)
                    .map(|(_, difficulty)| *difficulty)
                    .sum();
                MinerStats {
                    locking_key: key.clone(),
                    shares: miner.shares,
                    work: miner.work,
                    // A share at difficulty d takes d * 2^32 hashes on average.
                    hashrate: window_difficulty * 4_294_967_296.0 / HASHRATE_WINDOW_SECS,
                }
            })
            .collect();
        PoolStats {
            connections: self.connections.load(Ordering::Relaxed),
            channels: self.channels.load(Ordering::Relaxed),
            shares_accepted: self.shares_accepted.load(Ordering::Relaxed),
            shares_rejected: self.rejected.lock().expect("metrics lock").clone(),
            work_credited: self.work_credited.load(Ordering::Relaxed),
            blocks_found: self.blocks_found.load(Ordering::Relaxed),
            quotes_published: quotes.published.load(Ordering::Relaxed),
            quotes_buffered: quotes.buffered(),
            quotes_dropped: quotes.overflowed.load(Ordering::Relaxed),
            redis_up: quotes.redis_up.load(Ordering::Relaxed),
            miners,
        }
    }

    pub fn render(&self, quotes: &Arc<PublisherMetrics>) -> String {
        let stats = self.stats(quotes);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        metric(
            "hashpool_pool_connections",
            "gauge",
            "Open miner connections.",
            stats.connections.to_string(),
        );
        metric(
            "hashpool_pool_connections_total",
            "counter",
            "Miner connections accepted.",
            self.connections_total.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "hashpool_pool_channels",
            "gauge",
            "Open mining channels.",
            stats.channels.to_string(),
        );
        metric(
            "hashpool_pool_shares_accepted_total",
            "counter",
            "Shares accepted.",
            stats.shares_accepted.to_string(),
        );
        metric(
            "hashpool_pool_work_credited_total",
            "counter",
            "Work credited to miners, difficulty-1 units.",
            stats.work_credited.to_string(),
        );
        metric(
            "hashpool_pool_blocks_found_total",
            "counter",
            "Blocks found and accepted by bitcoind.",
            stats.blocks_found.to_string(),
        );
        metric(
            "hashpool_pool_blocks_rejected_total",
            "counter",
            "Blocks found but refused by bitcoind.",
            self.blocks_rejected.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "hashpool_pool_blocks_stale_total",
            "counter",
            "Blocks found valid but not on the best chain (another block at the height came first).",
            self.blocks_stale.load(Ordering::Relaxed).to_string(),
        );
        metric(
            "hashpool_pool_quotes_published_total",
            "counter",
            "Quote messages appended to Redis.",
            stats.quotes_published.to_string(),
        );
        metric(
            "hashpool_pool_quotes_buffered",
            "gauge",
            "Quote messages waiting for Redis.",
            stats.quotes_buffered.to_string(),
        );
        metric(
            "hashpool_pool_quotes_dropped_total",
            "counter",
            "Quote messages dropped on buffer overflow.",
            stats.quotes_dropped.to_string(),
        );
        metric(
            "hashpool_pool_redis_up",
            "gauge",
            "1 while Redis accepts quote messages.",
            u8::from(stats.redis_up).to_string(),
        );
        let name = "hashpool_pool_shares_rejected_total";
        let _ = writeln!(
            out,
            "# HELP {name} Shares rejected, by Sv2 error code.\n# TYPE {name} counter"
        );
        for (reason, count) in &stats.shares_rejected {
            let _ = writeln!(out, "{name}{{reason=\"{reason}\"}} {count}");
        }
        let name = "hashpool_pool_miner_hashrate";
        let _ = writeln!(out, "# HELP {name} Estimated hashrate per locking key (H/s, 10 min window).\n# TYPE {name} gauge");
        for miner in &stats.miners {
            let _ = writeln!(
                out,
                "{name}{{locking_key=\"{}\"}} {}",
                miner.locking_key, miner.hashrate
            );
        }
        out
    }
}
