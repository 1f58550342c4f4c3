//! The per-miner lines of `/stats` and `/metrics`, read from the dashboard's book: one record
//! of each locking key's work, counted once per share, kept across restarts and forgotten after
//! a week idle (`dashboard::book::RETENTION_SECS`).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;

use crate::dashboard::book::{Book, Now};
use crate::dashboard::Dashboard;

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
    /// Proven hashes per second over the last ten minutes (since the first share or the pool's
    /// start, when sooner).
    pub hashrate: f64,
    /// Proxy mode: this miner's shares the upstream accepted and rejected.
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
}

/// Every key in the book, in key order.
pub fn miner_stats(book: &Book, now: Now) -> Vec<MinerStats> {
    book.keys
        .iter()
        .map(|(key, entry)| {
            let totals = &entry.activity.totals;
            MinerStats {
                locking_key: key.clone(),
                shares: totals.shares,
                work: totals.work,
                credited_hashes: u128::from(totals.work) << ehash::HASHES_PER_UNIT_LOG2,
                proven_hashes: totals.proven_hashes,
                hashrate: entry.activity.hashrate_10m(now),
                upstream_accepted: totals.upstream_accepted,
                upstream_rejected: totals.upstream_rejected,
            }
        })
        .collect()
}

/// Exports the book's keys at each scrape: the hashrate is a function of the time of the scrape,
/// and the hash totals are `u128`, which no prometheus-client counter holds.
pub struct MinerCollector(pub Arc<Dashboard>);

/// The registry wants its collectors `Debug`; the book is read at each scrape, not printed.
impl std::fmt::Debug for MinerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MinerCollector")
    }
}

impl Collector for MinerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Now::current();
        let miners = self.0.read(|book| miner_stats(book, now));
        let mut family = encoder.encode_descriptor(
            "miner_hashrate_hashes_per_second",
            "Estimated hashrate per locking key (proven hashes over the last 10 minutes).",
            None,
            ConstGauge::new(0.0f64).metric_type(),
        )?;
        for miner in &miners {
            ConstGauge::new(miner.hashrate).encode(family.encode_family(&key_label(miner))?)?;
        }
        for (name, help, hashes) in [
            (
                "miner_credited_hashes",
                "Expected hashes credited per locking key (credited units * 2^12).",
                (|miner: &MinerStats| miner.credited_hashes) as fn(&MinerStats) -> u128,
            ),
            (
                "miner_proven_hashes",
                "Expected hashes proven per locking key (sum of 2^256/(target+1) over accepted shares).",
                |miner: &MinerStats| miner.proven_hashes,
            ),
        ] {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for miner in &miners {
                encode_hashes(hashes(miner), family.encode_family(&key_label(miner))?)?;
            }
        }
        Ok(())
    }
}

fn key_label(miner: &MinerStats) -> [(&'static str, &str); 1] {
    [("locking_key", miner.locking_key.as_str())]
}

/// Exact while the total fits a `u64` (and so reads the same as `/stats`), a float beyond: the
/// precision Prometheus keeps anyway.
fn encode_hashes(hashes: u128, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    match u64::try_from(hashes) {
        Ok(exact) => ConstCounter::new(exact).encode(encoder),
        Err(_) => ConstCounter::new(hashes as f64).encode(encoder),
    }
}
