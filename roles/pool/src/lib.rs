//! The hashpool pool: a Stratum V2 pool that validates shares and, for every accepted share,
//! publishes an ehash quote message to Redis for the mint.

pub mod config;
pub mod keys;
pub mod publisher;
pub mod template;

pub use config::PoolConfig;
