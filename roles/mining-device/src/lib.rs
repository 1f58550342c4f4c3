//! The hashpool mining device: a CPU Stratum V2 miner for development, tests and load.
//!
//! The Sv2 side is `hashpool-sv2-client`'s [`PoolConnection`] (re-exported here with what a
//! miner needs of it); [`JobTracker`] follows the jobs, prev hashes and targets a channel
//! receives and turns them into block headers to hash; [`device`] mines them on threads.

mod args;
pub mod device;
mod work;

pub use args::PoolArgs;
pub use hashpool_sv2_client::{
    ChannelRefused, ClientError, Device, PoolConnection, PoolReader, PoolWriter,
    REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS, VERSION_ROLLING_MASK,
};
pub use work::{rolled_version, JobTracker, Work};

/// What the CPU miner says it is in SetupConnection.
pub const CPU_MINER: Device = Device {
    vendor: "hashpool",
    hardware_version: "cpu",
    firmware: env!("CARGO_PKG_VERSION"),
};
