//! The dashboard: what miners and the operator see of the pool, as a JSON API (`/api/v1`,
//! described by an OpenAPI document) and a web page on it. The pool counts into it on every
//! accepted share (in memory, never waiting); a task flushes it to Redis every few seconds so a
//! restart keeps each key's day of history.

pub mod api;
pub mod book;
pub mod history;
pub mod series;
mod web;

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use ehash::MinerIdentity;
use serde::{Deserialize, Serialize};
use stratum_apps::stratum_core::bitcoin::{BlockHash, Target};
use tokio::sync::watch;

use book::{Book, CountedShare, Now};
use history::{HistoryError, HistoryStore, BLOCKS_KEPT};

pub use api::{router, ApiContext};

/// A block the pool found and bitcoind accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FoundBlock {
    pub height: Option<u64>,
    #[schema(value_type = String)]
    pub hash: BlockHash,
    /// Unix seconds.
    pub time: u64,
}

/// The worker name a channel's identity gives, `""` for none.
fn worker_name(identity: &MinerIdentity) -> &str {
    identity.worker().unwrap_or("")
}

/// A share hash's difficulty: how many difficulty-1 shares it is worth.
pub fn share_difficulty(share_hash: [u8; 32]) -> f64 {
    Target::from_le_bytes(share_hash).difficulty_float()
}

pub struct Dashboard {
    book: Mutex<Book>,
    blocks: Mutex<Blocks>,
    started_at: u64,
}

#[derive(Default)]
struct Blocks {
    /// Newest first.
    latest: VecDeque<FoundBlock>,
    /// Found since the last flush, oldest first.
    unsaved: Vec<FoundBlock>,
}

impl Blocks {
    /// While Redis is away only the blocks the store keeps are worth keeping for it.
    fn bound_unsaved(&mut self) {
        let excess = self.unsaved.len().saturating_sub(BLOCKS_KEPT);
        self.unsaved.drain(..excess);
    }
}

impl Dashboard {
    /// A dashboard continuing `book` and `blocks` (newest first), as the store kept them.
    pub fn restored(book: Book, blocks: Vec<FoundBlock>) -> Self {
        Self {
            book: Mutex::new(book),
            blocks: Mutex::new(Blocks {
                latest: blocks.into_iter().take(BLOCKS_KEPT).collect(),
                unsaved: Vec::new(),
            }),
            started_at: hashpool_service::unix_now(),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().expect("dashboard lock")
    }

    pub fn channel_opened(&self, identity: &MinerIdentity) {
        let key = identity.locking_key().to_string();
        self.book()
            .channel_opened(&key, worker_name(identity), hashpool_service::unix_now());
    }

    pub fn channel_closed(&self, identity: &MinerIdentity) {
        let key = identity.locking_key().to_string();
        self.book()
            .channel_closed(&key, worker_name(identity), hashpool_service::unix_now());
    }

    pub fn share_accepted(&self, identity: &MinerIdentity, share: CountedShare) {
        let key = identity.locking_key().to_string();
        self.book()
            .count(&key, worker_name(identity), share, Now::current());
    }

    pub fn share_rejected(&self, code: &str) {
        self.book().reject(code);
    }

    /// The upstream's answer to a share the key `locking_key` found (proxy mode).
    pub fn upstream_answer(&self, locking_key: &str, accepted: bool) {
        self.book().upstream_answer(locking_key, accepted);
    }

    pub fn block_found(&self, hash: BlockHash, height: Option<u64>) {
        let block = FoundBlock {
            height,
            hash,
            time: hashpool_service::unix_now(),
        };
        let mut blocks = self.blocks.lock().expect("dashboard lock");
        blocks.latest.push_front(block.clone());
        blocks.latest.truncate(BLOCKS_KEPT);
        blocks.unsaved.push(block);
        blocks.bound_unsaved();
    }

    pub fn started_at(&self) -> u64 {
        self.started_at
    }

    pub fn blocks(&self) -> Vec<FoundBlock> {
        let blocks = self.blocks.lock().expect("dashboard lock");
        blocks.latest.iter().cloned().collect()
    }

    /// Reads the book under its lock.
    pub fn read<T>(&self, read: impl FnOnce(&Book) -> T) -> T {
        read(&self.book())
    }

    /// Writes what changed since the last flush; what fails to write is kept for the next.
    pub async fn flush(&self, store: &HistoryStore) -> Result<(), HistoryError> {
        let now = hashpool_service::unix_now();
        let changes = {
            let mut book = self.book();
            book.prune(now);
            book.take_changes()
        };
        let new_blocks = std::mem::take(&mut self.blocks.lock().expect("dashboard lock").unsaved);
        match store.save(&changes, &new_blocks, now).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.book().restore_changes(changes);
                let mut blocks = self.blocks.lock().expect("dashboard lock");
                let newer = std::mem::replace(&mut blocks.unsaved, new_blocks);
                blocks.unsaved.extend(newer);
                blocks.bound_unsaved();
                Err(error)
            }
        }
    }

    /// Flushes every `every` until shutdown, then once more.
    pub async fn keep_flushed(
        &self,
        store: HistoryStore,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            let stopping = tokio::select! {
                _ = ticks.tick() => false,
                () = hashpool_service::stopped(&mut shutdown) => true,
            };
            match self.flush(&store).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("dashboard history written to Redis again");
                }
                Ok(()) => {}
                // Logged once per outage: the quote publisher already reports Redis' state.
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot write the dashboard history; kept in memory");
                }
                Err(_) => {}
            }
            if stopping {
                return;
            }
        }
    }
}
