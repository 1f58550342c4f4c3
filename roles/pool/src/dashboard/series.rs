//! Expected hashes per ten-minute bucket: the hashrate history of the pool, a key or a worker.

use std::collections::{BTreeMap, BTreeSet};

/// Bucket length, as public-pool and most pool pages chart hashrate.
pub const BUCKET_SECS: u64 = 600;
/// Buckets kept: a full day, plus the one being filled.
pub const HISTORY_SECS: u64 = 24 * 3600;

/// Proven hashes by bucket start (Unix seconds, a multiple of [`BUCKET_SECS`]), the last
/// [`HISTORY_SECS`] of them, with what changed since the history store last saw it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Series {
    buckets: BTreeMap<u64, u128>,
    /// Buckets whose value the store does not have yet.
    changed: BTreeSet<u64>,
    /// Buckets dropped for age that the store may still hold.
    expired: Vec<u64>,
}

/// What the history store must write for a series: its new values and its expired buckets.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SeriesChanges {
    pub values: Vec<(u64, u128)>,
    pub expired: Vec<u64>,
}

pub fn bucket_of(unix_secs: u64) -> u64 {
    unix_secs - unix_secs % BUCKET_SECS
}

impl Series {
    /// A series as the store kept it; buckets older than a day at `now` are left out.
    pub fn restored(buckets: impl IntoIterator<Item = (u64, u128)>, now: u64) -> Self {
        let mut series = Self::default();
        for (start, hashes) in buckets {
            if start + HISTORY_SECS + BUCKET_SECS > now {
                series.buckets.insert(bucket_of(start), hashes);
            } else {
                series.expired.push(start);
            }
        }
        series
    }

    pub fn add(&mut self, hashes: u128, now: u64) {
        let bucket = bucket_of(now);
        let total = self.buckets.entry(bucket).or_default();
        *total = total.saturating_add(hashes);
        self.changed.insert(bucket);
        self.expire(now);
    }

    /// Drops buckets that left the day.
    pub fn expire(&mut self, now: u64) {
        let oldest_kept = bucket_of(now).saturating_sub(HISTORY_SECS);
        let kept = self.buckets.split_off(&oldest_kept);
        let dropped = std::mem::replace(&mut self.buckets, kept);
        for start in dropped.into_keys() {
            self.changed.remove(&start);
            self.expired.push(start);
        }
    }

    /// (bucket start, proven hashes), oldest first.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u128)> + '_ {
        self.buckets.iter().map(|(&start, &hashes)| (start, hashes))
    }

    /// The hashes of the buckets that cover the last `window` seconds (the one being filled
    /// and enough before it), and when the first of them starts.
    pub fn window(&self, window: u64, now: u64) -> (f64, u64) {
        let first = (bucket_of(now) + BUCKET_SECS).saturating_sub(window);
        let hashes = self
            .buckets
            .range(first..)
            .map(|(_, &hashes)| hashes as f64)
            .sum();
        (hashes, first)
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty() || !self.expired.is_empty()
    }

    /// What the store must write, forgotten here: [`Series::restore_changes`] puts it back if
    /// the write fails.
    pub fn take_changes(&mut self) -> SeriesChanges {
        let values = std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|start| self.buckets.get(&start).map(|&hashes| (start, hashes)))
            .collect();
        SeriesChanges {
            values,
            expired: std::mem::take(&mut self.expired),
        }
    }

    pub fn restore_changes(&mut self, changes: SeriesChanges) {
        self.changed
            .extend(changes.values.into_iter().map(|(start, _)| start));
        self.expired.extend(changes.expired);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_764_000_000 - 1_764_000_000 % BUCKET_SECS;

    #[test]
    fn shares_land_in_their_ten_minute_bucket() {
        let mut series = Series::default();
        series.add(600, T0 + 1);
        series.add(600, T0 + 599);
        series.add(1200, T0 + 600);
        let buckets: Vec<_> = series.buckets().collect();
        assert_eq!(buckets, vec![(T0, 1200), (T0 + 600, 1200)]);
    }

    #[test]
    fn a_day_is_kept_and_older_buckets_expire_for_the_store_to_delete() {
        let mut series = Series::default();
        series.add(1, T0);
        let changes = series.take_changes();
        assert_eq!(changes.values, vec![(T0, 1)]);
        series.add(1, T0 + HISTORY_SECS);
        assert_eq!(series.buckets().count(), 2, "exactly a day apart: kept");
        series.add(1, T0 + HISTORY_SECS + BUCKET_SECS);
        let changes = series.take_changes();
        assert_eq!(changes.expired, vec![T0]);
        assert_eq!(series.buckets().count(), 2);
        assert!(!series.has_changes());
    }

    #[test]
    fn a_window_is_the_buckets_that_cover_it() {
        let mut series = Series::default();
        series.add(1, T0);
        series.add(10, T0 + 600);
        series.add(100, T0 + 3600);
        // At T0 + 3900 the hour is covered by the six buckets from T0 + 600.
        assert_eq!(series.window(3600, T0 + 3900), (110.0, T0 + 600));
        assert_eq!(
            series.window(24 * 3600, T0 + 3900),
            (111.0, T0 + 4200 - 24 * 3600)
        );
    }

    #[test]
    fn restored_series_leave_out_what_aged_while_the_pool_was_down() {
        let now = T0 + 2 * HISTORY_SECS;
        let series = Series::restored([(T0, 5), (now - BUCKET_SECS, 7)], now);
        assert_eq!(
            series.buckets().collect::<Vec<_>>(),
            vec![(now - BUCKET_SECS, 7)]
        );
        let mut series = series;
        assert_eq!(series.take_changes().expired, vec![T0]);
    }

    #[test]
    fn failed_writes_are_written_next_time() {
        let mut series = Series::default();
        series.add(3, T0);
        let changes = series.take_changes();
        series.restore_changes(changes.clone());
        assert_eq!(series.take_changes(), changes);
    }
}
