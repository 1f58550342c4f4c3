//! The hashpool mining device: a CPU Stratum V2 miner for development, tests and load.
//!
//! [`PoolConnection`] is the Sv2 side (Noise with the pool's authority key pinned,
//! SetupConnection, channels, messages); [`JobTracker`] follows the jobs, prev hashes and
//! targets a channel receives and turns them into block headers to hash.

mod connection;
pub mod device;
mod work;

pub use connection::{
    ConnectionError, OpenedChannel, PoolArgs, PoolConnection, PoolReader, PoolWriter,
    REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS,
};
pub use work::{rolled_version, JobTracker, Work, VERSION_ROLLING_MASK};
