//! Found blocks to bitcoind: one at a time, only while they still extend the tip, and never in
//! the way of shares, templates or shutdown.
//!
//! On regtest nearly every share is also a block, and a miner with an easy target can find
//! thousands a second; all but the first on each tip are stale. Candidates wait in a short
//! bounded queue (a full queue drops the newest, counted), and each is checked against bitcoind's
//! tip just before it is submitted, so a stale block never reaches `submitblock`.

use std::sync::Arc;

use bitcoincore_rpc::RpcApi;
use stratum_apps::stratum_core::bitcoin::{Block, BlockHash};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::chain::{submit_block, BitcoindRpc, BlockOutcome};
use crate::dashboard::Dashboard;
use crate::epochs::EpochBook;
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
    /// With `epochs` (the payout-epoch policy), each block bitcoind accepts closes the open
    /// epoch.
    pub fn start(
        rpc: Arc<BitcoindRpc>,
        metrics: Arc<PoolMetrics>,
        dashboard: Arc<Dashboard>,
        epochs: Option<Arc<EpochBook>>,
        shutdown: watch::Receiver<bool>,
    ) -> (Self, JoinHandle<()>) {
        let (queue, candidates) = mpsc::channel(QUEUE);
        let submitter = Submitter {
            rpc,
            metrics: metrics.clone(),
            dashboard,
            epochs,
        };
        let task = tokio::spawn(submitter.run(candidates, shutdown));
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

/// The submitting task's side.
struct Submitter {
    rpc: Arc<BitcoindRpc>,
    metrics: Arc<PoolMetrics>,
    dashboard: Arc<Dashboard>,
    epochs: Option<Arc<EpochBook>>,
}

impl Submitter {
    async fn run(self, mut candidates: mpsc::Receiver<Block>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let block = tokio::select! {
                block = candidates.recv() => match block {
                    Some(block) => block,
                    None => return,
                },
                _ = hashpool_service::stopped(&mut shutdown) => return,
            };
            tokio::select! {
                _ = self.submit_if_on_tip(block) => {}
                _ = hashpool_service::stopped(&mut shutdown) => return,
            }
        }
    }

    async fn submit_if_on_tip(&self, block: Block) {
        let tip = {
            let rpc = self.rpc.clone();
            tokio::task::spawn_blocking(move || rpc.call(|client| client.get_best_block_hash()))
                .await
        };
        match tip {
            Ok(Ok(tip)) if tip != block.header.prev_blockhash => {
                self.metrics.blocks_skipped_stale.inc();
                tracing::debug!(hash = %block.block_hash(), %tip, "block candidate no longer extends the tip; not submitted");
                return;
            }
            // On the tip, or bitcoind unreachable: submit_block retries while it is away.
            _ => {}
        }
        let (hash, height) = (block.block_hash(), block.bip34_block_height().ok());
        let counter = match submit_block(self.rpc.clone(), block).await {
            BlockOutcome::Accepted => {
                self.dashboard.block_found(hash, height);
                self.close_epoch(hash, height);
                &self.metrics.blocks_found
            }
            BlockOutcome::Stale => &self.metrics.blocks_stale,
            BlockOutcome::Rejected => &self.metrics.blocks_rejected,
        };
        counter.inc();
    }

    /// The pool's accepted block ends the open payout epoch: its shares are paid from this
    /// block's reward.
    fn close_epoch(&self, hash: BlockHash, height: Option<u64>) {
        let Some(epochs) = &self.epochs else {
            return;
        };
        if let Err(error) = epochs.close(hash, height) {
            // The epoch stays open, so its shares and the next ones share one payout: nothing
            // is lost, but the operator must fix the disk.
            tracing::error!(%error, %hash, "cannot close the payout epoch");
        }
    }
}
