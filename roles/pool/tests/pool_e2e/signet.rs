//! The pool on a signet: a test signet of the pinned bitcoind whose challenge is `OP_TRUE`, at
//! signet's least difficulty (about 2^22 hashes a block). There bitcoind refuses templates to a
//! client that does not name the signet rule, and, unlike on regtest, a share can prove its work
//! without being a block: what the load and soak benchmarks mine.

use super::*;
use hashpool_testkit::Chain;
use stratum_apps::stratum_core::bitcoin::CompactTarget;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_signet_shares_that_are_not_blocks_are_credited_and_a_block_is_accepted() {
    let node = Bitcoind::start_on(Chain::Signet).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, stream) = test_pool_config(&node, dir.path(), "pool-signet");
    let pool = Pool::start(config).await.expect("the pool starts");
    let mut miner = Miner::open_at(pool.sv2_address(), &format!("{KEY}.signet"), 1.0).await;
    let work = miner.jobs.work().unwrap().clone();
    let network = Target::from_compact(CompactTarget::from_consensus(work.nbits));
    assert!(
        network.difficulty_float() > work.target.difficulty_float(),
        "the network target is harder than the channel's"
    );

    let share = work
        .search_for(rand::random(), u32::MAX, |hash| {
            work.target.is_met_by(hash) && !network.is_met_by(hash)
        })
        .unwrap();
    let (reply, _) = miner.submit(work.share(miner.sequence, share)).await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    assert_eq!(pool.metrics().shares_accepted.get(), 1);
    assert_eq!(
        node.rpc().get_block_count().unwrap(),
        0,
        "a share, not a block"
    );

    let block = work
        .search_for(rand::random(), u32::MAX, |hash| network.is_met_by(hash))
        .unwrap();
    let (reply, _) = miner.submit(work.share(miner.sequence, block)).await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    // bitcoind holds the block a moment before the pool has its answer and counts it.
    let metrics = pool.metrics().clone();
    wait_for("the pool to count the signet block", async || {
        metrics.blocks_found.get() == 1
    })
    .await;
    assert_eq!(node.rpc().get_block_count().unwrap(), 1);
    let tip = node.rpc().get_best_block_hash().unwrap();
    let coinbase = node.rpc().get_block(&tip).unwrap().txdata.remove(0);
    assert_eq!(
        coinbase.output[0].script_pubkey,
        node.address().script_pubkey(),
        "the block pays the pool's signet address"
    );

    let quotes = pool.quote_metrics().clone();
    wait_for("both shares' quotes published", async || {
        quotes.published.load(Ordering::Relaxed) == 4
    })
    .await;
    let creates = stream_messages(SHARED_REDIS, &stream)
        .await
        .into_iter()
        .filter(|message| matches!(message, QuoteMessage::Create(_)))
        .count();
    assert_eq!(creates, 2, "the share and the block each make one quote");
    pool.shutdown().await;
}
