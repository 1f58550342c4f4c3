//! Lying does not pay: two CPU mining devices of the same real speed, one announcing its true
//! hashrate and one announcing 1 H/s, mine on the same pool (in-process, real bitcoind, Redis and
//! mint). The liar gets the pool's minimum difficulty and many more shares; per hash computed,
//! both are credited the same, within the statistical noise of their share counts, and each is
//! credited exactly the expected hashes its accepted shares prove.

use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hashpool_mining_device::device::{run_device_reconnecting, DeviceConfig, DeviceStats};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_pool::{Pool, PoolConfig};
use hashpool_testkit::{wait_for, wait_for_within};

mod common;

use common::Regtest;

const HONEST: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
const LIAR: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";
/// The pool's minimum share: 2^14 expected hashes (difficulty 2^-18).
const MINIMUM_LOG2: u8 = 14;
/// What the honest device announces: with a share a second wanted, a target of about 2^16 hashes.
const HONEST_HASHRATE: f32 = 65_536.0;
/// Hashes the honest device computes before the run ends: about 256 shares at its first target
/// (its credit per hash then known to about 1/sqrt(256) = 6%), fewer if vardiff raises the
/// target on a slow (loaded) machine; the statistical bounds follow the actual share counts.
const HONEST_HASHES: u64 = 1 << 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_lying_about_its_hashrate_earns_no_more_per_hash() {
    let chain = Regtest::start("honest-liar");
    let mut config = chain.pool_config();
    config.difficulty.minimum = Some(
        ehash::ShareWork::from_log2(MINIMUM_LOG2)
            .unwrap()
            .difficulty(),
    );
    config.vardiff.shares_per_minute = 60.0;
    // On regtest every share is also a block, so the tip would move with every share and both
    // devices would lose work to stale jobs. A tip poll slower than the run keeps the pool on one
    // tip: the blocks after the first are stale candidates the pool does not submit.
    config.bitcoind.template_poll_ms = 600_000;
    let pool = Pool::start(config).await.unwrap();
    let mint = MintServer::start(MintConfig::ephemeral(
        chain.dir.path(),
        chain.stream.clone(),
    ))
    .await
    .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let device = |identity: &str, nominal_hashrate: f32| {
        let stats = Arc::new(DeviceStats::default());
        let config = DeviceConfig {
            pool_address: pool.sv2_address().to_string(),
            authority: Some(PoolConfig::default().authority.public_key),
            identity: identity.to_owned(),
            threads: 1,
            nominal_hashrate,
        };
        let task = tokio::spawn(run_device_reconnecting(
            config,
            stats.clone(),
            stopped.clone(),
        ));
        (stats, task)
    };
    let (honest, honest_task) = device(HONEST, HONEST_HASHRATE);
    let (liar, liar_task) = device(LIAR, 1.0);
    wait_for_hashes(&honest, HONEST_HASHES).await;
    stop.send(true).unwrap();
    honest_task.await.unwrap().unwrap();
    liar_task.await.unwrap().unwrap();
    // The pool answers every share a device sent before it sees the device's connection close.
    wait_for("the pool saw both devices leave", async || {
        pool.metrics().connections.get() == 0
    })
    .await;

    let stats = pool.stats();
    let miner = |key: &str| {
        stats
            .miners
            .iter()
            .find(|miner| miner.locking_key == key)
            .unwrap()
    };
    let mut ratios = Vec::new();
    for (key, device) in [(HONEST, &honest), (LIAR, &liar)] {
        let credited = miner(key);
        // The pool may have accepted a last share whose answer the stopped device never read.
        assert!(credited.shares >= device.accepted.load(Ordering::Relaxed));
        assert_eq!(
            credited.credited_hashes, credited.proven_hashes,
            "{key}: credited exactly what its shares prove"
        );
        let hashes = device.hashes.load(Ordering::Relaxed) as f64;
        let ratio = credited.credited_hashes as f64 / hashes;
        // The shares a device finds in `hashes` hashes are a Poisson count; its credit per hash
        // is 1 with a relative standard deviation of 1/sqrt(shares). Five of those.
        let bound = 5.0 / (credited.shares as f64).sqrt();
        println!(
            "{key}: {} shares, {} hashes computed, credited {} = {ratio:.3} per hash (bound ±{bound:.3})",
            credited.shares, hashes, credited.credited_hashes
        );
        assert!(
            (ratio - 1.0).abs() <= bound,
            "{key}: credited {ratio:.3}× its hashes"
        );
        ratios.push((ratio, credited.shares as f64));

        // The mint holds exactly that credit in this key's quotes.
        let key = ehash::LockingPubkey::from_str(key).unwrap();
        let book = QuoteBook::new(mint.mint().clone());
        wait_for("the mint has every quote", async || {
            mint.metrics().quotes_paid.get() >= stats.shares_accepted
        })
        .await;
        let quotes = book.quotes_for_key(&key).await.unwrap();
        let amounts: u64 = quotes
            .iter()
            .map(|quote| quote.amount.as_ref().unwrap().value())
            .sum();
        assert_eq!(
            u128::from(amounts) << ehash::HASHES_PER_UNIT_LOG2,
            credited.credited_hashes
        );
    }
    let [(honest_ratio, honest_shares), (liar_ratio, liar_shares)] = ratios[..] else {
        unreachable!()
    };
    assert!(
        liar_shares > honest_shares,
        "the liar got the easier target: {liar_shares} vs {honest_shares} shares"
    );
    let bound = 5.0 * (1.0 / honest_shares + 1.0 / liar_shares).sqrt();
    assert!(
        (liar_ratio - honest_ratio).abs() <= bound,
        "per hash, the liar earned {liar_ratio:.3} and the honest miner {honest_ratio:.3}"
    );

    mint.shutdown().await;
    pool.shutdown().await;
}

async fn wait_for_hashes(device: &DeviceStats, hashes: u64) {
    let what = format!("the honest device to compute {hashes} hashes");
    wait_for_within(what, std::time::Duration::from_secs(240), async || {
        device.hashes.load(Ordering::Relaxed) >= hashes
    })
    .await;
}
