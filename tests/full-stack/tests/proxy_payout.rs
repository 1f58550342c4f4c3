//! A proxy pool's payout epoch end to end, in-process on real Redis and the pinned bitcoind: two
//! miners mine on a proxy of an upstream hashpool; a block paying the upstream's address closes
//! the proxy's epoch 1; a signed payout callback releases it; the mint splits the payout over the
//! epoch's quotes by work, and each miner's wallet mints exactly its pro-rata share in sats.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use cdk::nuts::{CurrencyUnit, MintQuoteState, SecretKey};
use ehash::callback::PayoutNotice;
use ehash::{CreateQuote, QuoteMessage, ReleasePolicy};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::config::{ProxyConfig, UpstreamBlocksConfig, UpstreamConfig};
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{regtest_address, wait_for};
use redis::AsyncCommands;

mod common;

use common::{mine_shares, redis_connection, wallet_minting, Regtest};

const SECRET: &str = "the proxy operator's payout callback secret";
const PAYOUT_MSAT: u64 = 21_000_000_123;
const OPERATOR: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_block_pays_the_proxys_miners_pro_rata() {
    let chain = Regtest::start("full-stack-proxy-epoch");
    // The upstream: a solo hashpool on its own stream and files.
    let upstream_dir = chain.dir.path().join("upstream");
    let mut upstream_config = PoolConfig::ephemeral(
        &upstream_dir,
        chain.node.rpc_url(),
        chain.node.cookie_file(),
        regtest_address().to_string(),
        format!("{}:upstream", chain.stream),
    );
    upstream_config.redis.publisher_id = Some("full-stack-proxy-upstream".into());
    let upstream = Pool::start(upstream_config).await.unwrap();

    // The proxy, under payout epochs, on the test's stream. Its channel upstream asks for a
    // hard target, so no share of the test is an upstream block: the test mines that block.
    let secret_file = chain.dir.path().join("payout-secret");
    hashpool_service::create_secret(&secret_file, SECRET).unwrap();
    let mut config = chain.pool_config();
    config.release_policy = ReleasePolicy::PayoutEpoch;
    config.payout.callback_secret_file = Some(secret_file);
    config.proxy = Some(ProxyConfig {
        upstreams: vec![UpstreamConfig {
            url: format!("stratum2+tcp://{}", upstream.sv2_address()),
            authority_public_key: Some(PoolConfig::default().authority.public_key),
            user_identity: format!("{OPERATOR}.proxy"),
            nominal_hashrate: 1.0e15,
            password: None,
            suggest_difficulty: None,
        }],
        blocks: UpstreamBlocksConfig {
            payout_addresses: vec![regtest_address().to_string()],
            poll_ms: 20,
            ..UpstreamBlocksConfig::default()
        },
        ..ProxyConfig::default()
    });
    // The creates stay on the stream for the test to read: this group never acknowledges.
    let _: () = redis_connection()
        .await
        .xgroup_create_mkstream(&chain.stream, "test-observer", "0")
        .await
        .unwrap();
    let proxy = Pool::start(config).await.unwrap();
    let epochs = proxy.epochs().unwrap().clone();
    let rpc = chain.node.rpc();
    wait_for("the proxy to look at the chain", async || {
        epochs.scan_cursor().is_some()
    })
    .await;
    let mint = MintServer::start(MintConfig::ephemeral(
        chain.dir.path(),
        chain.stream.clone(),
    ))
    .await
    .unwrap();

    let (secret_a, secret_b) = (SecretKey::generate(), SecretKey::generate());
    let key =
        |secret: &SecretKey| ehash::LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    let (key_a, key_b) = (key(&secret_a), key(&secret_b));
    assert_eq!(mine_shares(&proxy, &key_a, 2).await, 2);
    assert_eq!(mine_shares(&proxy, &key_b, 5).await, 5);
    let quotes_metrics = proxy.quote_metrics().clone();
    wait_for("every create published", async || {
        quotes_metrics.buffered() == 0
    })
    .await;

    // The upstream finds a block (paying its address): it closes epoch 1 on the proxy.
    let block = chain.node.mine(1).unwrap()[0];
    wait_for("epoch 1 closed by the upstream's block", async || {
        !epochs.closed().is_empty()
    })
    .await;
    let closed = epochs.closed();
    assert_eq!(closed.len(), 1);
    assert_eq!((closed[0].epoch, closed[0].block_hash), (1, block));
    assert_eq!(
        closed[0].height,
        Some(bitcoincore_rpc::RpcApi::get_block_count(rpc).unwrap())
    );

    // The payout lands: the callback releases epoch 1, split by work.
    let (status, answer) = post_payout(&proxy).await;
    assert_eq!(status, 200, "{answer}");
    let creates = epoch_creates(&chain.stream).await;
    assert_eq!(creates.len(), 7);
    let expected = expected_sats(&creates);
    wait_for("the mint pays epoch 1", async || {
        mint.metrics().quotes_paid.get() == 7
    })
    .await;
    for (secret, key) in [(&secret_a, &key_a), (&secret_b, &key_b)] {
        let quotes = QuoteBook::new(mint.mint().clone())
            .quotes_for_key(key)
            .await
            .unwrap();
        let paid: Vec<_> = quotes
            .iter()
            .filter(|quote| quote.state() == MintQuoteState::Paid)
            .collect();
        let wallet = wallet_minting(&mint.url(), CurrencyUnit::Sat, &paid, secret).await;
        assert_eq!(
            u64::from(wallet.total_balance().await.unwrap()),
            expected[key],
            "{key}: its work's share of the payout"
        );
    }
    assert_eq!(expected.values().sum::<u64>(), PAYOUT_MSAT / 1000);
    // Equal work per share: the miners split it 2 : 5, to within a sat.
    let exact_a = (PAYOUT_MSAT / 1000) as f64 * 2.0 / 7.0;
    assert!((expected[&key_a] as f64 - exact_a).abs() < 1.0);

    mint.shutdown().await;
    proxy.shutdown().await;
    upstream.shutdown().await;
}

