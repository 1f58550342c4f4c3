//! A payout epoch end to end, on the pool and the mint in-process with real Redis and the pinned
//! bitcoind: a miner's shares wait in epoch 1 as `sat` quotes, the pool's block closes it, a
//! signed payout callback releases it, the mint splits the payout over exactly the epoch's quotes
//! by work, and the miner's wallet mints exactly the payout in sats. (The Lightning side, a
//! BOLT12 payment firing the callback, is the next step of issue 15.)

use std::collections::HashMap;
use std::str::FromStr;

use cdk::nuts::{CurrencyUnit, MintQuoteState, SecretKey};
use ehash::callback::PayoutNotice;
use ehash::ReleasePolicy;
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::Pool;
use hashpool_testkit::wait_for;
use redis::AsyncCommands;

mod common;

use common::{mine_shares, redis_connection, wallet_minting, Regtest};

const SHARES: usize = 6;
const SECRET: &str = "the operator's payout callback secret";
const PAYOUT_MSAT: u64 = 31_250_000_777;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epochs_payout_is_minted_in_sats_exactly() {
    let chain = Regtest::start("full-stack-epoch");
    let stream = chain.stream.clone();
    let secret_file = chain.dir.path().join("payout-secret");
    hashpool_service::create_secret(&secret_file, SECRET).unwrap();
    let mut config = chain.pool_config();
    config.release_policy = ReleasePolicy::PayoutEpoch;
    config.payout.callback_secret_file = Some(secret_file);
    // One tip: the first share's block closes epoch 1; later shares wait in epoch 2.
    config.bitcoind.template_poll_ms = 600_000;
    let pool = Pool::start(config).await.unwrap();
    let mint = MintServer::start(MintConfig::ephemeral(chain.dir.path(), stream.clone()))
        .await
        .unwrap();

    let secret = SecretKey::generate();
    let key = ehash::LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    mine_shares(&pool, &key, SHARES).await;
    wait_for("epoch 1 closed by the pool's block", async || {
        pool.metrics().blocks_found.get() == 1
    })
    .await;
    let quotes_metrics = pool.quote_metrics().clone();
    wait_for("every create published", async || {
        quotes_metrics.buffered() == 0
    })
    .await;

    // The payout lands: the callback releases epoch 1.
    let (status, answer) = post_payout(&pool, "bolt12-payment-1").await;
    assert_eq!(status, 200, "{answer}");
    let payout = PAYOUT_MSAT / 1000;

    // The mint pays exactly epoch 1's quotes, adding up to the payout.
    let epoch_one: HashMap<String, u64> = redis_connection()
        .await
        .hgetall(ehash::epoch_totals_key(&stream, 1))
        .await
        .unwrap();
    let epoch_one_quotes = epoch_one["quotes"];
    assert!(epoch_one_quotes >= 1, "{epoch_one:?}");
    wait_for("the mint pays epoch 1", async || {
        mint.metrics().quotes_paid.get() == epoch_one_quotes
    })
    .await;
    let quotes = QuoteBook::new(mint.mint().clone())
        .quotes_for_key(&key)
        .await
        .unwrap();
    assert_eq!(quotes.len() as u64, pool.metrics().shares_accepted.get());
    let paid: Vec<_> = quotes
        .iter()
        .filter(|quote| quote.state() == MintQuoteState::Paid)
        .collect();
    assert_eq!(paid.len() as u64, epoch_one_quotes);
    let paid_total: u64 = paid.iter().map(|quote| quote.amount_paid().value()).sum();
    assert_eq!(
        paid_total, payout,
        "the epoch's quotes add up to the payout"
    );

    // The miner mints exactly the payout in sats.
    let wallet = wallet_minting(&mint.url(), CurrencyUnit::Sat, &paid, &secret).await;
    assert_eq!(u64::from(wallet.total_balance().await.unwrap()), payout);

    // A replay and a second payment for epoch 1 publish nothing: the mint's store keeps exactly
    // one payout for the epoch.
    // (The mint trims what it acknowledged, so the stream's last id, not its length, tells
    // whether anything was appended.)
    let last_id = || async {
        let info: redis::streams::StreamInfoStreamReply = redis_connection()
            .await
            .xinfo_stream(&stream)
            .await
            .unwrap();
        info.last_generated_id
    };
    let published = last_id().await;
    let (status, replayed) = post_payout(&pool, "bolt12-payment-1").await;
    assert_eq!((status, &replayed["new"]), (200, &serde_json::json!(false)));
    let (status, refused) = post_payout(&pool, "bolt12-payment-2").await;
    assert_eq!(
        (status, &refused["error"]),
        (409, &serde_json::json!("epoch-paid"))
    );
    assert_eq!(last_id().await, published);
    let quotes = QuoteBook::new(mint.mint().clone())
        .quotes_for_key(&key)
        .await
        .unwrap();
    let paid_total: u64 = quotes.iter().map(|quote| quote.amount_paid().value()).sum();
    assert_eq!(paid_total, payout);

    mint.shutdown().await;
    pool.shutdown().await;
}

/// POSTs a signed notice that `payment` paid epoch 1 `PAYOUT_MSAT`.
async fn post_payout(pool: &Pool, payment: &str) -> (u16, serde_json::Value) {
    let notice = PayoutNotice {
        payment_id: payment.to_owned(),
        amount_msat: PAYOUT_MSAT,
        epoch: Some(1),
    };
    common::post_payout(pool, SECRET, &notice).await
}
