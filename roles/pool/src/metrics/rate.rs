//! A hashrate over the last ten minutes whose memory does not grow with the share rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Window over which a hashrate is estimated from proven work.
pub const RATE_WINDOW: Duration = Duration::from_secs(600);
/// Proven work is summed in buckets this long, so a window holds at most 61 of them whatever
/// the share rate (one entry per share held 10 minutes of a 700 shares/s soak: 13 MiB, and
/// growing with the rate). The window's edge moves a bucket at a time: the rate covers the last
/// 600-610 s.
const RATE_BUCKET: Duration = Duration::from_secs(10);

/// (bucket start, expected hashes) of the shares inside the window.
#[derive(Debug, Default, Clone)]
pub struct RateWindow {
    buckets: VecDeque<(Instant, u128)>,
}

impl RateWindow {
    pub fn add(&mut self, hashes: u128, now: Instant) {
        match self.buckets.back_mut() {
            Some((start, total)) if now.duration_since(*start) < RATE_BUCKET => {
                *total = total.saturating_add(hashes);
            }
            _ => self.buckets.push_back((now, hashes)),
        }
        while self
            .buckets
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > RATE_WINDOW)
        {
            self.buckets.pop_front();
        }
    }

    /// Hashes in the window ending `now`.
    pub fn hashes(&self, now: Instant) -> f64 {
        self.buckets
            .iter()
            .filter(|(at, _)| now.duration_since(*at) <= RATE_WINDOW)
            .map(|(_, hashes)| *hashes as f64)
            .sum()
    }

    pub fn buckets(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_holds_buckets_not_shares() {
        let mut window = RateWindow::default();
        let start = Instant::now();
        // 100 shares a second for 20 minutes, 4096 hashes each.
        let mut now = start;
        for _ in 0..120_000 {
            window.add(4096, now);
            now += Duration::from_millis(10);
        }
        assert!(window.buckets() <= 61, "{} buckets", window.buckets());
        // 100 shares/s of 4096 hashes over the window, give or take the edge bucket.
        let expected = 100.0 * 4096.0;
        let rate = window.hashes(now) / RATE_WINDOW.as_secs_f64();
        assert!((rate - expected).abs() / expected < 0.02, "{rate} H/s");
    }
}
