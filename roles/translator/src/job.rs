//! Sv2 extended-channel jobs as Sv1 `mining.notify` jobs, and Sv1 shares checked and turned back
//! into Sv2 `SubmitSharesExtended`.
//!
//! The extranonce arrangement: the pool gives each extended channel an `extranonce_prefix` and a
//! number of rollable bytes. The translator appends the prefix (and zero padding for rollable
//! bytes the miner does not use) to the end of Sv1 `coinb1`, and gives the miner a
//! translator-chosen `extranonce1` plus `extranonce2_size` bytes to roll. So the rollable part
//! the pool sees is `padding | extranonce1 | extranonce2`. A new upstream prefix (after the pool
//! restarts, say) only changes `coinb1` of the next notify: the miner's `extranonce1` and
//! `extranonce2_size` never change and `mining.set_extranonce` is never needed.

use std::collections::{HashMap, VecDeque};

use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_core::bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use stratum_core::channels_sv2::merkle_root::merkle_root_from_path_;
use stratum_core::channels_sv2::target::u256_to_block_hash;
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, SetNewPrevHashOwned, SubmitSharesExtendedOwned,
};
use stratum_core::stratum_translation::error::StratumTranslationError;
use stratum_core::stratum_translation::sv2_to_sv1::build_sv1_notify_from_sv2;
use stratum_core::sv1_api::server_to_client::Notify;
use thiserror::Error;

/// Jobs kept per miner for late shares; older ones answer "job not found".
const MAX_JOBS: usize = 32;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("the pool's channel has {rollable} rollable extranonce bytes; extranonce1 ({extranonce1}) + extranonce2 ({extranonce2}) need more")]
    TooSmall {
        rollable: usize,
        extranonce1: usize,
        extranonce2: usize,
    },
}

/// Why an Sv2 job cannot be given to the miner.
#[derive(Debug, Error)]
pub enum JobError {
    #[error("SetNewPrevHash names job {0} that was never sent")]
    UnknownJob(u32),
    #[error("cannot translate the job: {0:?}")]
    Translate(StratumTranslationError),
}

/// A share's extranonce does not fit Sv2's 32 bytes.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("extranonce longer than 32 bytes")]
pub struct ExtranonceTooLong;

/// How one miner's coinbase extranonce maps onto its upstream channel's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtranonceLayout {
    upstream_prefix: Vec<u8>,
    padding: usize,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
}

impl ExtranonceLayout {
    pub fn new(
        upstream_prefix: Vec<u8>,
        rollable: usize,
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
    ) -> Result<Self, LayoutError> {
        let used = extranonce1.len() + extranonce2_size;
        if used > rollable {
            return Err(LayoutError::TooSmall {
                rollable,
                extranonce1: extranonce1.len(),
                extranonce2: extranonce2_size,
            });
        }
        Ok(Self {
            upstream_prefix,
            padding: rollable - used,
            extranonce1,
            extranonce2_size,
        })
    }

    /// What the translator appends to the job's coinbase prefix to make Sv1 `coinb1`.
    pub fn coinb1_tail(&self) -> Vec<u8> {
        let mut tail = self.upstream_prefix.clone();
        tail.resize(self.upstream_prefix.len() + self.padding, 0);
        tail
    }

    /// The rollable extranonce the pool sees for a miner's `extranonce2`.
    pub fn sv2_extranonce(&self, extranonce2: &[u8]) -> Vec<u8> {
        let mut extranonce = vec![0; self.padding];
        extranonce.extend_from_slice(&self.extranonce1);
        extranonce.extend_from_slice(extranonce2);
        extranonce
    }

    pub fn extranonce2_size(&self) -> usize {
        self.extranonce2_size
    }
}

