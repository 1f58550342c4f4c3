//! A flood of block candidates (on regtest, with the least share difficulty, every share is one):
//! the first on a tip reaches bitcoind, none that is already stale does, the pool still follows
//! the tip, and it still shuts down promptly.

use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::CompactTarget;

use super::*;

/// Shares sent in one burst, all on the job current when the burst starts.
const BURST: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_block_candidates_never_reach_bitcoind() {
    let stack = Stack::start("pool-stale-flood").await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    let work = miner.jobs.work().unwrap().clone();
    assert!(
        Target::from_compact(CompactTarget::from_consensus(work.nbits)) >= work.target,
        "on regtest every share at the least difficulty is a block candidate"
    );

    // Every share of the burst builds on the same tip; only the first block can extend it.
    let mut nonce = rand::random::<u32>();
    for sequence in 0..BURST as u32 {
        nonce = work
            .search(nonce.wrapping_add(1), u32::MAX)
            .expect("an easy target");
        miner
            .connection
            .send_mining(MiningOwned::SubmitSharesStandard(
                work.share(sequence, nonce),
            ))
            .await
            .unwrap();
    }
    let mut answered = 0;
    while answered < BURST {
        if matches!(
            miner.next_mining().await,
            MiningOwned::SubmitSharesSuccess(_) | MiningOwned::SubmitSharesError(_)
        ) {
            answered += 1;
        }
    }

    let metrics = stack.pool.metrics().clone();
    wait_for("the first block accepted", || {
        metrics.blocks_found.load(Ordering::Relaxed) >= 1
    })
    .await;
    let skipped_or_dropped = || {
        metrics.blocks_skipped_stale.load(Ordering::Relaxed)
            + metrics.blocks_dropped.load(Ordering::Relaxed)
    };
    // Every accepted share but the first found a block on an old tip.
    let accepted = metrics.shares_accepted.load(Ordering::Relaxed);
    assert!(accepted > 1, "the burst was accepted before the tip moved");
    wait_for("every stale candidate skipped or dropped", || {
        metrics.blocks_found.load(Ordering::Relaxed) + skipped_or_dropped() >= accepted
    })
    .await;
    assert_eq!(metrics.blocks_found.load(Ordering::Relaxed), 1);
    assert_eq!(
        metrics.blocks_stale.load(Ordering::Relaxed),
        0,
        "no stale block was submitted"
    );
    assert_eq!(metrics.blocks_rejected.load(Ordering::Relaxed), 0);
    // bitcoind saw one block: no other branch of any kind.
    let tips = stack.node.rpc().get_chain_tips().unwrap();
    assert_eq!(tips.len(), 1, "only the active chain: {tips:?}");

    // The pool still follows the tip at once: a block from elsewhere reaches the miner.
    let external = stack.node.mine(1).unwrap()[0];
    let next_tip = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let MiningOwned::SetNewPrevHash(prev) = miner.next_mining().await {
                if prev.prev_hash.to_array() == external.to_byte_array() {
                    return;
                }
            }
        }
    })
    .await;
    assert!(next_tip.is_ok(), "the pool followed the new tip within 2 s");

    // And it stops promptly, whatever is still queued.
    let stopped = tokio::time::timeout(Duration::from_secs(5), stack.pool.shutdown()).await;
    assert!(stopped.is_ok(), "the pool stopped within 5 s");
}
