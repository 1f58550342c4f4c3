//! Waiting for a condition in a test: poll it, never sleep a guessed time, and fail with a name
//! once a deadline passes.
//!
//! Checks are async closures, so a check can ask Redis, an HTTP endpoint or a harness it
//! borrows mutably (`async || harness.pending_count().await == 0`).

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How long [`wait_for`] and [`eventually`] wait before failing the test.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// How often a check runs: often enough to add little to a test, rarely enough not to load
/// the service it asks.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Waits (without blocking the runtime) until `check` holds; panics naming `what` after
/// [`DEFAULT_DEADLINE`].
pub async fn wait_for(what: impl Display, mut check: impl AsyncFnMut() -> bool) {
    eventually(what, async || check().await.then_some(())).await
}

/// [`wait_for`] with its own deadline.
pub async fn wait_for_within(
    what: impl Display,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> bool,
) {
    eventually_within(what, deadline, async || check().await.then_some(())).await
}

/// Polls `check` until it yields a value and returns it; panics naming `what` after
/// [`DEFAULT_DEADLINE`].
pub async fn eventually<T>(what: impl Display, check: impl AsyncFnMut() -> Option<T>) -> T {
    eventually_within(what, DEFAULT_DEADLINE, check).await
}

/// [`eventually`] with its own deadline.
pub async fn eventually_within<T>(
    what: impl Display,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let give_up_at = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < give_up_at,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_check_yields_it() {
        let mut polls = 0;
        let value = eventually("the third poll", async || {
            polls += 1;
            (polls == 3).then_some(polls * 10)
        })
        .await;
        assert_eq!(value, 30);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out after 50ms waiting for something that never happens")]
    async fn fails_naming_what_it_waited_for() {
        wait_for_within(
            "something that never happens",
            Duration::from_millis(50),
            async || false,
        )
        .await;
    }
}
