//! `mint.toml`, loaded into [`MintConfig`]. Every field has a default that runs on regtest.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    pub database: DatabaseConfig,
    pub redis: ConsumerConfig,
    pub info: InfoConfig,
}

impl Default for MintConfig {
    fn default() -> Self {
        Self {
            listen_address: "127.0.0.1:3338".parse().expect("a socket address"),
            log_dir: PathBuf::from("logs"),
            seed_file: PathBuf::from(".data/mint/seed"),
            max_body_bytes: 256 * 1024,
            database: DatabaseConfig::default(),
            redis: ConsumerConfig::default(),
            info: InfoConfig::default(),
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
                postgres_url: None,
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
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            sqlite_path: PathBuf::from(".data/mint/mint.sqlite"),
            postgres_url: None,
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
    /// This process's name in the consumer group; `mint-<hostname>-<pid>` when unset.
    pub consumer_name: Option<String>,
    /// Entries read per XREADGROUP.
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
            batch_size: 256,
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
        assert!(shipped.info.description.contains("2^12"));
    }
}
