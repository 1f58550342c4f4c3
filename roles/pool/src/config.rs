//! `pool.toml`, loaded into [`PoolConfig`]. Every field has a default that runs on regtest.

use std::net::SocketAddr;
use std::path::PathBuf;

use ehash::{ReleasePolicy, ShareWork};
use hashpool_service::ConnectionLimits;
use serde::{Deserialize, Serialize};
use stratum_apps::key_utils::{Secp256k1PublicKey, Secp256k1SecretKey};

/// The regtest development authority key shipped in `config/pool.toml`. Anyone can read it:
/// generate your own with `pool keygen` before mining anywhere but regtest.
pub const DEV_AUTHORITY_SECRET_KEY: &str = "qLGnngZYWnExemVFxzhhuEFLKm568mEPoELMayLiUK3ooJhRP";
pub const DEV_AUTHORITY_PUBLIC_KEY: &str = "9cGwoULotsUiHExSTdxxGfQXhx1aRdk4GTC2YX2ZkdYUKxjZ31W";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Where miners connect (Stratum V2 over Noise).
    pub listen_address: SocketAddr,
    /// `/metrics` and the JSON stats endpoint.
    pub http_address: SocketAddr,
    pub log_dir: PathBuf,
    pub release_policy: ReleasePolicy,
    pub authority: AuthorityConfig,
    pub bitcoind: BitcoindConfig,
    pub redis: RedisConfig,
    pub vardiff: VardiffConfig,
    pub difficulty: DifficultyConfig,
    pub payout: PayoutConfig,
    pub dashboard: DashboardConfig,
    /// Miner connections served at once, in all and from one address (more are closed at once).
    pub connections: ConnectionLimits,
    /// How long a miner has, after the Noise handshake, to send SetupConnection before the
    /// connection is closed (a silent peer holds a slot for nothing).
    pub setup_timeout_ms: u64,
    /// Set: the pool is a proxy, mining on an upstream pool's jobs instead of its own templates.
    pub proxy: Option<ProxyConfig>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            listen_address: "0.0.0.0:34254".parse().expect("a socket address"),
            http_address: "127.0.0.1:9091".parse().expect("a socket address"),
            log_dir: PathBuf::from("logs"),
            release_policy: ReleasePolicy::default(),
            authority: AuthorityConfig::default(),
            bitcoind: BitcoindConfig::default(),
            redis: RedisConfig::default(),
            vardiff: VardiffConfig::default(),
            difficulty: DifficultyConfig::default(),
            payout: PayoutConfig::default(),
            dashboard: DashboardConfig::default(),
            connections: ConnectionLimits::default(),
            setup_timeout_ms: 10_000,
            proxy: None,
        }
    }
}

impl PoolConfig {
    /// The least work a share may prove: the configured minimum difficulty, or the default of
    /// the network the coinbase address belongs to.
    pub fn minimum_share_work(&self) -> ShareWork {
        let difficulty = self.difficulty.minimum.unwrap_or_else(|| {
            if is_regtest_address(&self.bitcoind.coinbase_address) {
                REGTEST_MINIMUM_DIFFICULTY
            } else {
                MAINNET_MINIMUM_DIFFICULTY
            }
        });
        ShareWork::at_least_difficulty(difficulty).unwrap_or(ShareWork::MIN)
    }

    /// A pool on ephemeral 127.0.0.1 ports against a regtest bitcoind (cookie auth), paying
    /// `coinbase_address`, publishing to `stream`, with its logs and journal under `data_dir`,
    /// templates polled every 50 ms and the least minimum difficulty (2^-20): the pool tests
    /// and tools start in-process.
    pub fn ephemeral(
        data_dir: &std::path::Path,
        rpc_url: String,
        cookie_file: PathBuf,
        coinbase_address: String,
        stream: String,
    ) -> Self {
        Self {
            listen_address: "127.0.0.1:0".parse().expect("a socket address"),
            http_address: "127.0.0.1:0".parse().expect("a socket address"),
            log_dir: data_dir.join("logs"),
            bitcoind: BitcoindConfig {
                rpc_url,
                cookie_file: Some(cookie_file),
                coinbase_address,
                template_poll_ms: 50,
                ..BitcoindConfig::default()
            },
            redis: RedisConfig {
                stream,
                journal_path: data_dir.join("journal.jsonl"),
                ..RedisConfig::default()
            },
            payout: PayoutConfig {
                epochs_file: data_dir.join("epochs.json"),
                callback_secret_file: None,
            },
            // The least work the unit expresses: tests mine many shares in a debug build.
            difficulty: DifficultyConfig {
                minimum: Some(ShareWork::MIN.difficulty()),
            },
            ..Self::default()
        }
    }
}

