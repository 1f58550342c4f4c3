//! Payout epochs: which epoch a share is credited in, and the blocks that closed the others.
//!
//! Under the payout-epoch policy every create carries the open epoch. The pool's own block,
//! once bitcoind accepts it, closes that epoch and opens the next. The state is one small file,
//! written durably before the new epoch is handed to any share, so a restart or crash never
//! moves a share to another epoch. What each epoch holds (its work and quote count) lives in
//! Redis beside its creates (see [`ehash::epoch_totals_key`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EpochState {
    open: u64,
    closed: Vec<ClosedEpoch>,
}

/// The open epoch (read on every share, so an atomic) and the closed ones, kept in a file.
pub struct EpochBook {
    path: PathBuf,
    open: AtomicU64,
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
            state: Mutex::new(state),
        })
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
        let mut state = self.state.lock().expect("epoch book lock");
        let closed = ClosedEpoch {
            epoch: state.open,
            block_hash,
            height,
        };
        let mut next = state.clone();
        next.closed.push(closed.clone());
        next.open += 1;
        write(&self.path, &next)?;
        *state = next;
        self.open.store(state.open, Ordering::SeqCst);
        tracing::info!(epoch = closed.epoch, %block_hash, ?height, "payout epoch closed by the pool's block");
        Ok(closed)
    }

    /// The closed epochs, oldest first.
    pub fn closed(&self) -> Vec<ClosedEpoch> {
        self.state.lock().expect("epoch book lock").closed.clone()
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
