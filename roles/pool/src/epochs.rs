//! Payout epochs: which epoch a share is credited in, and the blocks that closed the others.
//!
//! Under the payout-epoch policy every create carries the open epoch. The pool's own block,
//! once bitcoind accepts it, closes that epoch and opens the next. The state is one small file,
//! written durably before the new epoch is handed to any share, so a restart or crash never
//! moves a share to another epoch. What each epoch holds (its work and quote count) lives in
//! Redis beside its creates (see [`ehash::epoch_totals_key`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use stratum_apps::stratum_core::bitcoin::BlockHash;
use thiserror::Error;

use crate::durable::replace_durably;

#[derive(Debug, Error)]
pub enum EpochError {
    #[error("cannot read the epoch book {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the epoch book {path} is not valid: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the epoch book {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An epoch its block has closed: its shares wait for that block's payout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedEpoch {
    pub epoch: u64,
    pub block_hash: BlockHash,
    pub height: Option<u64>,
}

/// The last block a proxy's upstream-block watch looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor {
    pub height: u64,
    pub block_hash: BlockHash,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochState {
    open: u64,
    closed: Vec<ClosedEpoch>,
    /// Proxy mode: blocks up to here were looked at (see `upstream::blocks`).
    #[serde(default)]
    scan_cursor: Option<ScanCursor>,
}

/// The open epoch (read on every share, so an atomic) and the closed ones, kept in a file.
pub struct EpochBook {
    path: PathBuf,
    open: AtomicU64,
    /// Whether a share was credited in the open epoch (a proxy closes no empty epoch).
    open_has_shares: AtomicBool,
    /// Serializes closes; the file always holds this state.
    state: Mutex<EpochState>,
}

