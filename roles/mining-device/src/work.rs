use std::collections::HashMap;

use hashpool_sv2_client::VERSION_ROLLING_MASK;
use stratum_apps::stratum_core::bitcoin::blockdata::block::{Header, Version};
use stratum_apps::stratum_core::bitcoin::consensus::encode::serialize;
use stratum_apps::stratum_core::bitcoin::hashes::{sha256, sha256d, Hash, HashEngine};
use stratum_apps::stratum_core::bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use stratum_apps::stratum_core::mining_sv2::{
    NewMiningJobOwned, SetNewPrevHashOwned, SubmitSharesStandard,
};
use stratum_apps::stratum_core::parsers_sv2::MiningOwned;

/// The job's `version` with the BIP320 bits set to the `step`-th combination: bits outside the
/// mask are kept, and the 65536 steps (0 is the job's own version) are all distinct.
pub fn rolled_version(version: u32, step: u16) -> u32 {
    version ^ ((u32::from(step) << VERSION_ROLLING_MASK.trailing_zeros()) & VERSION_ROLLING_MASK)
}

/// What there is to hash right now on one standard channel.
#[derive(Debug, Clone)]
pub struct Work {
    pub channel_id: u32,
    pub job_id: u32,
    pub version: u32,
    pub merkle_root: [u8; 32],
    pub prev_hash: BlockHash,
    pub ntime: u32,
    pub nbits: u32,
    pub target: Target,
}

impl Work {
    pub fn header(&self, nonce: u32) -> Header {
        Header {
            version: Version::from_consensus(self.version as i32),
            prev_blockhash: self.prev_hash,
            merkle_root: TxMerkleNode::from_byte_array(self.merkle_root),
            time: self.ntime,
            bits: CompactTarget::from_consensus(self.nbits),
            nonce,
        }
    }

    /// The share message for `nonce`.
    pub fn share(&self, sequence_number: u32, nonce: u32) -> SubmitSharesStandard {
        SubmitSharesStandard {
            channel_id: self.channel_id,
            sequence_number,
            job_id: self.job_id,
            nonce,
            ntime: self.ntime,
            version: self.version,
        }
    }

    /// Hashes nonces `from..from+count` and returns the first that meets the channel target.
    pub fn search(&self, from: u32, count: u32) -> Option<u32> {
        self.search_for(from, count, |hash| self.target.is_met_by(hash))
    }

    /// Hashes nonces `from..from+count` and returns the first whose block hash `wanted` accepts.
    pub fn search_for(
        &self,
        from: u32,
        count: u32,
        mut wanted: impl FnMut(BlockHash) -> bool,
    ) -> Option<u32> {
        let hasher = HeaderHasher::new(&self.header(from));
        (0..count)
            .map(|offset| from.wrapping_add(offset))
            .find(|&nonce| wanted(hasher.block_hash(nonce)))
    }

    /// Whether `nonce` meets the channel target.
    pub fn meets_target(&self, nonce: u32) -> bool {
        self.target.is_met_by(self.header(nonce).block_hash())
    }
}

/// Hashes one header at many nonces. The first 64 of the header's 80 bytes do not depend on the
/// nonce, so their SHA-256 state is computed once: each nonce then costs two compressions
/// instead of three, and no serialisation.
struct HeaderHasher {
    midstate: sha256::HashEngine,
    /// Bytes 64..80: the merkle root's last 4, time, bits, and the nonce (filled per hash).
    tail: [u8; 16],
}

impl HeaderHasher {
    fn new(header: &Header) -> Self {
        let bytes = serialize(header);
        let mut midstate = sha256::HashEngine::default();
        midstate.input(&bytes[..64]);
        let tail = bytes[64..80].try_into().expect("a header is 80 bytes");
        Self { midstate, tail }
    }

    fn block_hash(&self, nonce: u32) -> BlockHash {
        let mut tail = self.tail;
        tail[12..].copy_from_slice(&nonce.to_le_bytes());
        let mut engine = self.midstate.clone();
        engine.input(&tail);
        BlockHash::from_raw_hash(sha256d::Hash::from_engine(engine))
    }
}

