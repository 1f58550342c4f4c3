//! A test-side follower of extended jobs: what a miner on an extended channel, or on standard
//! channels grouped in a group channel, hashes. The mining device only speaks standard jobs.

use std::collections::HashMap;

use stratum_apps::stratum_core::bitcoin::blockdata::block::{Header, Version};
use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use stratum_apps::stratum_core::channels_sv2::merkle_root::merkle_root_from_path;
use stratum_apps::stratum_core::mining_sv2::NewExtendedMiningJobOwned;
use stratum_apps::stratum_core::parsers_sv2::MiningOwned;

/// The extended job being mined and the tip it builds on.
#[derive(Debug, Clone)]
pub struct ExtendedWork {
    pub job: NewExtendedMiningJobOwned,
    pub prev_hash: BlockHash,
    pub ntime: u32,
    pub nbits: u32,
}

impl ExtendedWork {
    /// The block header for a coinbase carrying `extranonce` (channel prefix + miner bytes).
    pub fn header(&self, extranonce: &[u8], version: u32, nonce: u32) -> Header {
        let merkle_root = merkle_root_from_path(
            self.job.coinbase_tx_prefix.as_bytes(),
            self.job.coinbase_tx_suffix.as_bytes(),
            extranonce,
            self.job.merkle_path.as_slice(),
        )
        .expect("the pool's coinbase parts make a transaction");
        Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: self.prev_hash,
            merkle_root: TxMerkleNode::from_byte_array(merkle_root),
            time: self.ntime,
            bits: CompactTarget::from_consensus(self.nbits),
            nonce,
        }
    }

    pub fn network_target(&self) -> Target {
        Target::from_compact(CompactTarget::from_consensus(self.nbits))
    }
}

/// Follows the extended jobs sent to one channel id (an extended channel or a group channel).
#[derive(Debug, Default)]
pub struct ExtendedTracker {
    channel_id: u32,
    future_jobs: HashMap<u32, NewExtendedMiningJobOwned>,
    current: Option<ExtendedWork>,
}

impl ExtendedTracker {
    pub fn new(channel_id: u32) -> Self {
        Self {
            channel_id,
            ..Self::default()
        }
    }

    pub fn work(&self) -> Option<&ExtendedWork> {
        self.current.as_ref()
    }

    /// Applies a message addressed to this channel id; returns whether the work changed.
    pub fn on_message(&mut self, message: &MiningOwned) -> bool {
        match message {
            MiningOwned::NewExtendedMiningJob(job) if job.channel_id == self.channel_id => {
                match job.min_ntime.clone().into_inner() {
                    None => {
                        self.future_jobs.insert(job.job_id, job.clone());
                        false
                    }
                    Some(ntime) => match &mut self.current {
                        Some(current) => {
                            current.job = job.clone();
                            current.ntime = ntime.max(current.ntime);
                            true
                        }
                        None => false,
                    },
                }
            }
            MiningOwned::SetNewPrevHash(prev) if prev.channel_id == self.channel_id => {
                let Some(job) = self.future_jobs.remove(&prev.job_id) else {
                    return false;
                };
                self.future_jobs.clear();
                self.current = Some(ExtendedWork {
                    job,
                    prev_hash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
                    ntime: prev.min_ntime,
                    nbits: prev.nbits,
                });
                true
            }
            _ => false,
        }
    }
}
