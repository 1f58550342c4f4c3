//! Floods of block candidates (on regtest, with the least share difficulty, every share is one):
//! the first on a tip reaches bitcoind, none that is already stale does, the pool still follows
//! the tip, and it still shuts down promptly.

use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::CompactTarget;
use stratum_apps::stratum_core::mining_sv2::SubmitSharesStandard;

use super::*;

/// Shares sent in one burst, all on the job current when the burst starts.
const BURST: usize = 300;

/// `BURST` valid shares on the miner's current job (each also a regtest block candidate).
fn burst(miner: &Miner) -> Vec<SubmitSharesStandard> {
    let work = miner.jobs.work().unwrap().clone();
    assert!(
        Target::from_compact(CompactTarget::from_consensus(work.nbits)) >= work.target,
        "on regtest every share at the least difficulty is a block candidate"
    );
    let mut nonce = rand::random::<u32>();
    (0..BURST as u32)
        .map(|sequence| {
            nonce = work
                .search(nonce.wrapping_add(1), u32::MAX)
                .expect("an easy target");
            work.share(sequence, nonce)
        })
        .collect()
}

async fn send_all(miner: &mut Miner, shares: Vec<SubmitSharesStandard>) {
    for share in shares {
        miner
            .connection
            .send_mining(MiningOwned::SubmitSharesStandard(share))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_block_candidates_never_reach_bitcoind() {
    // The pool stays on its first tip, so it accepts the whole burst: one block, then 299
    // candidates that no longer extend bitcoind's tip.
    let stack = Stack::start_on_one_tip("pool-stale-flood").await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    let shares = burst(&miner);
    send_all(&mut miner, shares).await;
    let replies = miner.replies(BURST).await;
    assert!(replies
        .iter()
        .all(|reply| matches!(reply, MiningOwned::SubmitSharesSuccess(_))));

    let metrics = stack.pool.metrics().clone();
    let settled = || {
        metrics.blocks_found.get()
            + metrics.blocks_stale.get()
            + metrics.blocks_rejected.get()
            + metrics.blocks_skipped_stale.get()
            + metrics.blocks_dropped.get()
    };
    wait_for(
        "every candidate submitted, skipped or dropped",
        async || settled() == BURST as u64,
    )
    .await;
    assert_eq!(metrics.blocks_found.get(), 1);
    assert_eq!(
        metrics.blocks_stale.get(),
        0,
        "no stale block was submitted"
    );
    assert_eq!(metrics.blocks_rejected.get(), 0);
    // bitcoind saw one block: no other branch of any kind.
    let tips = stack.node.rpc().get_chain_tips().unwrap();
    assert_eq!(tips.len(), 1, "only the active chain: {tips:?}");

    // And the pool stops promptly, whatever is still queued or waiting.
    let stopped = tokio::time::timeout(Duration::from_secs(5), stack.pool.shutdown()).await;
    assert!(stopped.is_ok(), "the pool stopped within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_follows_the_tip_through_a_flood() {
    let stack = Stack::start("pool-tip-flood").await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    let shares = burst(&miner);
    send_all(&mut miner, shares).await;
    // A block from elsewhere, mined while the flood is answered, reaches the miner while the
    // flood's candidates wait. The bound is far above a template poll (50 ms) and far below
    // what a pool that submitted 300 candidates before looking at the tip takes (minutes on a
    // loaded machine), so only that failure trips it, not a slow CI machine.
    let external = stack.node.mine(1).unwrap()[0];
    let next_tip = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let MiningOwned::SetNewPrevHash(prev) = miner.next_mining().await {
                if prev.prev_hash.to_array() == external.to_byte_array() {
                    return;
                }
            }
        }
    })
    .await;
    // (A candidate checked just before the external block landed may still reach bitcoind
    // and lose the race for the height: that is a real stale block, not a flood.)
    assert!(
        next_tip.is_ok(),
        "the pool followed the new tip within 15 s"
    );
    let stopped = tokio::time::timeout(Duration::from_secs(5), stack.pool.shutdown()).await;
    assert!(stopped.is_ok(), "the pool stopped within 5 s");
}