/// The Noise authority keypair and the lifetime of the certificates signed with it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthorityConfig {
    pub public_key: Secp256k1PublicKey,
    pub secret_key: Secp256k1SecretKey,
    pub cert_validity_secs: u64,
}

impl Default for AuthorityConfig {
    fn default() -> Self {
        Self {
            public_key: DEV_AUTHORITY_PUBLIC_KEY
                .parse()
                .expect("the dev public key parses"),
            secret_key: DEV_AUTHORITY_SECRET_KEY
                .parse()
                .expect("the dev secret key parses"),
            cert_validity_secs: 3600,
        }
    }
}

/// How the pool reaches bitcoind for templates and found blocks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BitcoindConfig {
    pub rpc_url: String,
    /// Cookie written by bitcoind (preferred); `rpc_user`/`rpc_password` are used when unset.
    pub cookie_file: Option<PathBuf>,
    pub rpc_user: Option<String>,
    pub rpc_password: Option<String>,
    /// Address the coinbase pays.
    pub coinbase_address: String,
    /// How often the pool asks bitcoind whether the tip has moved.
    pub template_poll_ms: u64,
    /// How old a template may grow on an unchanged tip before the pool builds a new one, to
    /// take in new transactions and fees.
    pub template_refresh_ms: u64,
}

impl Default for BitcoindConfig {
    fn default() -> Self {
        Self {
            rpc_url: "http://127.0.0.1:18443".to_owned(),
            cookie_file: Some(PathBuf::from(".data/bitcoind/regtest/.cookie")),
            rpc_user: None,
            rpc_password: None,
            coinbase_address: "bcrt1qqrzrwrmesnkhpauet05m8klt37d6arujhl4zwp".to_owned(),
            template_poll_ms: 500,
            template_refresh_ms: 20_000,
        }
    }
}

/// Where accepted shares' quote messages go, and how many may wait while Redis is away.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    pub stream: String,
    /// Quote messages held in memory while Redis is unreachable; beyond this they are counted
    /// as dropped and logged as errors.
    pub buffer_capacity: usize,
    /// Unsent messages are written here on shutdown and replayed on start.
    pub journal_path: PathBuf,
    /// This pool's name for its exactly-once marker on the stream; `pool-<hostname>` when unset.
    /// Pools sharing a stream need distinct ids.
    pub publisher_id: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".to_owned(),
            stream: ehash::QUOTE_STREAM.to_owned(),
            buffer_capacity: 1_000_000,
            journal_path: PathBuf::from(".data/pool/unsent-quotes.jsonl"),
            publisher_id: None,
        }
    }
}

/// The dashboard (web page and `/api/v1` on `http_address`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardConfig {
    /// The Sv2 address miners are told to use; unset, `listen_address` (with `0.0.0.0` shown
    /// as `127.0.0.1`). Set it to the host name miners reach the pool by.
    pub sv2_address: Option<String>,
    /// The translator's Sv1 URL shown to Bitaxe owners; unset, none is shown.
    pub sv1_url: Option<String>,
    /// How often the hashrate history and totals are written to Redis: what a crash of the
    /// pool can lose from the charts (never a quote: quotes have their own path).
    pub history_flush_ms: u64,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            sv2_address: None,
            sv1_url: None,
            history_flush_ms: 5_000,
        }
    }
}

/// Payout epochs (the `payout-epoch` release policy).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayoutConfig {
    /// The open epoch and the blocks that closed the others; kept across restarts.
    pub epochs_file: PathBuf,
    /// The secret payout callbacks are signed with (an owner-only file). Unset: no `/payout`
    /// endpoint.
    pub callback_secret_file: Option<PathBuf>,
}

impl Default for PayoutConfig {
    fn default() -> Self {
        Self {
            epochs_file: PathBuf::from(".data/pool/epochs.json"),
            callback_secret_file: None,
        }
    }
}

/// Proxy mode: the upstream pools, in order of preference, and how the extranonce they give is
/// shared between this pool's channels (see `upstream::job`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Extranonce bytes of the upstream's each channel here gets (a channel index, then what
    /// the miner rolls): `T` in `docs/proxy-pool.md`. The upstream must give at least this many.
    pub extranonce_len: u8,
    pub max_channels: u32,
    /// The first wait before reconnecting; it doubles up to `max_reconnect_delay_ms`.
    pub reconnect_delay_ms: u64,
    pub max_reconnect_delay_ms: u64,
    /// Failed connections in a row before moving on to the next upstream.
    pub attempts_per_upstream: u32,
    pub upstreams: Vec<UpstreamConfig>,
    /// Under the payout-epoch policy: how the upstream's blocks are recognised on the chain.
    pub blocks: UpstreamBlocksConfig,
}

