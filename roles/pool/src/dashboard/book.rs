//! What the dashboard knows of the pool, each locking key and each of its workers: totals, a
//! day of hashrate history, open channels and (under payout epochs) each key's work per epoch.
//! Pure state: the history store persists what [`Book::take_changes`] hands it.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::series::{Series, SeriesChanges, BUCKET_SECS};
use crate::metrics::rate::{RateWindow, RATE_WINDOW};

/// A key or worker with no open channel and no share for this long is forgotten (here and, by
/// key expiry, in the store). A miner back after a week-long outage starts afresh.
pub const RETENTION_SECS: u64 = 7 * 24 * 3600;
/// Epochs remembered per key: enough to show the recent payouts a miner waits for.
pub const EPOCHS_PER_KEY: usize = 128;
/// The shortest span a hashrate is averaged over: a miner's first seconds give an estimate, not
/// the rate of two shares found a second apart.
pub const MIN_RATE_SPAN_SECS: u64 = 60;
/// How often the book looks for keys and workers to forget.
const PRUNE_EVERY_SECS: u64 = 60;

/// The two clocks the book reads: Unix time for what is kept and shown, a monotonic instant
/// for ten-minute rates.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub unix: u64,
    pub instant: Instant,
}

impl Now {
    pub fn current() -> Self {
        Self {
            unix: hashpool_service::unix_now(),
            instant: Instant::now(),
        }
    }
}

/// One accepted share as the dashboard counts it.
#[derive(Debug, Clone, Copy)]
pub struct CountedShare {
    /// Credited work, in units of the quote.
    pub work: u64,
    pub proven_hashes: u128,
    /// The share hash's difficulty (difficulty 1 = Bitcoin's `0xffff << 208` target).
    pub difficulty: f64,
    /// The payout epoch it was credited in, under payout epochs.
    pub epoch: Option<u64>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub shares: u64,
    pub work: u64,
    pub proven_hashes: u128,
    pub best_difficulty: f64,
    pub last_share: Option<u64>,
    /// When the first share was counted (kept across restarts): rates are averaged from here
    /// when it is later than the window's start.
    #[serde(default)]
    pub first_share: Option<u64>,
    /// Rejected shares by Sv2 error code (counted for the pool only).
    #[serde(default)]
    pub rejected: BTreeMap<String, u64>,
    /// Proxy mode: the shares forwarded upstream that the upstream accepted and rejected
    /// (counted for keys only; the pool's are in `/metrics`).
    #[serde(default)]
    pub upstream_accepted: u64,
    #[serde(default)]
    pub upstream_rejected: u64,
}

/// A key's quotes in one epoch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub quotes: u64,
    pub work: u64,
}

/// Totals, history and a ten-minute rate: what the pool, a key and a worker each have.
#[derive(Debug, Default)]
pub struct Activity {
    pub totals: Totals,
    pub series: Series,
    rate: RateWindow,
    /// When `rate` began counting: this process's start for a restored activity.
    rate_started: u64,
    /// The last share or channel event, for retention.
    last_active: u64,
    totals_changed: bool,
}

impl Activity {
    fn restored(saved: SavedScope, now: u64) -> Self {
        Self {
            last_active: saved.totals.last_share.unwrap_or(now),
            totals: saved.totals,
            series: Series::restored(saved.buckets, now),
            rate: RateWindow::default(),
            rate_started: now,
            totals_changed: false,
        }
    }

    fn count(&mut self, share: &CountedShare, now: Now) {
        let totals = &mut self.totals;
        totals.shares += 1;
        totals.work = totals.work.saturating_add(share.work);
        totals.proven_hashes = totals.proven_hashes.saturating_add(share.proven_hashes);
        totals.best_difficulty = totals.best_difficulty.max(share.difficulty);
        totals.last_share = Some(now.unix);
        totals.first_share.get_or_insert(now.unix);
        self.series.add(share.proven_hashes, now.unix);
        self.rate.add(share.proven_hashes, now.instant);
        self.last_active = now.unix;
        self.totals_changed = true;
    }

    /// Proven hashes per second over the last ten minutes.
    pub fn hashrate_10m(&self, now: Now) -> f64 {
        let window = RATE_WINDOW.as_secs();
        let from = now.unix.saturating_sub(window).max(self.rate_started);
        self.rate.hashes(now.instant) / self.span(window, from, now.unix)
    }

