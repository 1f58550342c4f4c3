//! What the in-process full-stack tests share: a regtest chain with a pool configured on it, and
//! a miner that submits real shares over Noise.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

pub mod lightning;

use hashpool_mining_device::{JobTracker, PoolConnection, CPU_MINER, REQUIRES_STANDARD_JOBS};
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{regtest_address, unique_redis_prefix, Bitcoind};
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tempfile::TempDir;

/// A regtest bitcoind past coinbase maturity, a directory and a quote stream of the test's own.
pub struct Regtest {
    pub node: Bitcoind,
    pub dir: TempDir,
    pub stream: String,
}

impl Regtest {
    pub fn start(test: &str) -> Self {
        let node = Bitcoind::start().unwrap();
        node.mine(101).unwrap();
        Self {
            node,
            dir: tempfile::tempdir().unwrap(),
            stream: format!("{}quotes", unique_redis_prefix(test)),
        }
    }

    /// The pool's test configuration on this chain and stream.
    pub fn pool_config(&self) -> PoolConfig {
        PoolConfig::ephemeral(
            self.dir.path(),
            self.node.rpc_url(),
            self.node.cookie_file(),
            regtest_address().to_string(),
            self.stream.clone(),
        )
    }
}

/// Opens a standard channel as `key.rig` and submits `count` shares one at a time, each after
/// the previous one's answer; returns how many were accepted.
pub async fn mine_shares(pool: &Pool, key: &ehash::LockingPubkey, count: usize) -> usize {
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
    let (mut sequence, mut accepted) = (0, 0);
    while (sequence as usize) < count {
        let Some(work) = jobs.work().cloned() else {
            if let AnyMessageOwned::Mining(message) = miner.recv().await.unwrap() {
                jobs.on_message(&message);
            }
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
            match message {
                MiningOwned::SubmitSharesSuccess(_) => {
                    accepted += 1;
                    break;
                }
                MiningOwned::SubmitSharesError(_) => break,
                other => {
                    jobs.on_message(&other);
                }
            }
        }
    }
    accepted
}

/// A cdk wallet on the mint at `mint_url` for `unit` that adopted `quotes` with their NUT-20
/// key and minted each of them.
pub async fn wallet_minting(
    mint_url: &str,
    unit: cdk::nuts::CurrencyUnit,
    quotes: &[&cdk::mint::MintQuote],
    secret: &cdk::nuts::SecretKey,
) -> cdk::wallet::Wallet {
    let wallet = cdk::wallet::WalletBuilder::new()
        .mint_url(mint_url.parse().unwrap())
        .unit(unit)
        .localstore(std::sync::Arc::new(
            cdk_sqlite::wallet::memory::empty().await.unwrap(),
        ))
        .seed(rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap())
        .without_rate_limiting()
        .build()
        .unwrap();
    for quote in quotes {
        let amount = quote
            .amount
            .as_ref()
            .map(|amount| cdk::Amount::from(amount.value()));
        wallet
            .localstore
            .add_mint_quote(cdk::wallet::MintQuote::new(
                quote.id.to_string(),
                wallet.mint_url.clone(),
                cdk::nuts::PaymentMethod::Custom(ehash::PAYMENT_METHOD.into()),
                amount,
                wallet.unit.clone(),
                quote.request.clone(),
                quote.expiry,
                Some(secret.clone()),
            ))
            .await
            .unwrap();
        wallet
            .mint(
                &quote.id.to_string(),
                cdk::amount::SplitTarget::default(),
                None,
            )
            .await
            .unwrap();
    }
    wallet
}

/// A connection to the shared Redis the tests' streams live in.
pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// POSTs a payout callback for `notice` to `pool`, signed now with `secret`; the status and the
/// JSON answer.
pub async fn post_payout(
    pool: &Pool,
    secret: &str,
    notice: &ehash::callback::PayoutNotice,
) -> (u16, serde_json::Value) {
    use ehash::callback;
    let body = serde_json::to_string(notice).unwrap();
    let now = hashpool_service::unix_now();
    let signature = callback::sign(secret.as_bytes(), now, body.as_bytes());
    let headers = [
        (callback::TIMESTAMP_HEADER, now.to_string()),
        (callback::SIGNATURE_HEADER, signature),
    ];
    hashpool_testkit::post_json(pool.http_address(), "/payout", &headers, &body).await
}
