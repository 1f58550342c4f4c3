//! `mint.toml`, loaded into [`MintConfig`]. Every field has a default that runs on regtest.

use std::net::SocketAddr;
use std::path::PathBuf;

use hashpool_service::ConnectionLimits;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintConfig {
    /// The cashu HTTP API.
    pub listen_address: SocketAddr,
    pub log_dir: PathBuf,
    /// The mint's seed; generated on first start with owner-only permissions.
    pub seed_file: PathBuf,
    /// Largest HTTP request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// HTTP connections served at once, in all and from one IP address; more are closed as soon
    /// as they are accepted, so a flood from a few addresses cannot take every slot.
    pub connections: ConnectionLimits,
    /// How long a connection has to send a request's whole header, from when it opens or its
    /// last response was sent; slower (slow-loris) and idle connections are closed.
    pub header_read_timeout_ms: u64,
    pub database: DatabaseConfig,
    pub retention: RetentionConfig,
    pub redis: ConsumerConfig,
    pub info: InfoConfig,
    /// The mint's Lightning node, where payouts land and melts are paid from. Absent: no
    /// Lightning; sat epochs are then released on the pool's word alone.
    pub lightning: Option<LightningConfig>,
}

impl Default for MintConfig {
    fn default() -> Self {
        Self {
            listen_address: "127.0.0.1:3338".parse().expect("a socket address"),
            log_dir: PathBuf::from("logs"),
            seed_file: PathBuf::from(".data/mint/seed"),
            max_body_bytes: 256 * 1024,
            connections: ConnectionLimits::default(),
            header_read_timeout_ms: 10_000,
            database: DatabaseConfig::default(),
            retention: RetentionConfig::default(),
            redis: ConsumerConfig::default(),
            info: InfoConfig::default(),
            lightning: None,
        }
    }
}

impl MintConfig {
    /// A mint on an ephemeral 127.0.0.1 port with its seed, SQLite store and logs under
    /// `data_dir`, reading `stream` every 100 ms: the mint tests and tools start in-process.
    pub fn ephemeral(data_dir: &std::path::Path, stream: String) -> Self {
        Self {
            listen_address: "127.0.0.1:0".parse().expect("a socket address"),
            log_dir: data_dir.join("logs"),
            seed_file: data_dir.join("seed"),
            database: DatabaseConfig {
                sqlite_path: data_dir.join("mint.sqlite"),
                ..DatabaseConfig::default()
            },
            redis: ConsumerConfig {
                stream,
                block_ms: 100,
                ..ConsumerConfig::default()
            },
            ..Self::default()
        }
    }
}

/// The mint store: a SQLite file unless a PostgreSQL URL is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub sqlite_path: PathBuf,
    pub postgres_url: Option<String>,
    /// SQLite's page cache per connection, in MiB (SQLite's own default is 2 MiB). The quote
    /// indexes are keyed by random ids, so a batch of quotes touches pages all over them: with
    /// a cache smaller than the indexes, each insert re-reads its pages from the OS.
    pub sqlite_cache_mib: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            sqlite_path: PathBuf::from(".data/mint/mint.sqlite"),
            postgres_url: None,
            sqlite_cache_mib: 64,
        }
    }
}

/// How long the store keeps quotes that have been minted (see `quotes::Retention`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// A quote whose every paid unit has been minted is deleted this long after its share was
    /// accepted (plus an hour's margin for clocks), and a create older than this is refused
    /// (dead-lettered): its quote may have been minted and deleted. 0 keeps every quote.
    pub keep_issued_secs: u64,
    /// How often issued quotes past the window are deleted.
    pub prune_interval_secs: u64,
    /// Quotes deleted per store transaction, so that a large backlog of them does not hold the
    /// store's write lock for long.
    pub prune_batch: usize,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_issued_secs: 30 * 24 * 3600,
            prune_interval_secs: 600,
            prune_batch: 5_000,
        }
    }
}

/// How the mint reads the quote stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsumerConfig {
    pub url: String,
    pub stream: String,
    pub group: String,
    /// This process's name in the consumer group; `mint-<hostname>` when unset, stable across
    /// restarts so a restarted mint finishes its own pending entries at once. Several workers
    /// on one host each need a name of their own.
    pub consumer_name: Option<String>,
    /// Entries read per XREADGROUP; a run of them is applied in one store transaction.
    pub batch_size: usize,
    /// How long one XREADGROUP blocks waiting for new entries.
    pub block_ms: u64,
    /// Pending entries idle this long belong to a dead consumer and are claimed (XAUTOCLAIM).
    pub claim_idle_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            stream: ehash::QUOTE_STREAM.to_owned(),
            group: ehash::MINT_CONSUMER_GROUP.to_owned(),
            consumer_name: None,
            batch_size: 1024,
            block_ms: 1000,
            claim_idle_ms: 30_000,
        }
    }
}

/// What NUT-06 `/v1/info` says about this mint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InfoConfig {
    pub name: String,
    pub description: String,
}