/// A job as the miner knows it, with what a share on it needs.
#[derive(Debug, Clone)]
pub struct Sv1Job {
    pub channel_id: u32,
    pub sv2_job_id: u32,
    pub version: u32,
    pub version_rolling_allowed: bool,
    /// `coinb1` as sent (job prefix without BIP141 data, then the layout's tail).
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub extranonce1: Vec<u8>,
    pub merkle_path: Vec<[u8; 32]>,
    pub prev_hash: BlockHash,
    pub nbits: u32,
    /// The channel target when the job arrived: what the pool credits a share on it.
    pub upstream_target: Target,
    /// The target of the difficulty the miner was told when it got the job.
    pub advertised_target: Target,
}

impl Sv1Job {
    /// The block header hash of a share on this job.
    pub fn share_hash(
        &self,
        extranonce2: &[u8],
        ntime: u32,
        nonce: u32,
        version: u32,
    ) -> BlockHash {
        let mut coinbase = Vec::with_capacity(
            self.coinb1.len() + self.extranonce1.len() + extranonce2.len() + self.coinb2.len(),
        );
        coinbase.extend_from_slice(&self.coinb1);
        coinbase.extend_from_slice(&self.extranonce1);
        coinbase.extend_from_slice(extranonce2);
        coinbase.extend_from_slice(&self.coinb2);
        let txid = sha256d::Hash::hash(&coinbase).to_byte_array();
        let merkle_root = merkle_root_from_path_(txid, &self.merkle_path);
        Header {
            version: Version::from_consensus(version as i32),
            prev_blockhash: self.prev_hash,
            merkle_root: TxMerkleNode::from_byte_array(merkle_root),
            time: ntime,
            bits: CompactTarget::from_consensus(self.nbits),
            nonce,
        }
        .block_hash()
    }
}

/// How a share compares with the targets of its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareCheck {
    /// Meets the channel target: forward it to the pool.
    MeetsUpstream,
    /// Meets the difficulty the miner was told (rounded down from the channel's), not the
    /// channel's: the miner did what was asked, but the pool would not credit it.
    MeetsAdvertisedOnly,
    TooLow,
}

/// `current_advertised` is the target of the difficulty the miner was told last: miners apply a
/// new difficulty at once, also to the job they are on, so an easier one counts for old jobs too.
pub fn check_share(job: &Sv1Job, hash: &BlockHash, current_advertised: Target) -> ShareCheck {
    let hash_target = Target::from_le_bytes(hash.to_byte_array());
    if hash_target <= job.upstream_target {
        ShareCheck::MeetsUpstream
    } else if hash_target <= job.advertised_target.max(current_advertised) {
        ShareCheck::MeetsAdvertisedOnly
    } else {
        ShareCheck::TooLow
    }
}

/// One miner's jobs: Sv2 jobs waiting for their prev hash, and the jobs it was sent.
#[derive(Debug, Default)]
pub struct JobBook {
    future: HashMap<u32, NewExtendedMiningJobOwned>,
    prev_hash: Option<SetNewPrevHashOwned>,
    sent: HashMap<String, Sv1Job>,
    order: VecDeque<String>,
    next_id: u64,
}

/// Everything needed to turn an Sv2 job into one for this miner.
pub struct JobContext<'a> {
    pub layout: &'a ExtranonceLayout,
    pub extranonce1: &'a [u8],
    pub upstream_target: Target,
    pub advertised_target: Target,
}

impl JobBook {
    /// Forgets everything of the previous upstream channel. Its jobs go too: a restarted pool
    /// may reuse the channel id and job ids, and a share on an old job must not reach a new one.
    pub fn reset_channel(&mut self) {
        self.future.clear();
        self.prev_hash = None;
        self.sent.clear();
        self.order.clear();
    }

    /// A new Sv2 job: a future one waits for its prev hash, an active one is notified now.
    pub fn on_job(
        &mut self,
        job: NewExtendedMiningJobOwned,
        context: &JobContext<'_>,
    ) -> Result<Option<Notify>, JobError> {
        if job.min_ntime.clone().into_inner().is_none() {
            self.future.insert(job.job_id, job);
            return Ok(None);
        }
        let Some(prev_hash) = self.prev_hash.clone() else {
            // An active job before any prev hash: nothing to mine it on yet.
            return Ok(None);
        };
        self.notify(prev_hash, job, false, context).map(Some)
    }

