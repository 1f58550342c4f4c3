//! The real stack for translator tests: the pinned bitcoind on regtest, the pool in-process on the
//! machine's Redis (a stream of the test's own), and the translator in front of it.

pub mod sv1_miner;

use std::net::SocketAddr;
use std::path::PathBuf;

use ehash::{CreateQuote, QuoteMessage};
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{regtest_address, unique_redis_prefix, Bitcoind};
use hashpool_translator::config::{DownstreamConfig, UpstreamConfig};
use hashpool_translator::{Translator, TranslatorConfig};
use redis::AsyncCommands;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use sv1_miner::Sv1Miner;

pub const KEY_A: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
pub const KEY_B: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";
const REDIS: &str = "redis://127.0.0.1:6379";

/// Hashrate the translator states for a miner that suggests no difficulty: low enough that a CPU
/// finds shares in a few hundred hashes.
pub const TEST_HASHRATE: f32 = 50.0;

pub struct Stack {
    _node: Bitcoind,
    pub pool: Option<Pool>,
    pool_config: PoolConfig,
    pub translator: Translator,
    pub stream: String,
    _dir: TempDir,
}

impl Stack {
    pub async fn start(test: &str) -> Self {
        Self::start_with(
            test,
            DownstreamConfig {
                initial_hashrate: TEST_HASHRATE,
                minimum_difficulty: ehash::ShareWork::MIN.difficulty(),
                ..DownstreamConfig::default()
            },
        )
        .await
    }

    /// The stack with the translator offering miners `downstream`.
    pub async fn start_with(test: &str, downstream: DownstreamConfig) -> Self {
        if std::env::var_os("SV1_TRACE").is_some() {
            // Logs of the translator and the pool, for debugging a test run.
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_test_writer()
                .try_init();
        }
        let node = Bitcoind::start().expect("the pinned bitcoind starts");
        node.mine(101).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stream = format!("{}quotes", unique_redis_prefix(test));
        let mut pool_config = PoolConfig::ephemeral(
            dir.path(),
            node.rpc_url(),
            node.cookie_file(),
            regtest_address().to_string(),
            stream.clone(),
        );
        pool_config.redis.url = REDIS.to_owned();
        pool_config.redis.publisher_id = Some(test.to_owned());
        let pool = Pool::start(pool_config.clone())
            .await
            .expect("the pool starts");
        // A restart must come back on the same address.
        pool_config.listen_address = pool.sv2_address();
        let translator = Translator::start(TranslatorConfig {
            listen_address: "127.0.0.1:0".parse().unwrap(),
            metrics_address: "127.0.0.1:0".parse().unwrap(),
            log_dir: PathBuf::from(dir.path()),
            upstream: UpstreamConfig {
                address: pool.sv2_address().to_string(),
                reconnect_delay_ms: 100,
                max_reconnect_delay_ms: 1_000,
                ..UpstreamConfig::default()
            },
            downstream,
            ..TranslatorConfig::default()
        })
        .await
        .expect("the translator starts");
        Self {
            _node: node,
            pool: Some(pool),
            pool_config,
            translator,
            stream,
            _dir: dir,
        }
    }

    pub fn sv1_address(&self) -> SocketAddr {
        self.translator.sv1_address()
    }

    pub async fn stop_pool(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.shutdown().await;
        }
    }

    pub async fn restart_pool(&mut self) {
        self.stop_pool().await;
        self.pool = Some(
            Pool::start(self.pool_config.clone())
                .await
                .expect("the pool restarts on its address"),
        );
    }

    /// The `create` messages on this test's stream.
    pub async fn creates(&self) -> Vec<CreateQuote> {
        let mut redis = redis::Client::open(REDIS)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .expect("Redis at 127.0.0.1:6379");
        let entries: redis::streams::StreamRangeReply =
            redis.xrange_all(&self.stream).await.unwrap();
        entries
            .ids
            .iter()
            .filter_map(|entry| {
                let json: String = entry.get(ehash::STREAM_FIELD).unwrap();
                match QuoteMessage::from_json(&json).expect("a valid quote message") {
                    QuoteMessage::Create(create) => Some(create),
                    QuoteMessage::Update(_) => None,
                }
            })
            .collect()
    }

    /// Waits until the stream holds at least `count` creates for `key`; returns them.
    pub async fn creates_for(&self, key: &str, count: usize) -> Vec<CreateQuote> {
        let what = format!("{count} quotes for {key} on the stream");
        hashpool_testkit::eventually(what, async || {
            let creates: Vec<_> = self
                .creates()
                .await
                .into_iter()
                .filter(|create| create.locking_pubkey.to_string() == key)
                .collect();
            (creates.len() >= count).then_some(creates)
        })
        .await
    }

    /// Stops the pool, then the translator (the order of a pool restart, which the translator
    /// must survive anyway).
    pub async fn shutdown(self) {
        if let Some(pool) = self.pool {
            pool.shutdown().await;
        }
        self.translator.shutdown().await;
    }
}

/// `GET path` over plain HTTP/1.0; the body.
pub async fn http_get(address: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
