//! The hashpool translator: an Sv1 -> Sv2 proxy that opens one upstream channel per Sv1 miner,
//! so each miner's shares are credited to its own key.

pub mod config;

pub use config::TranslatorConfig;