impl EpochBook {
    /// The book in `path`, or a new one at epoch 1 when there is none yet.
    pub fn open(path: &Path) -> Result<Self, EpochError> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| EpochError::Corrupt {
                path: path.to_owned(),
                source,
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let state = EpochState {
                    open: 1,
                    closed: Vec::new(),
                    scan_cursor: None,
                };
                write(path, &state)?;
                state
            }
            Err(source) => {
                return Err(EpochError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        tracing::info!(open_epoch = state.open, closed = state.closed.len(), path = %path.display(), "payout epochs");
        Ok(Self {
            path: path.to_owned(),
            open: AtomicU64::new(state.open),
            // A proxy reads the truth from Redis at start (see `note_shares`); solo pools
            // close on their own blocks, which always carry a share.
            open_has_shares: AtomicBool::new(true),
            state: Mutex::new(state),
        })
    }

    /// A share was credited in the open epoch (or, at start, whether any was).
    pub fn note_shares(&self, any: bool) {
        self.open_has_shares.store(any, Ordering::SeqCst);
    }

    pub fn open_has_shares(&self) -> bool {
        self.open_has_shares.load(Ordering::SeqCst)
    }

    pub fn scan_cursor(&self) -> Option<ScanCursor> {
        self.state.lock().expect("epoch book lock").scan_cursor
    }

    /// Records how far the upstream-block watch has looked, when no block closed an epoch.
    pub fn advance_cursor(&self, cursor: ScanCursor) -> Result<(), EpochError> {
        self.update(|next| next.scan_cursor = Some(cursor))
    }

    /// Proxy mode: the upstream pool found `block_hash`; closes the open epoch at it and moves
    /// the cursor there, in one write. A block that already closed an epoch closes nothing (so
    /// rescans and restarts close one epoch per block), and neither does a block found while the
    /// open epoch has no share: its payout goes to the oldest unpaid epoch.
    pub fn close_for_upstream(
        &self,
        cursor: ScanCursor,
    ) -> Result<Option<ClosedEpoch>, EpochError> {
        let has_shares = self.open_has_shares();
        let (closed, seen) = self.update(|next| {
            next.scan_cursor = Some(cursor);
            let seen = next
                .closed
                .iter()
                .any(|closed| closed.block_hash == cursor.block_hash);
            let closed = (!seen && has_shares)
                .then(|| next.close_open(cursor.block_hash, Some(cursor.height)));
            (closed, seen)
        })?;
        match &closed {
            Some(closed) => {
                self.note_shares(false);
                tracing::info!(epoch = closed.epoch, block_hash = %cursor.block_hash, height = cursor.height, "payout epoch closed by the upstream's block");
            }
            None if !seen => {
                tracing::warn!(block_hash = %cursor.block_hash, height = cursor.height, "the upstream found a block while the open epoch has no share: nothing closed")
            }
            None => {}
        }
        Ok(closed)
    }

    /// The epoch a share accepted now is credited in.
    pub fn current(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes the open epoch with the block that ended it and opens the next. The file is
    /// written before any share sees the new epoch; if it cannot be, the epoch stays open.
    pub fn close(
        &self,
        block_hash: BlockHash,
        height: Option<u64>,
    ) -> Result<ClosedEpoch, EpochError> {
        let closed = self.update(|next| next.close_open(block_hash, height))?;
        tracing::info!(epoch = closed.epoch, %block_hash, ?height, "payout epoch closed by the pool's block");
        Ok(closed)
    }

    /// The closed epochs, oldest first.
    pub fn closed(&self) -> Vec<ClosedEpoch> {
        self.state.lock().expect("epoch book lock").closed.clone()
    }

    /// Applies `change` to a copy of the state, writes it durably, and only then makes it the
    /// book's (so a failed write changes nothing, and no share sees a new epoch before the file
    /// holds it).
    fn update<T>(&self, change: impl FnOnce(&mut EpochState) -> T) -> Result<T, EpochError> {
        let mut state = self.state.lock().expect("epoch book lock");
        let mut next = state.clone();
        let result = change(&mut next);
        write(&self.path, &next)?;
        *state = next;
        self.open.store(state.open, Ordering::SeqCst);
        Ok(result)
    }
}

impl EpochState {
    /// Closes the open epoch at `block_hash` and opens the next.
    fn close_open(&mut self, block_hash: BlockHash, height: Option<u64>) -> ClosedEpoch {
        let closed = ClosedEpoch {
            epoch: self.open,
            block_hash,
            height,
        };
        self.closed.push(closed.clone());
        self.open += 1;
        closed
    }
}

fn write(path: &Path, state: &EpochState) -> Result<(), EpochError> {
    let json = serde_json::to_vec_pretty(state).expect("the epoch state serializes");
    replace_durably(path, &json).map_err(|source| EpochError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratum_apps::stratum_core::bitcoin::hashes::Hash;

    #[test]
    fn epochs_close_in_order_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool/epochs.json");
        let book = EpochBook::open(&path).unwrap();
        assert_eq!(book.current(), 1);
        let block = BlockHash::from_byte_array([3; 32]);
        let closed = book.close(block, Some(102)).unwrap();
        assert_eq!(
            closed,
            ClosedEpoch {
                epoch: 1,
                block_hash: block,
                height: Some(102)
            }
        );
        assert_eq!(book.current(), 2);
        drop(book);

        let reopened = EpochBook::open(&path).unwrap();
        assert_eq!(
            reopened.current(),
            2,
            "a restart does not move the open epoch"
        );
        assert_eq!(reopened.closed(), vec![closed]);
    }

    #[test]
    fn an_upstream_block_closes_one_epoch_once_and_never_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs.json");
        let book = EpochBook::open(&path).unwrap();
        let at = |height: u64, byte: u8| ScanCursor {
            height,
            block_hash: BlockHash::from_byte_array([byte; 32]),
        };
        let closed = book.close_for_upstream(at(200, 7)).unwrap().unwrap();
        assert_eq!((closed.epoch, closed.height), (1, Some(200)));
        assert_eq!(book.current(), 2);
        // Epoch 2 has no share yet: the next upstream block closes nothing.
        assert_eq!(book.close_for_upstream(at(201, 8)).unwrap(), None);
        book.note_shares(true);
        // The same block seen again (a rescan) closes nothing either.
        assert_eq!(book.close_for_upstream(at(200, 7)).unwrap(), None);
        assert_eq!(book.current(), 2);
        drop(book);

        let reopened = EpochBook::open(&path).unwrap();
        assert_eq!(reopened.scan_cursor(), Some(at(200, 7)));
        assert_eq!(reopened.closed().len(), 1);
        assert_eq!(reopened.close_for_upstream(at(200, 7)).unwrap(), None);
    }

    #[test]
    fn a_corrupt_book_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs.json");
        std::fs::write(&path, b"{\"open\": ").unwrap();
        assert!(matches!(
            EpochBook::open(&path),
            Err(EpochError::Corrupt { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"open\": ");
    }

    #[test]
    fn an_unwritable_book_keeps_the_epoch_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("epochs.json");
        let book = EpochBook::open(&path).unwrap();
        // A directory where the temporary file must go makes the write fail.
        std::fs::create_dir(path.with_extension("tmp")).unwrap();
        let result = book.close(BlockHash::from_byte_array([1; 32]), None);
        assert!(matches!(result, Err(EpochError::Write { .. })));
        assert_eq!(book.current(), 1);
        assert!(book.closed().is_empty());
    }
}
