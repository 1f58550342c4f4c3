//! The hashpool pool: a Stratum V2 pool that validates shares and, for every accepted share,
//! publishes an ehash quote message to Redis for the mint.

pub mod blocks;
pub mod chain;
pub mod config;
pub mod dashboard;
pub mod downstream;
mod durable;
pub mod epochs;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod noise;
pub mod payout;
pub mod publisher;
pub mod server;
pub mod template;
pub mod upstream;
pub mod work;

pub use config::PoolConfig;
pub use server::{Pool, PoolError};
