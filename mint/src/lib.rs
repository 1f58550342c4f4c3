//! The hashpool mint: a cdk mint for unit `hash` that consumes the pool's quote stream and serves
//! the cashu HTTP API.

pub mod config;

pub use config::MintConfig;
