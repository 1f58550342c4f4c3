//! Shares in, ecash out: the pool and the mint (in-process, on real Redis and the pinned
//! bitcoind) with a miner over Noise and a cdk wallet over HTTP. The wallet ends up with exactly
//! the work the pool credited for the shares it accepted, one quote per share.

use std::str::FromStr;

use cdk::nuts::{CurrencyUnit, MintQuoteState, SecretKey};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::Pool;
use hashpool_testkit::wait_for;

mod common;

use common::{mine_shares, wallet_minting, Regtest};

const SHARES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_mints_exactly_the_credited_work_of_accepted_shares() {
    let chain = Regtest::start("full-stack");
    let pool = Pool::start(chain.pool_config()).await.unwrap();
    let mint = MintServer::start(MintConfig::ephemeral(
        chain.dir.path(),
        chain.stream.clone(),
    ))
    .await
    .unwrap();

    // The miner's wallet key is its channel identity.
    let secret = SecretKey::generate();
    let key = ehash::LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    mine_shares(&pool, &key, SHARES).await;

    let accepted = pool.metrics().shares_accepted.get();
    let credited = pool.metrics().work_credited.get();
    assert!(accepted > 0);
    wait_for("the mint to pay every accepted share's quote", async || {
        mint.metrics().quotes_paid.get() >= accepted
    })
    .await;

    // One quote per accepted share, locked to the miner's key, all PAID.
    let quotes = QuoteBook::new(mint.mint().clone())
        .quotes_for_key(&key)
        .await
        .unwrap();
    assert_eq!(quotes.len() as u64, accepted);
    assert!(quotes
        .iter()
        .all(|quote| quote.state() == MintQuoteState::Paid));

    let quotes: Vec<_> = quotes.iter().collect();
    let wallet = wallet_minting(
        &mint.url(),
        CurrencyUnit::custom(ehash::UNIT),
        &quotes,
        &secret,
    )
    .await;
    assert_eq!(
        u64::from(wallet.total_balance().await.unwrap()),
        credited,
        "minted ecash equals the work the pool credited, exactly"
    );

    mint.shutdown().await;
    pool.shutdown().await;
}