    /// Proven hashes per second over the last `window` seconds, from the day's buckets.
    pub fn hashrate_over(&self, window: u64, now: u64) -> f64 {
        let (hashes, from) = self.series.window(window, now);
        hashes / self.span(window, from, now)
    }

    /// (bucket start, hashes per second), oldest first: each bucket averaged over the part of it
    /// that has passed and followed the first share.
    pub fn bucket_rates(&self, now: u64) -> Vec<(u64, f64)> {
        self.series
            .buckets()
            .map(|(start, hashes)| {
                let end = now.min(start + BUCKET_SECS);
                let span = self.span(BUCKET_SECS, start, end);
                (start, hashes as f64 / span)
            })
            .collect()
    }

    /// The seconds a window's hashes were found in: from its start, or from the first share
    /// when that is later, between [`MIN_RATE_SPAN_SECS`] and the window.
    fn span(&self, window: u64, from: u64, now: u64) -> f64 {
        let from = from.max(self.totals.first_share.unwrap_or(from));
        now.saturating_sub(from)
            .clamp(MIN_RATE_SPAN_SECS, window.max(MIN_RATE_SPAN_SECS)) as f64
    }

    fn take_changes(&mut self, scope: Scope) -> Option<ScopeChanges> {
        if !self.totals_changed && !self.series.has_changes() {
            return None;
        }
        Some(ScopeChanges {
            scope,
            totals: std::mem::take(&mut self.totals_changed).then(|| self.totals.clone()),
            epochs: None,
            series: self.series.take_changes(),
            last_active: self.last_active,
        })
    }

    fn restore_changes(&mut self, changes: &mut ScopeChanges) {
        self.totals_changed |= changes.totals.is_some();
        self.series
            .restore_changes(std::mem::take(&mut changes.series));
    }
}

#[derive(Debug, Default)]
pub struct WorkerActivity {
    pub activity: Activity,
    pub open_channels: u32,
    /// When its oldest open channel opened.
    pub connected_since: Option<u64>,
}

#[derive(Debug, Default)]
pub struct KeyActivity {
    pub activity: Activity,
    pub workers: BTreeMap<String, WorkerActivity>,
    pub epochs: BTreeMap<u64, Tally>,
    epochs_changed: bool,
}

impl KeyActivity {
    pub fn open_channels(&self) -> u32 {
        self.workers
            .values()
            .map(|worker| worker.open_channels)
            .sum()
    }
}

/// Which totals and series a change or a saved record belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Pool,
    Key(String),
    Worker { key: String, name: String },
}

/// What the store must write for one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeChanges {
    pub scope: Scope,
    pub totals: Option<Totals>,
    pub epochs: Option<BTreeMap<u64, Tally>>,
    pub series: SeriesChanges,
    pub last_active: u64,
}

/// One scope as the store kept it.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedScope {
    pub scope: Scope,
    pub totals: Totals,
    pub epochs: BTreeMap<u64, Tally>,
    pub buckets: Vec<(u64, u128)>,
}

#[derive(Debug, Default)]
pub struct Book {
    pub pool: Activity,
    pub keys: BTreeMap<String, KeyActivity>,
    last_pruned: u64,
}

impl Book {
    /// The book as the store kept it at the last flush.
    pub fn restored(saved: Vec<SavedScope>, now: u64) -> Self {
        let mut book = Self::default();
        for scope in saved {
            match scope.scope.clone() {
                Scope::Pool => book.pool = Activity::restored(scope, now),
                Scope::Key(key) => {
                    let entry = book.keys.entry(key).or_default();
                    entry.epochs = scope.epochs.clone();
                    entry.activity = Activity::restored(scope, now);
                }
                Scope::Worker { key, name } => {
                    let worker = book.keys.entry(key).or_default().workers.entry(name);
                    worker.or_default().activity = Activity::restored(scope, now);
                }
            }
        }
        book
    }

    pub fn channel_opened(&mut self, key: &str, worker: &str, now: u64) {
        self.prune(now);
        let worker = self.worker(key, worker);
        worker.open_channels += 1;
        worker.connected_since.get_or_insert(now);
        worker.activity.last_active = now;
    }

    pub fn channel_closed(&mut self, key: &str, worker: &str, now: u64) {
        let worker = self.worker(key, worker);
        worker.open_channels = worker.open_channels.saturating_sub(1);
        if worker.open_channels == 0 {
            worker.connected_since = None;
        }
        worker.activity.last_active = now;
    }

