//! Proxy mode, payout epochs: the upstream pool's blocks close epochs.
//!
//! The proxy learns that its upstream found a block from the chain, not from the upstream: a new
//! block whose coinbase carries one of the upstream's tags in its scriptSig (OCEAN writes
//! `OCEAN.XYZ`) or pays one of its payout scripts. Each such block closes the open epoch once,
//! whatever rescans or restarts happen; how far the chain was looked at is kept in the epoch
//! book, written with the close.

use std::sync::Arc;
use std::time::Duration;

use bitcoincore_rpc::RpcApi;
use stratum_apps::stratum_core::bitcoin::{BlockHash, ScriptBuf, Transaction};

use crate::chain::{BitcoindRpc, PollingThread};
use crate::epochs::{EpochBook, ScanCursor};

/// Blocks walked back from the tip at most, per poll (a day of blocks on mainnet).
const MAX_WALK_BACK: usize = 144;

/// What identifies the upstream's blocks.
#[derive(Debug, Clone, Default)]
pub struct UpstreamBlockMatcher {
    pub coinbase_tags: Vec<Vec<u8>>,
    pub payout_scripts: Vec<ScriptBuf>,
}

impl UpstreamBlockMatcher {
    pub fn matches(&self, coinbase: &Transaction) -> bool {
        let script_sig = coinbase
            .input
            .first()
            .map(|input| input.script_sig.as_bytes())
            .unwrap_or_default();
        let tagged = self.coinbase_tags.iter().any(|tag| {
            !tag.is_empty() && script_sig.windows(tag.len()).any(|window| window == tag)
        });
        tagged
            || coinbase
                .output
                .iter()
                .any(|output| self.payout_scripts.contains(&output.script_pubkey))
    }
}

/// Polls bitcoind on a thread of its own (RPC calls block); stops when dropped.
pub struct UpstreamBlockWatch {
    _thread: PollingThread,
}

impl UpstreamBlockWatch {
    pub fn start(
        rpc: Arc<BitcoindRpc>,
        matcher: UpstreamBlockMatcher,
        epochs: Arc<EpochBook>,
        poll: Duration,
    ) -> Self {
        let mut last_tip = None;
        let thread = PollingThread::start("upstream-blocks", poll, move || {
            match scan(&rpc, &matcher, &epochs, last_tip) {
                Ok(tip) => last_tip = Some(tip),
                Err(error) => tracing::warn!(%error, "cannot scan for upstream blocks"),
            }
        });
        Self { _thread: thread }
    }
}

#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error(transparent)]
    Rpc(#[from] bitcoincore_rpc::Error),
    #[error(transparent)]
    Epochs(#[from] crate::epochs::EpochError),
}

/// Looks at the blocks since the cursor, oldest first, and returns the tip it got to.
fn scan(
    rpc: &BitcoindRpc,
    matcher: &UpstreamBlockMatcher,
    epochs: &EpochBook,
    last_tip: Option<BlockHash>,
) -> Result<BlockHash, ScanError> {
    let tip = rpc.call(|client| client.get_best_block_hash())?;
    if last_tip == Some(tip) {
        return Ok(tip);
    }
    let Some(cursor) = epochs.scan_cursor() else {
        // The first start: blocks found before the proxy ran close nothing.
        let height = rpc
            .call(|client| client.get_block_header_info(&tip))?
            .height as u64;
        epochs.advance_cursor(ScanCursor {
            height,
            block_hash: tip,
        })?;
        return Ok(tip);
    };
    // The cursor is written with each close, and once at the end for the blocks after the last
    // close: one durable write per poll, not one per block of a catch-up.
    let mut unwritten = None;
    for block in new_blocks(rpc, tip, cursor)? {
        let coinbase = rpc
            .call(|client| client.get_block(&block.block_hash))?
            .txdata;
        if coinbase.first().is_some_and(|tx| matcher.matches(tx)) {
            epochs.close_for_upstream(block)?;
            unwritten = None;
        } else {
            unwritten = Some(block);
        }
    }
    if let Some(block) = unwritten {
        epochs.advance_cursor(block)?;
    }
    Ok(tip)
}

/// The main-chain blocks above the cursor up to `tip`, oldest first (at most
/// [`MAX_WALK_BACK`]). A cursor no longer on the main chain (a reorg) is logged; the blocks of
/// the new branch above its height are still scanned.
fn new_blocks(
    rpc: &BitcoindRpc,
    tip: BlockHash,
    cursor: ScanCursor,
) -> Result<Vec<ScanCursor>, bitcoincore_rpc::Error> {
    let mut blocks = Vec::new();
    let mut next = Some(tip);
    while let Some(hash) = next {
        if hash == cursor.block_hash || blocks.len() == MAX_WALK_BACK {
            break;
        }
        let header = rpc.call(|client| client.get_block_header_info(&hash))?;
        let height = header.height as u64;
        if height <= cursor.height {
            tracing::warn!(cursor = %cursor.block_hash, cursor_height = cursor.height, "the last block scanned is no longer on the main chain (reorg)");
            break;
        }
        blocks.push(ScanCursor {
            height,
            block_hash: hash,
        });
        next = header.previous_block_hash;
    }
    blocks.reverse();
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::stratum_core::bitcoin::blockdata::script::Builder;
    use stratum_apps::stratum_core::bitcoin::{
        absolute::LockTime, transaction::Version, Amount, OutPoint, Sequence, TxIn, TxOut, Witness,
    };

    fn coinbase(script_sig: &[u8], pays: ScriptBuf) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script_sig.to_vec()),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(1),
                script_pubkey: pays,
            }],
        }
    }

    #[test]
    fn the_upstreams_blocks_are_known_by_tag_or_payout() {
        let upstream_script = Builder::new().push_int(1).into_script();
        let other_script = Builder::new().push_int(2).into_script();
        let matcher = UpstreamBlockMatcher {
            coinbase_tags: vec![b"OCEAN.XYZ".to_vec()],
            payout_scripts: vec![upstream_script.clone()],
        };
        assert!(matcher.matches(&coinbase(b"\x03abc/OCEAN.XYZ/", other_script.clone())));
        assert!(matcher.matches(&coinbase(b"\x03abc", upstream_script)));
        assert!(!matcher.matches(&coinbase(b"\x03abc/OCEAN.XY", other_script.clone())));
        assert!(!UpstreamBlockMatcher {
            coinbase_tags: vec![Vec::new()],
            payout_scripts: Vec::new(),
        }
        .matches(&coinbase(b"anything", other_script)));
    }
}
