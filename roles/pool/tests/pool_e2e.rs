//! The pool with real services: the pinned bitcoind on regtest, the machine's Redis, and Sv2
//! miners (the project's mining device library) over real Noise connections.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bitcoincore_rpc::RpcApi;
use ehash::{credited_work, QuoteMessage, Release, UpdateQuote};
use hashpool_mining_device::{JobTracker, PoolConnection, CPU_MINER, REQUIRES_STANDARD_JOBS};
use hashpool_pool::metrics::PoolMetrics;
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{post_json, regtest_address, unique_redis_prefix, wait_for, Bitcoind};
use redis::AsyncCommands;
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::mining_sv2::OpenStandardMiningChannelSuccessOwned;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tempfile::TempDir;

#[path = "pool_e2e/bitcoind_restart.rs"]
mod bitcoind_restart;
#[path = "pool_e2e/dashboard.rs"]
mod dashboard;
#[path = "pool_e2e/difficulty.rs"]
mod difficulty;
#[path = "pool_e2e/extended_work.rs"]
mod extended_work;
#[path = "pool_e2e/group_channels.rs"]
mod group_channels;
#[path = "pool_e2e/hostile_frames.rs"]
mod hostile_frames;
#[path = "pool_e2e/oversize.rs"]
mod oversize;
#[path = "pool_e2e/payout_epoch.rs"]
mod payout_epoch;
#[path = "pool_e2e/proxy.rs"]
mod proxy;
#[path = "pool_e2e/signet.rs"]
mod signet;
#[path = "pool_e2e/stale_blocks.rs"]
mod stale_blocks;
#[path = "pool_e2e/version_rolling.rs"]
mod version_rolling;

const KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

struct Stack {
    node: Bitcoind,
    pool: Pool,
    stream: String,
    redis_url: String,
    config: PoolConfig,
    _dir: TempDir,
}

const SHARED_REDIS: &str = "redis://127.0.0.1:6379";

impl Stack {
    /// Waits until the pool has had bitcoind's answer to a found block, whatever it was.
    async fn wait_for_block_submitted(&self) -> Arc<PoolMetrics> {
        let metrics = self.pool.metrics().clone();
        wait_for("the block submitted", async || {
            metrics.blocks_found.get() + metrics.blocks_stale.get() + metrics.blocks_rejected.get()
                > 0
        })
        .await;
        metrics
    }

    async fn start(test: &str) -> Self {
        Self::start_with_redis(test, SHARED_REDIS).await
    }

    async fn start_with_redis(test: &str, redis_url: &str) -> Self {
        Self::start_configured(test, |config| config.redis.url = redis_url.to_owned()).await
    }

    /// A pool that stays on the tip it starts on for the whole test. On regtest every share is
    /// also a block, which moves bitcoind's tip; a pool following the tip would make a test's
    /// later shares stale, sooner or later depending on the machine's load.
    async fn start_on_one_tip(test: &str) -> Self {
        Self::start_configured(test, |config| config.bitcoind.template_poll_ms = 600_000).await
    }

    /// A pool on the shared Redis, configured by `configure` after the test defaults.
    async fn start_configured(test: &str, configure: impl FnOnce(&mut PoolConfig)) -> Self {
        let node = Bitcoind::start().unwrap();
        node.mine(101).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (mut config, stream) = test_pool_config(&node, dir.path(), test);
        configure(&mut config);
        let redis_url = config.redis.url.clone();
        let pool = Pool::start(config.clone()).await.expect("the pool starts");
        Self {
            node,
            pool,
            stream,
            redis_url,
            config,
            _dir: dir,
        }
    }

    /// The pool stopped and started again on the same configuration, files and stream.
    async fn restart_pool(self) -> Self {
        self.pool.shutdown().await;
        let pool = Pool::start(self.config.clone())
            .await
            .expect("the pool starts again");
        Self { pool, ..self }
    }