    pub fn count(&mut self, key: &str, worker: &str, share: CountedShare, now: Now) {
        self.prune(now.unix);
        self.pool.count(&share, now);
        let entry = self.keys.entry(key.to_owned()).or_default();
        entry.activity.count(&share, now);
        if let Some(epoch) = share.epoch {
            let tally = entry.epochs.entry(epoch).or_default();
            tally.quotes += 1;
            tally.work = tally.work.saturating_add(share.work);
            while entry.epochs.len() > EPOCHS_PER_KEY {
                entry.epochs.pop_first();
            }
            entry.epochs_changed = true;
        }
        self.worker(key, worker).activity.count(&share, now);
    }

    pub fn reject(&mut self, code: &str) {
        *self
            .pool
            .totals
            .rejected
            .entry(code.to_owned())
            .or_default() += 1;
        self.pool.totals_changed = true;
    }

    /// The upstream's answer to a share `key` found. A key forgotten since (a week idle) is not
    /// brought back for it.
    pub fn upstream_answer(&mut self, key: &str, accepted: bool) {
        let Some(entry) = self.keys.get_mut(key) else {
            return;
        };
        let totals = &mut entry.activity.totals;
        if accepted {
            totals.upstream_accepted += 1;
        } else {
            totals.upstream_rejected += 1;
        }
        entry.activity.totals_changed = true;
    }

    fn worker(&mut self, key: &str, worker: &str) -> &mut WorkerActivity {
        self.keys
            .entry(key.to_owned())
            .or_default()
            .workers
            .entry(worker.to_owned())
            .or_default()
    }

    /// Forgets workers and keys idle for [`RETENTION_SECS`]; drops day-old buckets from every
    /// series, so an idle key's history empties as time passes.
    pub fn prune(&mut self, now: u64) {
        if now < self.last_pruned + PRUNE_EVERY_SECS {
            return;
        }
        self.last_pruned = now;
        let idle = |activity: &Activity| activity.last_active + RETENTION_SECS <= now;
        self.pool.series.expire(now);
        self.keys.retain(|_, key| {
            key.workers
                .retain(|_, worker| worker.open_channels > 0 || !idle(&worker.activity));
            key.activity.series.expire(now);
            for worker in key.workers.values_mut() {
                worker.activity.series.expire(now);
            }
            !key.workers.is_empty() || !idle(&key.activity)
        });
    }

    /// Everything changed since the last call, for the store; forgotten here until
    /// [`Book::restore_changes`] hands back what could not be written.
    pub fn take_changes(&mut self) -> Vec<ScopeChanges> {
        let mut changes: Vec<ScopeChanges> =
            self.pool.take_changes(Scope::Pool).into_iter().collect();
        for (key, entry) in &mut self.keys {
            let epochs = std::mem::take(&mut entry.epochs_changed).then(|| entry.epochs.clone());
            match (entry.activity.take_changes(Scope::Key(key.clone())), epochs) {
                (Some(mut change), epochs) => {
                    change.epochs = epochs;
                    changes.push(change);
                }
                (None, Some(epochs)) => changes.push(ScopeChanges {
                    scope: Scope::Key(key.clone()),
                    totals: None,
                    epochs: Some(epochs),
                    series: SeriesChanges::default(),
                    last_active: entry.activity.last_active,
                }),
                (None, None) => {}
            }
            for (name, worker) in &mut entry.workers {
                let scope = Scope::Worker {
                    key: key.clone(),
                    name: name.clone(),
                };
                changes.extend(worker.activity.take_changes(scope));
            }
        }
        changes
    }

