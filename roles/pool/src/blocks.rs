//! Found blocks to bitcoind: one at a time, only while they still extend the tip, and never in
//! the way of shares, templates or shutdown.
//!
//! On regtest nearly every share is also a block, and a miner with an easy target can find
//! thousands a second; all but the first on each tip are stale. Candidates wait in a short
//! bounded queue (a full queue drops the newest, counted), and each is checked against bitcoind's
//! tip just before it is submitted, so a stale block never reaches `submitblock`.

use std::sync::Arc;

use bitcoincore_rpc::RpcApi;
use stratum_apps::stratum_core::bitcoin::Block;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::chain::{submit_block, BitcoindRpc, BlockOutcome};
use crate::metrics::PoolMetrics;

/// Block candidates that may wait for bitcoind. A real network sees one block in minutes; more
/// than this at once are stale candidates of an easy test network.
const QUEUE: usize = 16;

/// Hands found blocks to the submitting task.
pub struct BlockSubmitter {
    queue: mpsc::Sender<Block>,
    metrics: Arc<PoolMetrics>,
}

impl BlockSubmitter {
    /// Starts the submitting task; it stops when `shutdown` turns true, abandoning what waits.
    pub fn start(
        rpc: Arc<BitcoindRpc>,
        metrics: Arc<PoolMetrics>,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (queue, candidates) = mpsc::channel(QUEUE);
        let task = tokio::spawn(submit_candidates(
            rpc,
            candidates,
            metrics.clone(),
            shutdown,
        ));
        (Self { queue, metrics }, task)
    }

    /// Queues `block` for submission without waiting.
    pub fn offer(&self, block: Block) {
        if self.queue.try_send(block).is_err() {
            self.metrics.blocks_dropped.inc();
            tracing::warn!("block submission queue full; block candidate dropped");
        }
    }
}

async fn submit_candidates(
    rpc: Arc<BitcoindRpc>,
    mut candidates: mpsc::Receiver<Block>,
    metrics: Arc<PoolMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let block = tokio::select! {
            block = candidates.recv() => match block {
                Some(block) => block,
                None => return,
            },
            _ = hashpool_service::stopped(&mut shutdown) => return,
        };
        tokio::select! {
            _ = submit_if_on_tip(&rpc, block, &metrics) => {}
            _ = hashpool_service::stopped(&mut shutdown) => return,
        }
    }
}

async fn submit_if_on_tip(rpc: &Arc<BitcoindRpc>, block: Block, metrics: &PoolMetrics) {
    let tip = {
        let rpc = rpc.clone();
        tokio::task::spawn_blocking(move || rpc.call(|client| client.get_best_block_hash())).await
    };
    match tip {
        Ok(Ok(tip)) if tip != block.header.prev_blockhash => {
            metrics.blocks_skipped_stale.inc();
            tracing::debug!(hash = %block.block_hash(), %tip, "block candidate no longer extends the tip; not submitted");
            return;
        }
        // On the tip, or bitcoind unreachable: submit_block retries while it is away.
        _ => {}
    }
    let counter = match submit_block(rpc.clone(), block).await {
        BlockOutcome::Accepted => &metrics.blocks_found,
        BlockOutcome::Stale => &metrics.blocks_stale,
        BlockOutcome::Rejected => &metrics.blocks_rejected,
    };
    counter.inc();
}
