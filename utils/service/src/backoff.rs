//! The doubling wait between attempts to reach a peer that went away.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits `first` (at least 1 ms), then twice as long each time, up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        let first = first.max(Duration::from_millis(1));
        let max = max.max(first);
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The wait before the next attempt; the one after is twice as long, up to the maximum.
    pub fn take(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(self.max);
        delay
    }

    /// The wait [`Self::take`] will give next.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first wait, after a success.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_maximum_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u64> = (0..4).map(|_| backoff.take().as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        backoff.reset();
        assert_eq!(backoff.take(), Duration::from_millis(100));
    }
}
