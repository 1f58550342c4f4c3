//! What the channels mine: a block template of the pool's own (solo), or a job of the upstream
//! pool the pool mines to (proxy). Downstream code sees one type and asks it the few things the
//! two differ in.

use std::sync::Arc;

use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::BlockHash;
use stratum_apps::stratum_core::mining_sv2::SetNewPrevHashOwned as MiningSetNewPrevHash;
use stratum_apps::stratum_core::template_distribution_sv2::SetNewPrevHashOwned;

use crate::template::Template;
use crate::upstream::UpstreamJob;

#[derive(Debug, Clone)]
pub enum Work {
    Solo(Arc<Template>),
    Upstream(Arc<UpstreamJob>),
}

/// What a channel's jobs build on: when it changes, every channel gets a future job and a
/// `SetNewPrevHash` (a clean job), and jobs on the old one are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tip {
    Solo(BlockHash),
    /// An upstream session's `generation`-th tip: a reconnect or a new extranonce on the same
    /// previous block is a new tip too, since the old jobs' coinbases are dead.
    Upstream {
        session: u64,
        generation: u64,
    },
}

impl Work {
    /// The template id the channels know this work by (pool-wide, never reused).
    pub fn id(&self) -> u64 {
        match self {
            Work::Solo(template) => template.id,
            Work::Upstream(job) => job.work_id,
        }
    }

    /// The height of the block this work is for (the upstream's coinbase says, or 0).
    pub fn height(&self) -> u64 {
        match self {
            Work::Solo(template) => template.height,
            Work::Upstream(job) => job.height,
        }
    }

    pub fn tip(&self) -> Tip {
        match self {
            Work::Solo(template) => Tip::Solo(template.prev_hash),
            Work::Upstream(job) => Tip::Upstream {
                session: job.session,
                generation: job.generation,
            },
        }
    }

    /// The Template Distribution `SetNewPrevHash` that activates this work's future jobs.
    pub fn set_new_prev_hash(&self) -> SetNewPrevHashOwned {
        match self {
            Work::Solo(template) => template.set_new_prev_hash(),
            Work::Upstream(job) => job.set_new_prev_hash(),
        }
    }

    /// The Mining Protocol `SetNewPrevHash` that tells a channel to mine `job_id` on this tip.
    pub fn prev_hash_message(&self, channel_id: u32, job_id: u32) -> MiningSetNewPrevHash {
        let (prev_hash, min_ntime, nbits) = match self {
            Work::Solo(template) => (
                template.prev_hash.to_byte_array(),
                template.time,
                template.bits,
            ),
            Work::Upstream(job) => (job.prev_hash, job.min_ntime, job.nbits),
        };
        MiningSetNewPrevHash {
            channel_id,
            job_id,
            prev_hash: prev_hash.into(),
            min_ntime,
            nbits,
        }
    }

    pub fn upstream(&self) -> Option<&Arc<UpstreamJob>> {
        match self {
            Work::Solo(_) => None,
            Work::Upstream(job) => Some(job),
        }
    }
}
