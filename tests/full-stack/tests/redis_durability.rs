//! The shipped `config/redis.conf` keeps every acknowledged quote message: Redis killed with
//! SIGKILL (no shutdown, nothing flushed on the way out) and started again while the mint is
//! down loses no accepted share's quote, and the mint, started afterwards, stores each exactly
//! once.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::Ordering;

use cdk::nuts::{MintQuoteState, SecretKey};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::Pool;
use hashpool_testkit::{wait_for, RedisServer};

mod common;

use common::{mine_shares, Regtest};

const SHARES: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_while_the_mint_is_down_loses_no_accepted_shares_quote() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/redis.conf");
    let mut redis = RedisServer::start_with_config(&shipped).unwrap();
    let chain = Regtest::start("full-stack-redis-kill");
    let mut config = chain.pool_config();
    config.redis.url = redis.url();
    let pool = Pool::start(config).await.unwrap();

    let secret = SecretKey::generate();
    let key = ehash::LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    // (On regtest each share is a block: one found on a tip that just moved is stale.)
    let accepted = mine_shares(&pool, &key, SHARES).await as u64;
    assert!(accepted > 0);
    // Every create and PAID update acknowledged by Redis, none left in the pool.
    let quotes = pool.quote_metrics().clone();
    wait_for("every quote message acknowledged", async || {
        quotes.published.load(Ordering::Relaxed) == 2 * accepted && quotes.buffered() == 0
    })
    .await;
    pool.shutdown().await;

    redis.kill();
    redis.restart().unwrap();

    let mut mint_config = MintConfig::ephemeral(chain.dir.path(), chain.stream.clone());
    mint_config.redis.url = redis.url();
    let mint = MintServer::start(mint_config).await.unwrap();
    wait_for("the mint stores and pays every quote", async || {
        mint.metrics().quotes_paid.get() == accepted
    })
    .await;
    let stored = QuoteBook::new(mint.mint().clone())
        .quotes_for_key(&key)
        .await
        .unwrap();
    assert_eq!(stored.len() as u64, accepted, "each quote exactly once");
    assert!(stored
        .iter()
        .all(|quote| quote.state() == MintQuoteState::Paid));
    mint.shutdown().await;
}