    /// A new tip: the future job it names becomes the miner's only valid job.
    pub fn on_prev_hash(
        &mut self,
        prev_hash: SetNewPrevHashOwned,
        context: &JobContext<'_>,
    ) -> Result<Option<Notify>, JobError> {
        self.prev_hash = Some(prev_hash.clone());
        let job = self.future.remove(&prev_hash.job_id);
        self.future.clear();
        let Some(job) = job else {
            return Err(JobError::UnknownJob(prev_hash.job_id));
        };
        self.notify(prev_hash, job, true, context).map(Some)
    }

    fn notify(
        &mut self,
        prev_hash: SetNewPrevHashOwned,
        job: NewExtendedMiningJobOwned,
        clean_jobs: bool,
        context: &JobContext<'_>,
    ) -> Result<Notify, JobError> {
        let channel_id = job.channel_id;
        let sv2_job_id = job.job_id;
        let version = job.version;
        let version_rolling_allowed = job.version_rolling_allowed;
        let merkle_path = job
            .merkle_path
            .clone()
            .into_inner()
            .iter()
            .map(|node| node.to_array())
            .collect();
        let prev_hash_bytes = prev_hash.prev_hash.clone();
        let nbits = prev_hash.nbits;
        let mut notify =
            build_sv1_notify_from_sv2(prev_hash, job, clean_jobs).map_err(JobError::Translate)?;
        let mut coinb1: Vec<u8> = notify.coin_base1.clone().into();
        coinb1.extend_from_slice(&context.layout.coinb1_tail());
        notify.coin_base1 = coinb1.clone().into();

        if clean_jobs {
            self.sent.clear();
            self.order.clear();
        }
        self.next_id += 1;
        let sv1_id = format!("{:x}", self.next_id);
        notify.job_id = sv1_id.clone();
        let record = Sv1Job {
            channel_id,
            sv2_job_id,
            version,
            version_rolling_allowed,
            coinb1,
            coinb2: notify.coin_base2.clone().into(),
            extranonce1: context.extranonce1.to_vec(),
            merkle_path,
            prev_hash: u256_to_block_hash(prev_hash_bytes),
            nbits,
            upstream_target: context.upstream_target,
            advertised_target: context.advertised_target,
        };
        self.sent.insert(sv1_id.clone(), record);
        self.order.push_back(sv1_id);
        while self.order.len() > MAX_JOBS {
            if let Some(oldest) = self.order.pop_front() {
                self.sent.remove(&oldest);
            }
        }
        Ok(notify)
    }

    pub fn job(&self, sv1_job_id: &str) -> Option<&Sv1Job> {
        self.sent.get(sv1_job_id)
    }
}

