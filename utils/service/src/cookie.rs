//! Processes that start beside bitcoind wait for its RPC cookie, which it writes once it is up.

use std::path::Path;
use std::time::{Duration, Instant};

/// How long a process waits at start for bitcoind to write its RPC cookie.
pub const COOKIE_WAIT: Duration = Duration::from_secs(120);

/// Waits until `cookie` exists, at most `limit`, logging every 10 s; whether it exists.
pub async fn wait_for_cookie(cookie: &Path, limit: Duration) -> bool {
    let started = Instant::now();
    while !cookie.exists() && started.elapsed() < limit {
        if started.elapsed().as_secs() % 10 == 0 {
            tracing::info!(cookie = %cookie.display(), "waiting for bitcoind's RPC cookie");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cookie.exists()
}
