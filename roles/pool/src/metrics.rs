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
    /// Block candidates not submitted: their previous block was no longer bitcoind's tip.
    pub blocks_skipped_stale: AtomicU64,
    /// Block candidates dropped because the submission queue was full.
    pub blocks_dropped: AtomicU64,
    pub work_credited: AtomicU64,
    rejected: Mutex<BTreeMap<String, u64>>,
    miners: Mutex<BTreeMap<String, MinerWork>>,
}

#[derive(Debug, Default)]
struct MinerWork {
    /// (time, expected hashes) of recent shares.
    recent: std::collections::VecDeque<(Instant, u128)>,
    shares: u64,
    work: u64,
    proven_hashes: u128,
}

#[derive(Debug, Serialize)]
pub struct MinerStats {
    pub locking_key: String,
    pub shares: u64,
    /// Credited work, in units of `hash`.
    pub work: u64,
    /// The credited work in expected hashes: `work * 2^12`.
    pub credited_hashes: u128,
    /// The expected hashes the accepted shares prove, summed from their targets
    /// (`2^256 / (target + 1)` each), independently of the credit.
    pub proven_hashes: u128,
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

    /// A share accepted for `locking_key`, credited `work` units and proving `proven_hashes`.
    pub fn share_accepted(&self, locking_key: &str, work: u64, proven_hashes: u128) {
        self.shares_accepted.fetch_add(1, Ordering::Relaxed);
        self.work_credited.fetch_add(work, Ordering::Relaxed);
        let now = Instant::now();
        let mut miners = self.miners.lock().expect("metrics lock");
        let miner = miners.entry(locking_key.to_owned()).or_default();
        miner.shares += 1;
        miner.work = miner.work.saturating_add(work);
        miner.proven_hashes = miner.proven_hashes.saturating_add(proven_hashes);
        miner.recent.push_back((now, proven_hashes));
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
                let window_hashes: f64 = miner
                    .recent
                    .iter()
                    .filter(|(at, _)| now.duration_since(*at).as_secs_f64() <= HASHRATE_WINDOW_SECS)
                    .map(|(_, hashes)| *hashes as f64)
                    .sum();
                MinerStats {
                    locking_key: key.clone(),
                    shares: miner.shares,
                    work: miner.work,
                    credited_hashes: u128::from(miner.work) << ehash::HASHES_PER_UNIT_LOG2,
                    proven_hashes: miner.proven_hashes,
                    hashrate: window_hashes / HASHRATE_WINDOW_SECS,
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
            "Work credited to miners, in units of hash (2^12 expected hashes).",
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
            "hashpool_pool_blocks_skipped_stale_total",
            "counter",
            "Block candidates not submitted: their previous block was no longer the tip.",
            self.blocks_skipped_stale
                .load(Ordering::Relaxed)
                .to_string(),
        );
        metric(
            "hashpool_pool_blocks_dropped_total",
            "counter",
            "Block candidates dropped because the submission queue was full.",
            self.blocks_dropped.load(Ordering::Relaxed).to_string(),
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
        for (name, help, value) in [
            (
                "hashpool_pool_miner_credited_hashes_total",
                "Expected hashes credited per locking key (credited units * 2^12).",
                (|miner: &MinerStats| miner.credited_hashes) as fn(&MinerStats) -> u128,
            ),
            (
                "hashpool_pool_miner_proven_hashes_total",
                "Expected hashes proven per locking key (sum of 2^256/(target+1) over accepted shares).",
                |miner: &MinerStats| miner.proven_hashes,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for miner in &stats.miners {
                let _ = writeln!(
                    out,
                    "{name}{{locking_key=\"{}\"}} {}",
                    miner.locking_key,
                    value(miner)
                );
            }
        }
        out
    }
}
