//! Work credited and proven per locking key: the per-miner lines of `/stats` and `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde::Serialize;

use super::rate::RateWindow;

/// A key with no share for this long is dropped from the book (and its `/metrics` series end).
pub const MINER_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the book looks for keys to drop.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Every locking key that had a share accepted in the last [`MINER_RETENTION`], with its work
/// since the pool started (or since the key came back after being dropped). Bounded by the keys
/// active in a day, not by every key ever seen: one entry and three `/metrics` series each.
#[derive(Debug, Default)]
pub struct MinerBook {
    miners: Mutex<Miners>,
}

#[derive(Debug, Default)]
struct Miners {
    by_key: BTreeMap<String, MinerWork>,
    last_pruned: Option<Instant>,
}

impl Miners {
    /// The key's entry, made if new; the book is pruned first when it is time.
    fn entry(&mut self, locking_key: &str, now: Instant) -> &mut MinerWork {
        if self
            .last_pruned
            .is_none_or(|at| now.duration_since(at) >= PRUNE_EVERY)
        {
            self.last_pruned = Some(now);
            self.by_key
                .retain(|_, miner| now.duration_since(miner.last_seen) < MINER_RETENTION);
        }
        self.by_key
            .entry(locking_key.to_owned())
            .or_insert_with(|| MinerWork::new(now))
    }
}

#[derive(Debug)]
struct MinerWork {
    last_seen: Instant,
    recent: RateWindow,
    shares: u64,
    work: u64,
    proven_hashes: u128,
    upstream_accepted: u64,
    upstream_rejected: u64,
}

impl MinerWork {
    fn new(now: Instant) -> Self {
        Self {
            last_seen: now,
            recent: RateWindow::default(),
            shares: 0,
            work: 0,
            proven_hashes: 0,
            upstream_accepted: 0,
            upstream_rejected: 0,
        }
    }
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
    /// Proven hashes per second over the last ten minutes.
    pub hashrate: f64,
    /// Proxy mode: this miner's shares the upstream accepted and rejected.
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
}

impl MinerBook {
    pub fn credit(&self, locking_key: &str, work: u64, proven_hashes: u128) {
        self.credit_at(locking_key, work, proven_hashes, Instant::now());
    }

    fn credit_at(&self, locking_key: &str, work: u64, proven_hashes: u128, now: Instant) {
        let mut miners = self.miners.lock().expect("metrics lock");
        let miner = miners.entry(locking_key, now);
        miner.last_seen = now;
        miner.shares += 1;
        miner.work = miner.work.saturating_add(work);
        miner.proven_hashes = miner.proven_hashes.saturating_add(proven_hashes);
        miner.recent.add(proven_hashes, now);
    }

    pub fn upstream_answer(&self, locking_key: &str, accepted: bool) {
        let mut miners = self.miners.lock().expect("metrics lock");
        let miner = miners.entry(locking_key, Instant::now());
        if accepted {
            miner.upstream_accepted += 1;
        } else {
            miner.upstream_rejected += 1;
        }
    }

    pub fn stats(&self) -> Vec<MinerStats> {
        self.stats_at(Instant::now())
    }

    fn stats_at(&self, now: Instant) -> Vec<MinerStats> {
        self.miners
            .lock()
            .expect("metrics lock")
            .by_key
            .iter()
            .map(|(key, miner)| miner.stats(key, now))
            .collect()
    }
}

impl MinerWork {
    fn stats(&self, locking_key: &str, now: Instant) -> MinerStats {
        MinerStats {
            locking_key: locking_key.to_owned(),
            shares: self.shares,
            work: self.work,
            credited_hashes: u128::from(self.work) << ehash::HASHES_PER_UNIT_LOG2,
            proven_hashes: self.proven_hashes,
            hashrate: self.recent.rate(now),
            upstream_accepted: self.upstream_accepted,
            upstream_rejected: self.upstream_rejected,
        }
    }
}

/// Exported from the book at each scrape: the hashrate is a function of the time of the scrape,
/// and the hash totals are `u128`, which no prometheus-client counter holds.
impl Collector for MinerBook {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let miners = self.stats();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_silent_for_a_day_is_dropped_and_an_active_one_kept() {
        let book = MinerBook::default();
        let start = Instant::now();
        book.credit_at("02aa", 1, 4096, start);
        book.credit_at("02bb", 1, 4096, start);
        // 02bb keeps mining; 02aa goes quiet.
        let later = start + MINER_RETENTION - Duration::from_secs(60);
        book.credit_at("02bb", 1, 4096, later);
        let keys = |book: &MinerBook| -> Vec<String> {
            book.stats()
                .into_iter()
                .map(|miner| miner.locking_key)
                .collect()
        };
        assert_eq!(keys(&book), ["02aa", "02bb"], "less than a day: both kept");
        book.credit_at(
            "02bb",
            1,
            4096,
            start + MINER_RETENTION + Duration::from_secs(60),
        );
        assert_eq!(keys(&book), ["02bb"]);
        assert_eq!(book.stats()[0].shares, 3, "the active key keeps its totals");
    }
}