/// Follows one standard channel's jobs, prev hashes and target.
#[derive(Debug)]
pub struct JobTracker {
    channel_id: u32,
    target: Target,
    future_jobs: HashMap<u32, NewMiningJobOwned>,
    jobs: HashMap<u32, NewMiningJobOwned>,
    current: Option<Work>,
}

impl JobTracker {
    pub fn new(channel_id: u32, target: Target) -> Self {
        Self {
            channel_id,
            target,
            future_jobs: HashMap::new(),
            jobs: HashMap::new(),
            current: None,
        }
    }

    pub fn channel_id(&self) -> u32 {
        self.channel_id
    }

    pub fn work(&self) -> Option<&Work> {
        self.current.as_ref()
    }

    pub fn target(&self) -> Target {
        self.target
    }

    /// Applies a message for this channel; returns whether the work changed.
    pub fn on_message(&mut self, message: &MiningOwned) -> bool {
        match message {
            MiningOwned::NewMiningJob(job) if job.channel_id == self.channel_id => self.on_job(job),
            MiningOwned::SetNewPrevHash(prev) if prev.channel_id == self.channel_id => {
                self.on_prev_hash(prev)
            }
            MiningOwned::SetTarget(set) if set.channel_id == self.channel_id => {
                self.target = Target::from_le_bytes(set.maximum_target.to_array());
                if let Some(current) = &mut self.current {
                    current.target = self.target;
                }
                true
            }
            _ => false,
        }
    }

    /// A future job waits for the prev hash that names it; an active one replaces the job
    /// being mined on the current tip.
    fn on_job(&mut self, job: &NewMiningJobOwned) -> bool {
        let Some(ntime) = job.min_ntime.clone().into_inner() else {
            self.future_jobs.insert(job.job_id, job.clone());
            return false;
        };
        self.jobs.insert(job.job_id, job.clone());
        let Some(current) = &mut self.current else {
            return false;
        };
        current.job_id = job.job_id;
        current.version = job.version;
        current.merkle_root = job.merkle_root.to_array();
        current.ntime = ntime.max(current.ntime);
        current.target = self.target;
        true
    }

    /// A new tip: the future job it names is the only one worth mining.
    fn on_prev_hash(&mut self, prev: &SetNewPrevHashOwned) -> bool {
        let Some(job) = self.future_jobs.remove(&prev.job_id) else {
            return false;
        };
        self.future_jobs.clear();
        self.jobs.clear();
        self.jobs.insert(job.job_id, job.clone());
        self.current = Some(Work {
            channel_id: self.channel_id,
            job_id: job.job_id,
            version: job.version,
            merkle_root: job.merkle_root.to_array(),
            prev_hash: BlockHash::from_byte_array(prev.prev_hash.to_array()),
            ntime: prev.min_ntime,
            nbits: prev.nbits,
            target: self.target,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_midstate_hash_is_the_block_hash() {
        let work = Work {
            channel_id: 1,
            job_id: 2,
            version: 0x2000_0000,
            merkle_root: [7; 32],
            prev_hash: BlockHash::from_byte_array([9; 32]),
            ntime: 1_700_000_000,
            nbits: 0x207f_ffff,
            target: Target::MAX,
        };
        let hasher = HeaderHasher::new(&work.header(0));
        for nonce in [0, 1, 0x1234_5678, u32::MAX] {
            assert_eq!(hasher.block_hash(nonce), work.header(nonce).block_hash());
        }
        let easy = Target::from_compact(CompactTarget::from_consensus(0x2000_ffff));
        let found = work
            .search_for(u32::MAX - 5, 1 << 20, |hash| easy.is_met_by(hash))
            .expect("one hash in 2^8 or so meets the target");
        assert!(easy.is_met_by(work.header(found).block_hash()));
    }

    #[test]
    fn rolled_versions_stay_in_the_bip320_mask_and_never_repeat() {
        let job_version = 0x2000_0004;
        assert_eq!(rolled_version(job_version, 0), job_version);
        let mut seen = HashSet::new();
        for step in 0..=u16::MAX {
            let version = rolled_version(job_version, step);
            assert_eq!(
                version & !VERSION_ROLLING_MASK,
                job_version & !VERSION_ROLLING_MASK
            );
            assert!(seen.insert(version), "step {step} repeats a version");
        }
    }
}
