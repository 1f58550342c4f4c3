//! Real services for integration tests. Nothing here is a mock: [`Bitcoind`] is the pinned Bitcoin
//! Core binary on regtest in a throwaway data directory, [`RedisServer`] a redis-server of the
//! test's own for outage tests, each on ports no other test uses.

mod bitcoind;
mod http;
mod process;
mod redis_server;
mod wait;

pub use bitcoind::{regtest_address, Bitcoind, BitcoindError, Chain};
pub use http::{get_json, http_request, post_json};
pub use process::{workspace_binary, Process};
pub use redis_server::{wait_until, RedisServer};
pub use wait::{eventually, eventually_within, wait_for, wait_for_within, DEFAULT_DEADLINE};

use std::net::TcpListener;

use bitcoin::hashes::Hash;
use std::path::PathBuf;

/// A TCP port that was free a moment ago on 127.0.0.1 (the OS picks it, so parallel tests differ).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("the OS hands out an ephemeral port")
}

/// A Redis key prefix no other test run uses, e.g. `test:3f2a…:`; tests share one Redis.
pub fn unique_redis_prefix(test: &str) -> String {
    format!("test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// A share of `work` units by `locking` in `epoch`, as the pool accepts it: the quote a test
/// publishes in the pool's place (a random share hash, so a fresh quote id each time).
pub fn accepted_share(
    locking: ehash::LockingPubkey,
    work: u64,
    epoch: u64,
) -> ehash::AcceptedShare {
    ehash::AcceptedShare {
        share_hash: ehash::ShareHash::from_byte_array(rand::random()),
        locking_pubkey: locking,
        credited_work: work,
        channel_id: 1,
        job_id: 1,
        template_id: 1,
        epoch,
        // Now, as the pool stamps it: a mint refuses creates older than its retention window.
        accepted_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs(),
    }
}

/// The workspace root (where `bin/`, `config/` and `Cargo.toml` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}