/// A block whose coinbase scriptSig carries one of `coinbase_tags`, or that pays one of
/// `payout_addresses`, is the upstream's: it closes the open payout epoch.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamBlocksConfig {
    pub coinbase_tags: Vec<String>,
    pub payout_addresses: Vec<String>,
    /// How often bitcoind's tip is looked at.
    pub poll_ms: u64,
}

impl Default for UpstreamBlocksConfig {
    fn default() -> Self {
        Self {
            coinbase_tags: Vec::new(),
            payout_addresses: Vec::new(),
            poll_ms: 500,
        }
    }
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            extranonce_len: 8,
            max_channels: 65_536,
            reconnect_delay_ms: 500,
            max_reconnect_delay_ms: 30_000,
            attempts_per_upstream: 3,
            upstreams: Vec::new(),
            blocks: UpstreamBlocksConfig::default(),
        }
    }
}

/// One upstream pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `stratum+tcp://host:port` (Stratum V1, as OCEAN and ckpool speak it) or
    /// `stratum2+tcp://host:port` (Stratum V2 over Noise).
    pub url: String,
    /// Sv2: the upstream's authority key; its certificate is checked against it.
    pub authority_public_key: Option<Secp256k1PublicKey>,
    /// Who the upstream credits: the Sv1 username (on OCEAN, the operator's payout address,
    /// optionally `.worker`), or the Sv2 user identity (for a hashpool upstream, the operator's
    /// public key, `pubkey[.worker]`).
    pub user_identity: String,
    /// Sv1: the `mining.authorize` password (`x` when unset).
    #[serde(default)]
    pub password: Option<String>,
    /// Sv1: a `mining.suggest_difficulty` to send after authorizing.
    #[serde(default)]
    pub suggest_difficulty: Option<f64>,
    /// The hashrate announced for the channel, in H/s.
    #[serde(default = "default_upstream_hashrate")]
    pub nominal_hashrate: f32,
}

fn default_upstream_hashrate() -> f32 {
    1.0e9
}

/// Per-channel difficulty adjustment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VardiffConfig {
    pub shares_per_minute: f32,
    /// Hashrate (H/s) assumed for a new channel whose device states none.
    pub initial_hashrate: f32,
}

impl Default for VardiffConfig {
    fn default() -> Self {
        Self {
            shares_per_minute: 12.0,
            initial_hashrate: 1.0e6,
        }
    }
}

/// Default minimum share difficulty on regtest: 2^-10, 2^22 expected hashes, a share every two
/// seconds or so from `bin/up`'s one-thread CPU miner (about 2 MH/s as built by `bin/up`).
pub const REGTEST_MINIMUM_DIFFICULTY: f64 = 1.0 / 1024.0;
/// Default minimum share difficulty everywhere else (mainnet, testnet, testnet4, signet): 256,
/// 2^40 expected hashes. The smallest device worth pointing at a real network, a ~1 TH/s Bitaxe,
/// then finds about one share a second before vardiff settles it at `shares_per_minute`
/// (AxeOS suggests difficulty 1000 by default); anything slower cannot make the pool store quotes
/// faster than it proves work worth storing.
pub const MAINNET_MINIMUM_DIFFICULTY: f64 = 256.0;

/// Whether `address` can only be a regtest address (`bcrt1…`). Base58 test addresses are shared
/// by testnet, signet and regtest, so they get the stricter default.
fn is_regtest_address(address: &str) -> bool {
    address
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .is_ok_and(|address| {
            address.is_valid_for_network(bitcoin::Network::Regtest)
                && !address.is_valid_for_network(bitcoin::Network::Testnet)
        })
}