    async fn miner(&self) -> PoolConnection {
        miner_at(self.pool.sv2_address()).await
    }

    async fn stream_messages(&self) -> Vec<QuoteMessage> {
        stream_messages(&self.redis_url, &self.stream).await
    }
}

/// The test configuration of a pool of test `test` on `node`, with its files in `dir` and its
/// own stream (returned too) on the shared Redis.
fn test_pool_config(node: &Bitcoind, dir: &std::path::Path, test: &str) -> (PoolConfig, String) {
    let stream = format!("{}quotes", unique_redis_prefix(test));
    let mut config = PoolConfig::ephemeral(
        dir,
        node.rpc_url(),
        node.cookie_file(),
        node.address().to_string(),
        stream.clone(),
    );
    config.redis.url = SHARED_REDIS.to_owned();
    config.redis.publisher_id = Some(test.to_owned());
    (config, stream)
}

/// Every quote message on `stream`, in order.
async fn stream_messages(redis_url: &str, stream: &str) -> Vec<QuoteMessage> {
    let mut redis = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: redis::streams::StreamRangeReply = redis.xrange_all(stream).await.unwrap();
    entries
        .ids
        .iter()
        .map(|entry| {
            QuoteMessage::from_json(&entry.get::<String>(ehash::STREAM_FIELD).unwrap()).unwrap()
        })
        .collect()
}

/// A set-up connection to the pool at `address` (the dev authority key checked).
async fn miner_at(address: std::net::SocketAddr) -> PoolConnection {
    let authority = PoolConfig::default().authority.public_key;
    let mut connection = PoolConnection::connect(&address.to_string(), Some(authority))
        .await
        .expect("Noise handshake with the pinned authority key");
    connection
        .setup(REQUIRES_STANDARD_JOBS, &CPU_MINER)
        .await
        .unwrap();
    connection
}

/// A miner with one open standard channel and its jobs.
struct Miner {
    connection: PoolConnection,
    jobs: JobTracker,
    sequence: u32,
}

impl Miner {
    async fn open(stack: &Stack, identity: &str, hashrate: f32) -> Self {
        Self::open_at(stack.pool.sv2_address(), identity, hashrate).await
    }

    async fn open_at(address: std::net::SocketAddr, identity: &str, hashrate: f32) -> Self {
        let mut connection = miner_at(address).await;
        let opened = connection
            .open_standard(1, identity, hashrate)
            .await
            .unwrap()
            .expect("the channel opens");
        Self::on_channel(connection, opened).await
    }

    /// Mines on the standard channel `opened` on `connection`, once its first job is in.
    async fn on_channel(
        connection: PoolConnection,
        opened: OpenStandardMiningChannelSuccessOwned,
    ) -> Self {
        let mut miner = Self {
            connection,
            jobs: JobTracker::new(
                opened.channel_id,
                Target::from_le_bytes(opened.target.to_array()),
            ),
            sequence: 0,
        };
        miner.wait_for_work().await;
        miner
    }

    async fn next_mining(&mut self) -> MiningOwned {
        let message = tokio::time::timeout(Duration::from_secs(20), self.connection.recv())
            .await
            .expect("the pool answers")
            .expect("the connection stays up");
        let AnyMessageOwned::Mining(mining) = message else {
            panic!("unexpected {message:?}");
        };
        self.jobs.on_message(&mining);
        mining
    }

    async fn wait_for_work(&mut self) {
        while self.jobs.work().is_none() {
            self.next_mining().await;
        }
    }

    /// Mines and submits one share; returns the pool's reply (skipping job updates).
    async fn submit_valid_share(&mut self) -> (MiningOwned, u32) {
        let work = self.jobs.work().unwrap().clone();
        let nonce = work
            .search(rand::random(), u32::MAX)
            .expect("an easy target");
        self.submit(work.share(self.sequence, nonce)).await
    }