    pub fn restore_changes(&mut self, changes: Vec<ScopeChanges>) {
        for mut change in changes {
            let activity = match &change.scope {
                Scope::Pool => Some(&mut self.pool),
                Scope::Key(key) => self.keys.get_mut(key).map(|entry| {
                    entry.epochs_changed |= change.epochs.is_some();
                    &mut entry.activity
                }),
                Scope::Worker { key, name } => self
                    .keys
                    .get_mut(key)
                    .and_then(|entry| entry.workers.get_mut(name))
                    .map(|worker| &mut worker.activity),
            };
            // A scope forgotten since: its store keys expire on their own.
            if let Some(activity) = activity {
                activity.restore_changes(&mut change);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const T0: u64 = 1_764_000_000;

    fn at(unix: u64, start: Instant) -> Now {
        Now {
            unix,
            instant: start + Duration::from_secs(unix - T0),
        }
    }

    fn share(work: u64, difficulty: f64, epoch: Option<u64>) -> CountedShare {
        CountedShare {
            work,
            proven_hashes: u128::from(work) << 12,
            difficulty,
            epoch,
        }
    }

    #[test]
    fn shares_count_for_the_pool_the_key_and_the_worker() {
        let start = Instant::now();
        let mut book = Book::default();
        book.channel_opened("02aa", "rig1", T0);
        book.count("02aa", "rig1", share(4, 7.5, None), at(T0 + 1, start));
        book.count("02aa", "rig2", share(2, 3.0, None), at(T0 + 2, start));
        assert_eq!(book.pool.totals.shares, 2);
        let key = &book.keys["02aa"];
        assert_eq!(key.activity.totals.work, 6);
        assert_eq!(key.activity.totals.best_difficulty, 7.5);
        assert_eq!(key.activity.totals.last_share, Some(T0 + 2));
        assert_eq!(key.workers["rig1"].activity.totals.shares, 1);
        assert_eq!(key.workers["rig1"].open_channels, 1);
        assert_eq!(key.workers["rig1"].connected_since, Some(T0));
        assert_eq!(key.workers["rig2"].open_channels, 0);
        assert_eq!(key.open_channels(), 1);
    }

    #[test]
    fn a_new_miners_rates_are_averaged_since_its_first_share() {
        let start = Instant::now();
        let mut book = Book::default();
        // 600,000 hashes a minute for five minutes, from T0.
        for minute in 0..5 {
            book.count(
                "02aa",
                "",
                share(600_000 >> 12, 1.0, None),
                at(T0 + 60 * minute, start),
            );
        }
        let now = at(T0 + 300, start);
        let key = &book.keys["02aa"].activity;
        let expected = 5.0 * (600_000 >> 12 << 12) as f64 / 300.0;
        assert_eq!(key.hashrate_10m(now), expected);
        assert_eq!(key.hashrate_over(3600, now.unix), expected);
        assert_eq!(key.hashrate_over(24 * 3600, now.unix), expected);
        // A second after its first share a miner is averaged over a minute, not a second.
        let mut book = Book::default();
        book.count("02bb", "", share(1, 1.0, None), at(T0, start));
        let key = &book.keys["02bb"].activity;
        assert_eq!(key.hashrate_10m(at(T0 + 1, start)), 4096.0 / 60.0);
    }

    #[test]
    fn each_bucket_is_averaged_over_the_time_it_was_mined() {
        let start = Instant::now();
        let mut book = Book::default();
        let bucket = T0 - T0 % BUCKET_SECS;
        // First share 300 s into a bucket; 120 s later, 1,200 hashes a second since.
        book.count("02aa", "", share(0, 1.0, None), at(bucket + 300, start));
        let hashes = 144_000u128;
        let mut late = share(0, 1.0, None);
        late.proven_hashes = hashes;
        book.count("02aa", "", late, at(bucket + 420, start));
        let key = &book.keys["02aa"].activity;
        assert_eq!(key.bucket_rates(bucket + 420), vec![(bucket, 1200.0)]);
        // Once the bucket is over, over its 300 s since the first share.
        assert_eq!(
            key.bucket_rates(bucket + 900),
            vec![(bucket, hashes as f64 / 300.0)]
        );
    }

    #[test]
    fn a_worker_is_connected_while_any_of_its_channels_is_open() {
        let mut book = Book::default();
        book.channel_opened("02aa", "rig", T0);
        book.channel_opened("02aa", "rig", T0 + 5);
        book.channel_closed("02aa", "rig", T0 + 6);
        let worker = &book.keys["02aa"].workers["rig"];
        assert_eq!(
            (worker.open_channels, worker.connected_since),
            (1, Some(T0))
        );
        book.channel_closed("02aa", "rig", T0 + 7);
        let worker = &book.keys["02aa"].workers["rig"];
        assert_eq!((worker.open_channels, worker.connected_since), (0, None));
    }

    #[test]
    fn idle_workers_and_keys_are_forgotten_after_the_retention() {
        let start = Instant::now();
        let mut book = Book::default();
        book.count("02aa", "gone", share(1, 1.0, None), at(T0, start));
        book.channel_opened("02bb", "quiet-but-connected", T0);
        book.count("02cc", "busy", share(1, 1.0, None), at(T0, start));
        let later = T0 + RETENTION_SECS + 1;
        book.count("02cc", "busy", share(1, 1.0, None), at(later, start));
        let keys: Vec<&str> = book.keys.keys().map(String::as_str).collect();
        assert_eq!(keys, ["02bb", "02cc"]);
    }

    #[test]
    fn each_keys_epochs_are_tallied_and_only_the_latest_kept() {
        let start = Instant::now();
        let mut book = Book::default();
        for epoch in 0..(EPOCHS_PER_KEY as u64 + 10) {
            book.count("02aa", "", share(3, 1.0, Some(epoch)), at(T0, start));
        }
        book.count("02aa", "", share(2, 1.0, Some(137)), at(T0, start));
        let epochs = &book.keys["02aa"].epochs;
        assert_eq!(epochs.len(), EPOCHS_PER_KEY);
        assert_eq!(epochs.keys().next(), Some(&10));
        assert_eq!(epochs[&137], Tally { quotes: 2, work: 5 });
    }

    #[test]
    fn changes_are_handed_over_once_and_back_when_a_write_fails() {
        let start = Instant::now();
        let mut book = Book::default();
        book.count("02aa", "rig", share(1, 1.0, Some(3)), at(T0, start));
        let changes = book.take_changes();
        let scopes: Vec<&Scope> = changes.iter().map(|change| &change.scope).collect();
        assert_eq!(
            scopes,
            [
                &Scope::Pool,
                &Scope::Key("02aa".into()),
                &Scope::Worker {
                    key: "02aa".into(),
                    name: "rig".into()
                }
            ]
        );
        assert_eq!(
            changes[1].epochs.as_ref().unwrap()[&3],
            Tally { quotes: 1, work: 1 }
        );
        assert!(book.take_changes().is_empty(), "nothing new");
        book.restore_changes(changes.clone());
        assert_eq!(book.take_changes(), changes);
    }

    #[test]
    fn a_restored_book_continues_the_saved_totals() {
        let start = Instant::now();
        let mut book = Book::default();
        book.count("02aa", "rig", share(5, 9.0, Some(1)), at(T0, start));
        let saved: Vec<SavedScope> = book
            .take_changes()
            .into_iter()
            .map(|change| SavedScope {
                scope: change.scope,
                totals: change.totals.unwrap(),
                epochs: change.epochs.unwrap_or_default(),
                buckets: change.series.values,
            })
            .collect();
        let mut book = Book::restored(saved, T0 + 60);
        book.count("02aa", "rig", share(1, 2.0, Some(1)), at(T0 + 60, start));
        let key = &book.keys["02aa"];
        assert_eq!(key.activity.totals.shares, 2);
        assert_eq!(key.activity.totals.work, 6);
        assert_eq!(key.activity.totals.best_difficulty, 9.0);
        assert_eq!(key.epochs[&1], Tally { quotes: 2, work: 6 });
        assert_eq!(key.workers["rig"].activity.totals.shares, 2);
        assert_eq!(book.pool.series.buckets().count(), 1);
        // Its ten-minute rate counts from the restart, not from the first share a while ago.
        let restarted = at(T0 + 60, start);
        assert_eq!(
            book.keys["02aa"].activity.hashrate_10m(at(T0 + 180, start)),
            4096.0 / (180 - 60) as f64,
            "one share's hashes since the restart at {}",
            restarted.unix
        );
    }

    #[test]
    fn upstream_answers_are_kept_with_the_keys_totals_and_saved() {
        let start = Instant::now();
        let mut book = Book::default();
        book.count("02aa", "rig", share(1, 1.0, None), at(T0, start));
        book.take_changes();
        book.upstream_answer("02aa", true);
        book.upstream_answer("02aa", true);
        book.upstream_answer("02aa", false);
        // A key the book does not know (forgotten after a week idle) is not brought back.
        book.upstream_answer("02ff", true);
        let totals = &book.keys["02aa"].activity.totals;
        assert_eq!((totals.upstream_accepted, totals.upstream_rejected), (2, 1));
        assert!(!book.keys.contains_key("02ff"));
        let changes = book.take_changes();
        assert_eq!(changes.len(), 1, "only the key's totals changed");
        let saved = changes[0].totals.as_ref().expect("the key's totals");
        assert_eq!((saved.upstream_accepted, saved.upstream_rejected), (2, 1));
    }

    #[test]
    fn rejections_are_kept_with_the_pools_totals() {
        let mut book = Book::default();
        book.reject("stale-share");
        book.reject("stale-share");
        let changes = book.take_changes();
        let totals = changes[0].totals.as_ref().unwrap();
        assert_eq!(totals.rejected["stale-share"], 2);
    }
}