impl Default for InfoConfig {
    fn default() -> Self {
        Self {
            name: "hashpool mint".to_owned(),
            description: ehash::UNIT_DESCRIPTION.to_owned(),
        }
    }
}

/// The mint's Lightning node: cdk's LDK backend (ldk-node) on bitcoind's RPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LightningConfig {
    pub network: bitcoin::Network,
    /// ldk-node's own store (channel state: back it up with the seed).
    pub storage_dir: PathBuf,
    /// Lightning P2P.
    pub listen_address: SocketAddr,
    pub bitcoind_rpc_host: String,
    pub bitcoind_rpc_port: u16,
    /// bitcoind's RPC cookie, read once when the node starts.
    pub bitcoind_cookie_file: PathBuf,
    /// A melt reserves max(this, `fee_reserve_percent` of the amount) for routing fees; what is
    /// not spent comes back as NUT-08 change.
    pub fee_reserve_min_sat: u64,
    pub fee_reserve_percent: f32,
    /// Where the payout BOLT12 offer is written for the operator, who gives it to the payer.
    pub offer_file: PathBuf,
    /// The pool's payout callback, called when a payment to the offer lands. Absent: payments
    /// are recorded, and the operator calls the pool's `/payout` by other means.
    pub payout_callback: Option<PayoutCallbackConfig>,
}

impl Default for LightningConfig {
    fn default() -> Self {
        Self {
            network: bitcoin::Network::Regtest,
            storage_dir: PathBuf::from(".data/mint/ldk"),
            listen_address: "127.0.0.1:9735".parse().expect("a socket address"),
            bitcoind_rpc_host: "127.0.0.1".to_owned(),
            bitcoind_rpc_port: 18443,
            bitcoind_cookie_file: PathBuf::from(".data/bitcoind/regtest/.cookie"),
            fee_reserve_min_sat: 2,
            fee_reserve_percent: 0.01,
            offer_file: PathBuf::from(".data/mint/payout-offer"),
            payout_callback: None,
        }
    }
}

/// The pool's `POST /payout`, signed with the secret both read from an owner-only file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutCallbackConfig {
    pub url: String,
    pub secret_file: PathBuf,
}

impl Default for PayoutCallbackConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:9091/payout".to_owned(),
            secret_file: PathBuf::from(".data/pool/payout-secret"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/mint.toml");
        let shipped: MintConfig =
            hashpool_service::load_config(Some(std::path::Path::new(path))).unwrap();
        let defaults = MintConfig::default();
        assert_eq!(shipped.listen_address, defaults.listen_address);
        assert_eq!(shipped.redis.stream, defaults.redis.stream);
        assert_eq!(shipped.redis.group, ehash::MINT_CONSUMER_GROUP);
        assert_eq!(shipped.database.sqlite_path, defaults.database.sqlite_path);
        assert_eq!(shipped.database.postgres_url, None);
        assert_eq!(shipped.info.description, ehash::UNIT_DESCRIPTION);
        assert_eq!(shipped.connections, defaults.connections);
        assert_eq!(
            shipped.header_read_timeout_ms,
            defaults.header_read_timeout_ms
        );
        assert!(shipped.info.description.contains("2^12"));
    }

    #[test]
    fn the_shipped_lightning_section_parses_once_uncommented() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/mint.toml");
        let shipped = std::fs::read_to_string(path).unwrap();
        let (_, section) = shipped.split_once("# [lightning]").unwrap();
        let uncommented: String = std::iter::once("[lightning]")
            .chain(
                section
                    .lines()
                    .map(|line| line.strip_prefix("# ").unwrap_or("")),
            )
            .map(|line| format!("{line}\n"))
            .collect();
        let config: MintConfig = toml::from_str(&uncommented).unwrap();
        let lightning = config.lightning.unwrap();
        let defaults = LightningConfig::default();
        assert_eq!(lightning.listen_address, defaults.listen_address);
        assert_eq!(lightning.storage_dir, defaults.storage_dir);
        assert_eq!(lightning.network, bitcoin::Network::Regtest);
        let callback = lightning.payout_callback.unwrap();
        assert_eq!(callback.url, PayoutCallbackConfig::default().url);
        assert_eq!(
            callback.secret_file,
            PayoutCallbackConfig::default().secret_file
        );
    }

    #[test]
    fn the_payout_mode_config_runs_a_node_that_calls_the_pool() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/payout/mint.toml");
        let config: MintConfig =
            hashpool_service::load_config(Some(std::path::Path::new(path))).unwrap();
        let lightning = config.lightning.unwrap();
        assert_eq!(
            lightning.listen_address,
            LightningConfig::default().listen_address
        );
        let callback = lightning.payout_callback.unwrap();
        assert_eq!(callback.url, PayoutCallbackConfig::default().url);
        assert_eq!(config.listen_address, MintConfig::default().listen_address);
    }
}