    /// Sends `shares` at once, so they are all answered on the current tip (though the first
    /// may be a block), and returns the pool's answers in order.
    async fn submit_all(
        &mut self,
        shares: Vec<stratum_apps::stratum_core::mining_sv2::SubmitSharesStandard>,
    ) -> Vec<MiningOwned> {
        let count = shares.len();
        for share in shares {
            self.sequence += 1;
            self.connection
                .send_mining(MiningOwned::SubmitSharesStandard(share))
                .await
                .unwrap();
        }
        self.replies(count).await
    }

    /// The next `count` answers to shares, in order, skipping job updates.
    async fn replies(&mut self, count: usize) -> Vec<MiningOwned> {
        let mut replies = Vec::new();
        while replies.len() < count {
            match self.next_mining().await {
                reply @ (MiningOwned::SubmitSharesSuccess(_)
                | MiningOwned::SubmitSharesError(_)) => replies.push(reply),
                _ => continue,
            }
        }
        replies
    }

    async fn submit(
        &mut self,
        share: stratum_apps::stratum_core::mining_sv2::SubmitSharesStandard,
    ) -> (MiningOwned, u32) {
        let sequence = share.sequence_number;
        self.sequence += 1;
        self.connection
            .send_mining(MiningOwned::SubmitSharesStandard(share))
            .await
            .unwrap();
        loop {
            match self.next_mining().await {
                reply @ (MiningOwned::SubmitSharesSuccess(_)
                | MiningOwned::SubmitSharesError(_)) => return (reply, sequence),
                _ => continue,
            }
        }
    }
}

/// A nonce with the property, from a random start; panics after a million tries.
fn find_nonce(property: impl Fn(u32) -> bool) -> u32 {
    let start: u32 = rand::random();
    (0..1_000_000u32)
        .map(|offset| start.wrapping_add(offset))
        .find(|nonce| property(*nonce))
        .expect("a nonce within a million tries")
}