/// Share difficulty limits. Difficulty is in units of 2^32 expected hashes (Bitcoin's difficulty
/// 1 to within 0.002%); every channel target is a power of two (see `ehash::ShareWork`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DifficultyConfig {
    /// No channel gets an easier target than this, whatever its `nominal_hash_rate` or
    /// `max_target`; rounded up to a power of two. Unset: [`REGTEST_MINIMUM_DIFFICULTY`] for a
    /// regtest coinbase address, [`MAINNET_MINIMUM_DIFFICULTY`] otherwise.
    pub minimum: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_the_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/pool.toml");
        let shipped: PoolConfig =
            hashpool_service::load_config(Some(std::path::Path::new(path))).unwrap();
        let defaults = PoolConfig::default();
        assert_eq!(shipped.listen_address, defaults.listen_address);
        assert_eq!(shipped.http_address, defaults.http_address);
        assert_eq!(shipped.redis.stream, ehash::QUOTE_STREAM);
        assert_eq!(
            shipped.authority.public_key.into_bytes(),
            Secp256k1PublicKey::from(shipped.authority.secret_key).into_bytes(),
            "the shipped public key belongs to the shipped secret key"
        );
        assert_eq!(
            shipped.authority.public_key.into_bytes(),
            defaults.authority.public_key.into_bytes()
        );
        assert_eq!(shipped.release_policy, ReleasePolicy::Ehash);
        let address: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
            shipped.bitcoind.coinbase_address.parse().unwrap();
        assert!(address.is_valid_for_network(bitcoin::Network::Regtest));
        assert_eq!(
            shipped.bitcoind.coinbase_address,
            defaults.bitcoind.coinbase_address
        );
        assert_eq!(shipped.minimum_share_work().log2(), 22);
    }

    #[test]
    fn the_payout_mode_config_serves_the_callback() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/payout/pool.toml");
        let payout: PoolConfig =
            hashpool_service::load_config(Some(std::path::Path::new(path))).unwrap();
        assert_eq!(payout.release_policy, ReleasePolicy::PayoutEpoch);
        assert_eq!(
            payout.payout.callback_secret_file.as_deref(),
            Some(std::path::Path::new(".data/pool/payout-secret"))
        );
        assert_eq!(payout.http_address, PoolConfig::default().http_address);
    }

    #[test]
    fn the_proxy_mode_configs_parse_and_agree_with_each_other() {
        let load = |file: &str| -> PoolConfig {
            let path = format!("{}/../../config/proxy/{file}", env!("CARGO_MANIFEST_DIR"));
            hashpool_service::load_config(Some(std::path::Path::new(&path))).unwrap()
        };
        let proxy = load("pool.toml");
        let upstream = load("upstream-pool.toml");
        let settings = proxy.proxy.expect("the proxy section");
        assert!(upstream.proxy.is_none(), "the upstream mines solo");
        assert_eq!(proxy.listen_address, PoolConfig::default().listen_address);
        assert_ne!(proxy.redis.stream, upstream.redis.stream);
        let urls: Vec<&str> = settings.upstreams.iter().map(|u| u.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "stratum+tcp://127.0.0.1:34265",
                &format!("stratum2+tcp://{}", upstream.listen_address)
            ]
        );
        // The upstream's blocks are the ones paying its coinbase address.
        assert_eq!(
            settings.blocks.payout_addresses,
            [upstream.bitcoind.coinbase_address]
        );
        for entry in &settings.upstreams {
            let key = entry.user_identity.split('.').next().unwrap();
            assert!(key.parse::<ehash::LockingPubkey>().is_ok(), "{key}");
        }

        // The extranonce bytes line up: the upstream translator fills the upstream pool's 8,
        // leaves E to the proxy, which keeps 1 index byte (256 channels) of its T and gives the
        // rest to the translator in front of it.
        let translator = |file: &str| -> hashpool_translator::TranslatorConfig {
            let path = format!("{}/../../config/proxy/{file}", env!("CARGO_MANIFEST_DIR"));
            hashpool_service::load_config(Some(std::path::Path::new(&path))).unwrap()
        };
        let upstream_side = translator("upstream-translator.toml").downstream;
        let downstream_side = translator("translator.toml").downstream;
        assert_eq!(
            upstream_side.extranonce1_size + upstream_side.extranonce2_size,
            8
        );
        assert_eq!(upstream_side.extranonce2_size, settings.extranonce_len);
        assert_eq!(settings.max_channels, 256);
        assert_eq!(
            downstream_side.extranonce1_size + downstream_side.extranonce2_size,
            settings.extranonce_len - 1
        );
    }

    #[test]
    fn the_minimum_defaults_by_network_and_rounds_up() {
        let mut config = PoolConfig::default();
        assert_eq!(config.minimum_share_work().log2(), 22, "regtest: 2^-10");
        config.bitcoind.coinbase_address = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq".into();
        assert_eq!(config.minimum_share_work().log2(), 40, "mainnet: 256");
        config.bitcoind.coinbase_address = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx".into();
        assert_eq!(
            config.minimum_share_work().log2(),
            40,
            "testnet/signet: 256"
        );
        config.difficulty.minimum = Some(0.001);
        assert_eq!(
            config.minimum_share_work().log2(),
            23,
            "2^32 * 0.001 rounded up"
        );
        config.difficulty.minimum = Some(1e-30);
        assert_eq!(config.minimum_share_work(), ShareWork::MIN);
    }
}
