//! Two pools (distinct `publisher_id`s) publish to one quote stream, with one mint consuming it:
//! every accepted share of either pool becomes exactly one quote, PAID, for its miner's key.

use std::str::FromStr;
use std::sync::atomic::Ordering;

use cdk::nuts::{MintQuoteState, SecretKey};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{regtest_address, wait_for};

mod common;

use common::{mine_shares, Regtest};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pools_on_one_stream_each_land_every_quote_once() {
    let chain = Regtest::start("full-stack-two-pools");
    let pool_on = |name: &str| {
        let mut config = PoolConfig::ephemeral(
            &chain.dir.path().join(name),
            chain.node.rpc_url(),
            chain.node.cookie_file(),
            regtest_address().to_string(),
            chain.stream.clone(),
        );
        config.redis.publisher_id = Some(format!("full-stack-two-pools-{name}"));
        config
    };
    let first = Pool::start(pool_on("first")).await.unwrap();
    let second = Pool::start(pool_on("second")).await.unwrap();
    let mint = MintServer::start(MintConfig::ephemeral(
        chain.dir.path(),
        chain.stream.clone(),
    ))
    .await
    .unwrap();

    let key =
        |secret: &SecretKey| ehash::LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    let (alice, bob) = (SecretKey::generate(), SecretKey::generate());
    // Alice mines on both pools, Bob on the second: the stream interleaves the two publishers.
    let mut accepted = 0;
    for (pool, miner, shares) in [
        (&first, &alice, 4),
        (&second, &bob, 4),
        (&second, &alice, 3),
    ] {
        accepted += mine_shares(pool, &key(miner), shares).await as u64;
    }
    let published = |pool: &Pool| pool.quote_metrics().published.load(Ordering::Relaxed);
    let pools_accepted =
        first.metrics().shares_accepted.get() + second.metrics().shares_accepted.get();
    assert_eq!(pools_accepted, accepted);
    wait_for("both pools' quote messages acknowledged", async || {
        published(&first) + published(&second) == 2 * accepted
    })
    .await;
    wait_for("the mint pays every quote", async || {
        mint.metrics().quotes_paid.get() == accepted
    })
    .await;

    let book = QuoteBook::new(mint.mint().clone());
    let mut stored = 0;
    for miner in [&alice, &bob] {
        let quotes = book.quotes_for_key(&key(miner)).await.unwrap();
        assert!(quotes
            .iter()
            .all(|quote| quote.state() == MintQuoteState::Paid));
        stored += quotes.len() as u64;
    }
    assert_eq!(
        stored, accepted,
        "every accepted share once, from either pool"
    );
    assert_eq!(mint.metrics().quotes_created.get(), accepted);

    mint.shutdown().await;
    first.shutdown().await;
    second.shutdown().await;
}
