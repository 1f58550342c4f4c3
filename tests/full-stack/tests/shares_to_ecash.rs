//! Shares in, ecash out: the pool and the mint (in-process, on real Redis and the pinned
//! bitcoind) with a miner over Noise and a cdk wallet over HTTP. The wallet ends up with exactly
//! the work the pool credited for the shares it accepted, one quote per share.

use std::str::FromStr;
use std::sync::Arc;

use cdk::amount::SplitTarget;
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, SecretKey};
use cdk::wallet::WalletBuilder;
use cdk::Amount;
use hashpool_mining_device::{JobTracker, PoolConnection, CPU_MINER, REQUIRES_STANDARD_JOBS};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{regtest_address, unique_redis_prefix, wait_for, Bitcoind};
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

const SHARES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_mints_exactly_the_credited_work_of_accepted_shares() {
    let node = Bitcoind::start().unwrap();
    node.mine(101).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("{}quotes", unique_redis_prefix("full-stack"));

    let pool = Pool::start(PoolConfig::ephemeral(
        dir.path(),
        node.rpc_url(),
        node.cookie_file(),
        regtest_address().to_string(),
        stream.clone(),
    ))
    .await
    .unwrap();
    let mint = MintServer::start(MintConfig::ephemeral(dir.path(), stream))
        .await
        .unwrap();

    // The miner's wallet key is its channel identity.
    let secret = SecretKey::generate();
    let key = ehash::LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    let mut miner = PoolConnection::connect(
        &pool.sv2_address().to_string(),
        Some(PoolConfig::default().authority.public_key),
    )
    .await
    .unwrap();
    miner
        .setup(REQUIRES_STANDARD_JOBS, &CPU_MINER)
        .await
        .unwrap();
    let opened = miner
        .open_standard(1, &format!("{key}.rig"), 0.01)
        .await
        .unwrap()
        .unwrap();
    let mut jobs = JobTracker::new(
        opened.channel_id,
        Target::from_le_bytes(opened.target.to_array()),
    );
    let mut sequence = 0;
    let mut answered = 0;
    while answered < SHARES {
        let Some(work) = jobs.work().cloned() else {
            let AnyMessageOwned::Mining(message) = miner.recv().await.unwrap() else {
                continue;
            };
            jobs.on_message(&message);
            continue;
        };
        let nonce = work.search(rand::random(), u32::MAX).unwrap();
        miner
            .send_mining(MiningOwned::SubmitSharesStandard(
                work.share(sequence, nonce),
            ))
            .await
            .unwrap();
        sequence += 1;
        loop {
            let AnyMessageOwned::Mining(message) = miner.recv().await.unwrap() else {
                continue;
            };
            if matches!(
                message,
                MiningOwned::SubmitSharesSuccess(_) | MiningOwned::SubmitSharesError(_)
            ) {
                answered += 1;
                break;
            }
            jobs.on_message(&message);
        }
    }

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

    let wallet = WalletBuilder::new()
        .mint_url(mint.url().parse().unwrap())
        .unit(CurrencyUnit::custom(ehash::UNIT))
        .localstore(Arc::new(cdk_sqlite::wallet::memory::empty().await.unwrap()))
        .seed(rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap())
        .without_rate_limiting()
        .build()
        .unwrap();
    for quote in &quotes {
        let amount = quote.amount.as_ref().unwrap().value();
        wallet
            .localstore
            .add_mint_quote(cdk::wallet::MintQuote::new(
                quote.id.to_string(),
                wallet.mint_url.clone(),
                PaymentMethod::Custom(ehash::PAYMENT_METHOD.into()),
                Some(Amount::from(amount)),
                wallet.unit.clone(),
                quote.request.clone(),
                quote.expiry,
                Some(secret.clone()),
            ))
            .await
            .unwrap();
        wallet
            .mint(&quote.id.to_string(), SplitTarget::default(), None)
            .await
            .unwrap();
    }
    assert_eq!(
        u64::from(wallet.total_balance().await.unwrap()),
        credited,
        "minted ecash equals the work the pool credited, exactly"
    );

    mint.shutdown().await;
    pool.shutdown().await;
}
