//! The pool outlives a bitcoind restart, which also replaces bitcoind's RPC cookie.

use bitcoincore_rpc::RpcApi;
use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::{CompactTarget, Target};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_resume_and_blocks_are_accepted_after_bitcoind_restarts() {
    let mut stack = Stack::start("pool-bitcoind-restart").await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    let cookie_before = std::fs::read_to_string(stack.node.cookie_file()).unwrap();

    tokio::task::block_in_place(|| stack.node.restart()).expect("bitcoind restarts");
    let cookie_after = std::fs::read_to_string(stack.node.cookie_file()).unwrap();
    assert_ne!(
        cookie_before, cookie_after,
        "a restarted bitcoind has a new cookie: the pool's old credentials are refused"
    );

    // Templates resume: a block mined by someone else after the restart reaches the miner as a
    // new tip, which the pool can only learn over RPC with the new cookie.
    let new_tip = stack.node.mine(1).unwrap()[0];
    loop {
        if let MiningOwned::SetNewPrevHash(prev) = miner.next_mining().await {
            if prev.prev_hash.to_array() == new_tip.to_byte_array() {
                break;
            }
        }
    }

    // A share that meets the network target on the new tip is a block bitcoind accepts.
    let work = miner.jobs.work().unwrap().clone();
    assert_eq!(work.prev_hash, new_tip);
    let network = Target::from_compact(CompactTarget::from_consensus(work.nbits));
    let nonce = find_nonce(|nonce| work.meets_target(nonce));
    assert!(network.is_met_by(work.header(nonce).block_hash()));
    let height = stack.node.rpc().get_block_count().unwrap();
    let (reply, _) = miner.submit(work.share(0, nonce)).await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    let metrics = stack.wait_for_block_submitted().await;
    assert_eq!(metrics.blocks_rejected.get(), 0);
    assert_eq!(metrics.blocks_found.get(), 1);
    assert_eq!(stack.node.rpc().get_block_count().unwrap(), height + 1);
    assert_eq!(
        stack.node.rpc().get_best_block_hash().unwrap(),
        work.header(nonce).block_hash()
    );
    stack.pool.shutdown().await;
}