/// POSTs a signed notice that a payment paid epoch 1 `PAYOUT_MSAT`.
async fn post_payout(pool: &Pool) -> (u16, serde_json::Value) {
    let notice = PayoutNotice {
        payment_id: "ocean-bolt12-payment".to_owned(),
        amount_msat: PAYOUT_MSAT,
        epoch: Some(1),
    };
    common::post_payout(pool, SECRET, &notice).await
}

/// The creates on the stream (all in epoch 1).
async fn epoch_creates(stream: &str) -> Vec<CreateQuote> {
    let entries: redis::streams::StreamRangeReply =
        redis_connection().await.xrange_all(stream).await.unwrap();
    let creates: Vec<CreateQuote> = entries
        .ids
        .iter()
        .filter_map(|entry| {
            let json: String = entry.get(ehash::STREAM_FIELD).unwrap();
            match QuoteMessage::from_json(&json).unwrap() {
                QuoteMessage::Create(create) => Some(create),
                QuoteMessage::Update(_) => None,
            }
        })
        .collect();
    assert!(creates.iter().all(|create| create.epoch == 1));
    creates
}

/// Each key's sats: the payout split over the epoch's quotes by work (largest remainder).
fn expected_sats(creates: &[CreateQuote]) -> HashMap<ehash::LockingPubkey, u64> {
    let work: Vec<_> = creates.iter().map(|q| (q.quote_id, q.amount)).collect();
    let split: BTreeMap<_, _> = ehash::split_payout(PAYOUT_MSAT / 1000, &work).unwrap();
    let mut sats = HashMap::new();
    for quote in creates {
        *sats.entry(quote.locking_pubkey).or_insert(0) += split[&quote.quote_id];
    }
    sats
}
