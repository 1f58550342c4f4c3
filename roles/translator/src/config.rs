//! `translator.toml`, loaded into [`TranslatorConfig`]. Every field has a default that runs on
//! regtest against the pool's default address and development authority key.

use std::net::SocketAddr;
use std::path::PathBuf;

use hashpool_service::ConnectionLimits;
use serde::{Deserialize, Serialize};
use stratum_apps::key_utils::Secp256k1PublicKey;

/// Public half of the pool's regtest development authority key (see the pool's config).
pub const DEV_POOL_AUTHORITY_PUBLIC_KEY: &str =
    "9cGwoULotsUiHExSTdxxGfQXhx1aRdk4GTC2YX2ZkdYUKxjZ31W";

/// cgminer-style firmwares (Bitaxe included) take at most 8 bytes of extranonce2.
pub const MAX_EXTRANONCE2_SIZE: u8 = 8;
/// Longest Sv1 line accepted from a miner; every legitimate message is far shorter.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslatorConfig {
    /// Where Sv1 miners connect.
    pub listen_address: SocketAddr,
    /// `/metrics`.
    pub metrics_address: SocketAddr,
    pub log_dir: PathBuf,
    pub upstream: UpstreamConfig,
    pub downstream: DownstreamConfig,
    /// Sv1 connections served at once, in all and from one address (more are closed at once).
    pub connections: ConnectionLimits,
}

impl Default for TranslatorConfig {
    fn default() -> Self {
        Self {
            listen_address: "0.0.0.0:34255".parse().expect("a socket address"),
            metrics_address: "127.0.0.1:9092".parse().expect("a socket address"),
            log_dir: PathBuf::from("logs"),
            upstream: UpstreamConfig::default(),
            downstream: DownstreamConfig::default(),
            connections: ConnectionLimits::default(),
        }
    }
}

/// The pool, reached over Noise with its authority key checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub address: String,
    pub authority_public_key: Secp256k1PublicKey,
    /// First reconnect delay; doubles up to `max_reconnect_delay_ms`.
    pub reconnect_delay_ms: u64,
    pub max_reconnect_delay_ms: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:34254".to_owned(),
            authority_public_key: DEV_POOL_AUTHORITY_PUBLIC_KEY
                .parse()
                .expect("the dev public key parses"),
            reconnect_delay_ms: 500,
            max_reconnect_delay_ms: 30_000,
        }
    }
}

/// What Sv1 miners are offered.
///
/// Each miner's coinbase is `coinb1 | extranonce1 | extranonce2 | coinb2`, where the translator
/// ends `coinb1` with the upstream channel's extranonce prefix, and `extranonce1 | extranonce2`
/// fill the channel's rollable extranonce. So `extranonce1_size + extranonce2_size` must fit the
/// pool's rollable extranonce (8 bytes on hashpool); the channel is refused otherwise.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownstreamConfig {
    /// Bytes of extranonce1, chosen by the translator per connection.
    pub extranonce1_size: u8,
    /// Bytes of extranonce2 the miner rolls (at most 8 for cgminer-style firmware).
    pub extranonce2_size: u8,
    /// The share rate the pool aims for; used to turn `mining.suggest_difficulty` into the
    /// nominal hashrate the pool starts the channel's vardiff from.
    pub shares_per_minute: f32,
    /// Hashrate (H/s) assumed for a miner that suggests no difficulty; a Bitaxe does ~1 TH/s.
    pub initial_hashrate: f32,
    /// The least difficulty (units of 2^32 expected hashes) a miner may suggest, and the least
    /// its initial hashrate stands for; lower suggestions are raised to it. Keep it at the pool's
    /// `[difficulty] minimum`: the pool enforces its own minimum whatever this says.
    pub minimum_difficulty: f64,
    /// Longest line a miner may send before it is disconnected.
    pub max_line_bytes: usize,
    /// A connection that has not sent `mining.authorize` by then is closed, so idle sockets
    /// cannot pile up.
    pub authorize_timeout_secs: u64,
}

impl Default for DownstreamConfig {
    fn default() -> Self {
        Self {
            extranonce1_size: 4,
            extranonce2_size: 4,
            shares_per_minute: 12.0,
            initial_hashrate: 1.0e12,
            minimum_difficulty: 1.0 / 1024.0,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            authorize_timeout_secs: 60,
        }
    }
}

impl DownstreamConfig {
    /// The hashrate at which shares of `difficulty` come at `shares_per_minute`.
    pub fn hashrate_for_difficulty(&self, difficulty: f64) -> f32 {
        (difficulty * 4_294_967_296.0 * f64::from(self.shares_per_minute) / 60.0) as f32
    }

    /// The nominal hashrate to announce for a miner that suggested `difficulty` (or none):
    /// never below what the minimum difficulty stands for.
    pub fn announced_hashrate(&self, suggested_difficulty: Option<f64>) -> f32 {
        let floor = self.hashrate_for_difficulty(self.minimum_difficulty);
        let requested = suggested_difficulty
            .map(|difficulty| self.hashrate_for_difficulty(difficulty))
            .unwrap_or(self.initial_hashrate);
        if requested.is_finite() {
            requested.max(floor)
        } else {
            floor
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/translator.toml");
        let shipped: TranslatorConfig =
            hashpool_service::load_config(Some(std::path::Path::new(path))).unwrap();
        let defaults = TranslatorConfig::default();
        assert_eq!(shipped.listen_address, defaults.listen_address);
        assert_eq!(shipped.metrics_address, defaults.metrics_address);
        assert_eq!(shipped.upstream.address, defaults.upstream.address);
        assert_eq!(
            shipped.upstream.authority_public_key.into_bytes(),
            defaults.upstream.authority_public_key.into_bytes()
        );
        assert!(shipped.downstream.extranonce2_size <= MAX_EXTRANONCE2_SIZE);
        assert_eq!(
            shipped.downstream.extranonce1_size + shipped.downstream.extranonce2_size,
            8,
            "fills the pool's 8 rollable extranonce bytes"
        );
        assert_eq!(
            shipped.downstream.max_line_bytes,
            defaults.downstream.max_line_bytes
        );
        assert_eq!(
            shipped.upstream.reconnect_delay_ms,
            defaults.upstream.reconnect_delay_ms
        );
        assert_eq!(
            shipped.downstream.minimum_difficulty,
            defaults.downstream.minimum_difficulty
        );
    }

    #[test]
    fn suggestions_below_the_minimum_are_raised_to_it() {
        let config = DownstreamConfig {
            minimum_difficulty: 1.0,
            shares_per_minute: 60.0,
            initial_hashrate: 1.0,
            ..DownstreamConfig::default()
        };
        // At one share a second, difficulty 1 is 2^32 H/s.
        assert_eq!(config.announced_hashrate(Some(0.0001)), 4_294_967_296.0);
        assert_eq!(config.announced_hashrate(None), 4_294_967_296.0);
        assert_eq!(config.announced_hashrate(Some(4.0)), 4.0 * 4_294_967_296.0);
        assert_eq!(config.announced_hashrate(Some(f64::MAX)), 4_294_967_296.0);
    }
}