/// The Sv2 share for an Sv1 submit on `job`.
pub fn sv2_share(
    job: &Sv1Job,
    layout: &ExtranonceLayout,
    sequence_number: u32,
    extranonce2: &[u8],
    ntime: u32,
    nonce: u32,
    version: u32,
) -> Result<SubmitSharesExtendedOwned, ExtranonceTooLong> {
    Ok(SubmitSharesExtendedOwned {
        channel_id: job.channel_id,
        sequence_number,
        job_id: job.sv2_job_id,
        nonce,
        ntime,
        version,
        extranonce: layout
            .sv2_extranonce(extranonce2)
            .try_into()
            .map_err(|_| ExtranonceTooLong)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pads_unused_rollable_bytes_in_coinb1() {
        let layout = ExtranonceLayout::new(vec![0xaa, 0xbb], 10, vec![1, 2, 3, 4], 4).unwrap();
        assert_eq!(layout.coinb1_tail(), vec![0xaa, 0xbb, 0, 0]);
        assert_eq!(
            layout.sv2_extranonce(&[5, 6, 7, 8]),
            vec![0, 0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        // coinb1 tail + extranonce1 + extranonce2 is the channel's full extranonce.
        let full: Vec<u8> = [layout.coinb1_tail(), vec![1, 2, 3, 4], vec![5, 6, 7, 8]].concat();
        let sv2: Vec<u8> = [vec![0xaa, 0xbb], layout.sv2_extranonce(&[5, 6, 7, 8])].concat();
        assert_eq!(full, sv2);
    }

    /// A job for channel 1: a legacy (non-segwit) coinbase split around the extranonce.
    fn extended_job(job_id: u32, min_ntime: Option<u32>) -> NewExtendedMiningJobOwned {
        let mut prefix = vec![1, 0, 0, 0, 1];
        prefix.extend([0; 32]);
        prefix.extend([0xff; 4]);
        prefix.extend([20, 3, 1, 0, 0]);
        let mut suffix = vec![0xff; 4];
        suffix.extend([1, 0, 0xf2, 0x05, 0x2a, 0, 0, 0, 0, 0]);
        suffix.extend([0; 4]);
        NewExtendedMiningJobOwned {
            channel_id: 1,
            job_id,
            min_ntime: stratum_core::binary_sv2::Sv2OptionOwned::new(min_ntime),
            version: 0x2000_0000,
            version_rolling_allowed: true,
            merkle_path: Vec::new().try_into().unwrap(),
            coinbase_tx_prefix: prefix.try_into().unwrap(),
            coinbase_tx_suffix: suffix.try_into().unwrap(),
        }
    }

    #[test]
    fn a_miner_keeps_only_its_latest_jobs_and_a_new_tip_drops_the_rest() {
        let layout = ExtranonceLayout::new(vec![0xaa], 12, vec![1, 2, 3, 4], 4).unwrap();
        let context = JobContext {
            layout: &layout,
            extranonce1: &[1, 2, 3, 4],
            upstream_target: Target::MAX,
            advertised_target: Target::MAX,
        };
        let mut book = JobBook::default();
        book.on_job(extended_job(1, None), &context).unwrap();
        let prev_hash = SetNewPrevHashOwned {
            channel_id: 1,
            job_id: 1,
            prev_hash: [7; 32].into(),
            min_ntime: 1_700_000_000,
            nbits: 0x207f_ffff,
        };
        let first = book
            .on_prev_hash(prev_hash.clone(), &context)
            .unwrap()
            .unwrap();
        let mut ids = vec![first.job_id];
        for job_id in 2..2 + 3 * MAX_JOBS as u32 {
            let notify = book.on_job(extended_job(job_id, Some(1_700_000_000)), &context);
            ids.push(notify.unwrap().unwrap().job_id);
        }
        let kept: Vec<_> = ids.iter().filter(|id| book.job(id).is_some()).collect();
        assert_eq!(
            kept,
            ids.iter().rev().take(MAX_JOBS).rev().collect::<Vec<_>>()
        );
        assert_eq!((book.sent.len(), book.order.len()), (MAX_JOBS, MAX_JOBS));

        book.on_job(extended_job(1000, None), &context).unwrap();
        let tip = SetNewPrevHashOwned {
            job_id: 1000,
            ..prev_hash
        };
        let fresh = book.on_prev_hash(tip, &context).unwrap().unwrap();
        assert_eq!(book.sent.len(), 1, "a new tip leaves only its own job");
        assert!(book.job(&fresh.job_id).is_some());
        assert!(book.future.is_empty());
    }

    #[test]
    fn layout_refuses_too_few_rollable_bytes() {
        assert_eq!(
            ExtranonceLayout::new(vec![1], 6, vec![0; 4], 4),
            Err(LayoutError::TooSmall {
                rollable: 6,
                extranonce1: 4,
                extranonce2: 4
            })
        );
    }
}