fn error_code(reply: &MiningOwned) -> String {
    match reply {
        MiningOwned::SubmitSharesError(error) => error.error_code.as_utf8_or_hex(),
        other => panic!("expected SubmitShares.Error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_shares_become_quotes_and_blocks_reach_bitcoind() {
    let stack = Stack::start("pool-valid").await;
    let mut miner = Miner::open(&stack, &format!("{KEY}.rig1"), 1.0).await;
    let start_height = stack.node.rpc().get_block_count().unwrap();

    // Regtest's network target is so easy that every share (at least 2^12 hashes) is a block.
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    let accepted = 1;
    let metrics = stack.wait_for_block_submitted().await;
    assert_eq!(metrics.blocks_found.get(), 1);
    wait_for("the block at bitcoind", async || {
        stack.node.rpc().get_block_count().unwrap() > start_height
    })
    .await;
    let tip = stack.node.rpc().get_best_block_hash().unwrap();
    let block = stack.node.rpc().get_block(&tip).unwrap();
    assert_eq!(
        block.txdata[0].output[0].script_pubkey,
        regtest_address().script_pubkey(),
        "the found block's coinbase pays the pool's address"
    );

    // Every accepted share: a create locked to the miner's key for the credited work, then PAID.
    let quotes = stack.pool.quote_metrics().clone();
    let shares = stack.pool.metrics().shares_accepted.get();
    assert_eq!(shares, accepted);
    wait_for("quotes published", async || {
        quotes.published.load(Ordering::Relaxed) == 2 * shares
    })
    .await;
    let messages = stack.stream_messages().await;
    let creates: Vec<_> = messages
        .iter()
        .filter_map(|message| match message {
            QuoteMessage::Create(create) => Some(create.clone()),
            _ => None,
        })
        .collect();
    let paid: Vec<_> = messages
        .iter()
        .flat_map(|message| match message {
            QuoteMessage::Update(UpdateQuote {
                release: Release::Quotes(ids),
            }) => ids.clone(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(creates.len() as u64, shares);
    let expected_amount = credited_work(miner.jobs.target().to_le_bytes());
    for create in &creates {
        assert_eq!(create.locking_pubkey.to_string(), KEY);
        assert_eq!(create.amount, expected_amount);
        assert!(
            paid.contains(&create.quote_id),
            "quote {} released",
            create.quote_id
        );
    }
    assert_eq!(paid.len(), creates.len());

    let metrics_text = http_get(stack.pool.http_address(), "/metrics").await;
    assert!(metrics_text.contains(&format!("hashpool_pool_shares_accepted_total {shares}")));
    assert!(metrics_text.contains("hashpool_pool_blocks_found_total 1\n"));
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_shares_get_the_spec_error_codes_and_no_quote() {
    let stack = Stack::start("pool-invalid").await;

    // A hard channel: most nonces meet neither its target nor (on regtest, where a block counts
    // as a share whatever the channel target) the network's.
    let mut hard = Miner::open(&stack, KEY, 1.0e15).await;
    let work = hard.jobs.work().unwrap().clone();
    let network = Target::from_compact(
        stratum_apps::stratum_core::bitcoin::CompactTarget::from_consensus(work.nbits),
    );
    let nonce = find_nonce(|nonce| {
        !work.meets_target(nonce) && !network.is_met_by(work.header(nonce).block_hash())
    });
    let (reply, _) = hard.submit(work.share(0, nonce)).await;
    assert_eq!(error_code(&reply), "difficulty-too-low");

    let mut wrong_job = work.share(1, nonce);
    wrong_job.job_id = 9999;
    let (reply, _) = hard.submit(wrong_job).await;
    assert_eq!(error_code(&reply), "invalid-job-id");

    let mut wrong_channel = work.share(2, nonce);
    wrong_channel.channel_id = 4242;
    let (reply, _) = hard.submit(wrong_channel).await;
    assert_eq!(error_code(&reply), "invalid-channel-id");

    // A new tip makes the old job stale, whatever the share.
    stack.node.mine(1).unwrap();
    loop {
        if let MiningOwned::SetNewPrevHash(_) = hard.next_mining().await {
            break;
        }
    }
    let (reply, _) = hard.submit(work.share(3, nonce)).await;
    assert_eq!(error_code(&reply), "stale-share");

    // None of them made a quote.
    assert_eq!(stack.pool.metrics().shares_accepted.get(), 0);
    assert!(stack.stream_messages().await.is_empty());
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_sent_twice_is_a_duplicate_and_makes_one_quote() {
    let stack = Stack::start_on_one_tip("pool-duplicate").await;
    let mut miner = Miner::open(&stack, KEY, 0.01).await;
    let work = miner.jobs.work().unwrap().clone();
    let nonce = find_nonce(|nonce| work.meets_target(nonce));
    let (first, _) = miner.submit(work.share(0, nonce)).await;
    assert!(
        matches!(first, MiningOwned::SubmitSharesSuccess(_)),
        "{first:?}"
    );
    let (second, _) = miner.submit(work.share(1, nonce)).await;
    assert_eq!(error_code(&second), "duplicate-share");

    let quotes = stack.pool.quote_metrics().clone();
    wait_for("quotes published", async || {
        quotes.published.load(Ordering::Relaxed) == 2
    })
    .await;
    let creates = stack
        .stream_messages()
        .await
        .into_iter()
        .filter(|message| matches!(message, QuoteMessage::Create(_)))
        .count();
    assert_eq!(
        creates, 1,
        "one quote for the share, none for its duplicate"
    );
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_identity_is_refused_with_a_reason() {
    let stack = Stack::start("pool-identity").await;
    let mut connection = stack.miner().await;
    for (identity, code) in [
        ("alice.worker", "identity-key-bad-length"),
        (&format!("{}zz", &KEY[..64]) as &str, "identity-key-not-hex"),
        (
            &format!("04{}", &KEY[2..]) as &str,
            "identity-key-not-compressed",
        ),
        (
            &format!("{KEY}.bad worker") as &str,
            "identity-bad-worker-name",
        ),
    ] {
        let refused = connection.open_standard(7, identity, 1.0).await.unwrap();
        assert_eq!(refused.unwrap_err().code, code, "{identity}");
    }
    // The connection is still usable after refusals.
    let opened = connection.open_standard(8, KEY, 1.0).await.unwrap();
    assert!(opened.is_ok());
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_own_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start("pool-garbage").await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;

    // Not Noise at all.
    let mut raw = tokio::net::TcpStream::connect(stack.pool.sv2_address())
        .await
        .unwrap();
    raw.write_all(&[0xde; 4096]).await.unwrap();
    let mut buffer = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match raw.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the pool closes a connection that sends garbage"
    );

    // Noise, then a message a pool never takes, then a mining message before setup.
    for message in [MiningOwned::SetTarget(
        stratum_apps::stratum_core::mining_sv2::SetTargetOwned {
            channel_id: 1,
            maximum_target: [0xff; 32].into(),
        },
    )] {
        let authority = PoolConfig::default().authority.public_key;
        let mut hostile =
            PoolConnection::connect(&stack.pool.sv2_address().to_string(), Some(authority))
                .await
                .unwrap();
        hostile.send_mining(message).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), hostile.recv()).await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "the hostile connection is closed: {answer:?}"
        );
    }

    // The honest miner never noticed.
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)) || error_code(&reply) == "stale-share"
    );
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_loses_and_doubles_no_quote() {
    let mut redis_server = hashpool_testkit::RedisServer::start().unwrap();
    let stack = Stack::start_with_redis("pool-outage", &redis_server.url()).await;
    let mut miner = Miner::open(&stack, KEY, 0.01).await;
    let quotes = stack.pool.quote_metrics().clone();

    let mut accepted = mine(&mut miner, 10).await;
    redis_server.stop();
    // Mining goes on while Redis is away: shares are still answered and accepted.
    accepted += mine(&mut miner, 10).await;
    wait_for("Redis seen down", async || {
        !quotes.redis_up.load(Ordering::Relaxed)
    })
    .await;
    accepted += mine(&mut miner, 5).await;
    assert!(quotes.buffered() > 0, "quote messages wait in the buffer");
    redis_server.restart().unwrap();
    accepted += mine(&mut miner, 5).await;

    let shares = stack.pool.metrics().shares_accepted.get();
    assert_eq!(shares, accepted);
    wait_for("every quote published", async || {
        quotes.published.load(Ordering::Relaxed) == 2 * shares
    })
    .await;
    let mut creates: Vec<_> = stack
        .stream_messages()
        .await
        .into_iter()
        .filter_map(|message| match message {
            QuoteMessage::Create(create) => Some(create.quote_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        creates.len() as u64,
        shares,
        "one create per accepted share"
    );
    creates.sort();
    creates.dedup();
    assert_eq!(creates.len() as u64, shares, "no create twice");
    assert_eq!(quotes.overflowed.load(Ordering::Relaxed), 0);
    stack.pool.shutdown().await;
}

/// Submits `count` shares; returns how many the pool accepted.
async fn mine(miner: &mut Miner, count: usize) -> u64 {
    let mut accepted = 0;
    for _ in 0..count {
        let (reply, _) = miner.submit_valid_share().await;
        if matches!(reply, MiningOwned::SubmitSharesSuccess(_)) {
            accepted += 1;
        }
        miner.wait_for_work().await;
    }
    accepted
}

async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    hashpool_testkit::http_request(address, "GET", path, &[], "")
        .await
        .1
}

#[test]
fn the_test_key_is_valid() {
    assert!(ehash::LockingPubkey::from_str(KEY).is_ok());
}
