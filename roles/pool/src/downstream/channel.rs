//! A channel of a connection: its channels_sv2 state, its jobs' targets, its shares.

use stratum_apps::stratum_core::channels_sv2::server::error::{
    ExtendedChannelError, GroupChannelError, StandardChannelError,
};

use super::*;
use crate::upstream::JobError;

/// What channels_sv2 refused, for a channel of either type or the connection's group channel.
#[derive(Debug, Error)]
pub(super) enum ChannelError {
    #[error("standard channel: {0:?}")]
    Standard(StandardChannelError),
    #[error("extended channel: {0:?}")]
    Extended(ExtendedChannelError),
    #[error("group channel: {0:?}")]
    Group(GroupChannelError),
    #[error("no future job was made for template {0}")]
    NoFutureJob(u64),
    #[error("upstream job: {0}")]
    Upstream(#[from] JobError),
}

/// Credit and block data remembered per job: the target the job was sent with (and what a
/// share at it earns, computed once per job rather than per share), its work.
#[derive(Debug, Clone)]
pub(super) struct JobInfo {
    pub(super) target: Target,
    /// What each share of the job is credited, in units (see [`credited_work`]).
    pub(super) credited_work: u64,
    /// The hashes each share of the job proves, on average (see [`expected_hashes`]).
    pub(super) proven_hashes: u128,
    pub(super) template_id: u64,
    pub(super) height: u64,
    /// The upstream job it relays, in proxy mode.
    pub(super) upstream: Option<Arc<UpstreamJob>>,
}

impl JobInfo {
    fn new(target: Target, work: &Work) -> Self {
        Self {
            target,
            credited_work: credited_work(target.to_le_bytes()),
            proven_hashes: expected_hashes(target),
            template_id: work.id(),
            height: work.height(),
            upstream: work.upstream().cloned(),
        }
    }
}

/// Where a share was submitted.
#[derive(Debug, Clone)]
pub(super) struct SubmittedShare {
    pub(super) channel_id: u32,
    pub(super) sequence_number: u32,
    pub(super) job_id: u32,
    pub(super) header: HeaderFields,
    /// The extranonce bytes the miner rolled (none on a standard channel).
    pub(super) rolled: Vec<u8>,
}

/// What a block header needs from a share beyond its job.
#[derive(Debug, Clone, Copy)]
pub(super) struct HeaderFields {
    pub(super) version: u32,
    pub(super) ntime: u32,
    pub(super) nonce: u32,
}

/// A share of either channel type.
pub(super) enum Submission {
    Standard(SubmitSharesStandard),
    Extended(SubmitSharesExtendedOwned),
}

impl Submission {
    pub(super) fn submitted(&self) -> SubmittedShare {
        macro_rules! submitted {
            ($share:expr, $rolled:expr) => {
                SubmittedShare {
                    rolled: $rolled,
                    channel_id: $share.channel_id,
                    sequence_number: $share.sequence_number,
                    job_id: $share.job_id,
                    header: HeaderFields {
                        version: $share.version,
                        ntime: $share.ntime,
                        nonce: $share.nonce,
                    },
                }
            };
        }
        match self {
            Submission::Standard(share) => submitted!(share, Vec::new()),
            Submission::Extended(share) => submitted!(share, share.extranonce.as_bytes().to_vec()),
        }
    }
}

pub(super) enum ChannelKind {
    Standard(Box<StandardChannel>),
    Extended(Box<ExtendedChannel>),
}

impl ChannelKind {
    pub(super) fn target(&self) -> Target {
        match self {
            ChannelKind::Standard(channel) => *channel.get_target(),
            ChannelKind::Extended(channel) => *channel.get_target(),
        }
    }

    pub(super) fn requested_max_target(&self) -> Target {
        match self {
            ChannelKind::Standard(channel) => *channel.get_requested_max_target(),
            ChannelKind::Extended(channel) => *channel.get_requested_max_target(),
        }
    }

    /// Replaces the target channels_sv2 chose for the channel's hashrate with the nearest power
    /// of two (see [`ShareWork`]), so every share proves an exact number of units, but never
    /// easier than the pool's `minimum` nor than the miner's own `max_target`: no miner gets a
    /// target easier than the minimum, whatever hashrate or `max_target` it announced. `None`
    /// (target unchanged) when the `max_target` is harder than any power of two the unit
    /// expresses.
    ///
    /// A proxy also passes its upstream's work as `cap`: a share the upstream would take is
    /// then always one the miner sends, so every upstream share is forwarded (the minimum and
    /// the miner's own limit still win over the cap).
    pub(super) fn settle_target(
        &mut self,
        minimum: ShareWork,
        cap: Option<ShareWork>,
    ) -> Option<ShareWork> {
        let miners_limit = ShareWork::at_or_below(self.requested_max_target())?;
        let nearest = ShareWork::nearest(self.target());
        let work = cap
            .map_or(nearest, |cap| nearest.min(cap))
            .max(minimum)
            .max(miners_limit);
        let set = match self {
            ChannelKind::Standard(channel) => channel.set_target(work.target()).is_ok(),
            ChannelKind::Extended(channel) => channel.set_target(work.target()).is_ok(),
        };
        set.then_some(work)
    }
}

pub(super) struct Channel {
    pub(super) kind: ChannelKind,
    /// A standard channel whose jobs come through the connection's group channel.
    pub(super) grouped: bool,
    pub(super) identity: MinerIdentity,
    pub(super) vardiff: VardiffState,
    pub(super) jobs: HashMap<u32, JobInfo>,
}

impl Channel {
    pub(super) fn target(&self) -> Target {
        self.kind.target()
    }

    pub(super) fn accounting(&self) -> &ShareAccounting {
        match &self.kind {
            ChannelKind::Standard(channel) => channel.get_share_accounting(),
            ChannelKind::Extended(channel) => channel.get_share_accounting(),
        }
    }

    pub(super) fn active_job_message(&self) -> Option<MiningOwned> {
        match &self.kind {
            ChannelKind::Standard(channel) => channel
                .get_active_job()
                .map(|job| MiningOwned::NewMiningJob(job.get_job_message().clone())),
            ChannelKind::Extended(channel) => channel
                .get_active_job()
                .map(|job| MiningOwned::NewExtendedMiningJob(job.get_job_message().clone())),
        }
    }

    pub(super) fn future_job_message(&self, template_id: u64) -> Option<MiningOwned> {
        match &self.kind {
            ChannelKind::Standard(channel) => channel
                .get_future_job_id_from_template_id(template_id)
                .and_then(|id| channel.get_future_job(id))
                .map(|job| MiningOwned::NewMiningJob(job.get_job_message().clone())),
            ChannelKind::Extended(channel) => channel
                .get_future_job_id_from_template_id(template_id)
                .and_then(|id| channel.get_future_job(id))
                .map(|job| MiningOwned::NewExtendedMiningJob(job.get_job_message().clone())),
        }
    }

    pub(super) fn extranonce_prefix(&self) -> &[u8] {
        match &self.kind {
            ChannelKind::Standard(channel) => channel.get_extranonce_prefix(),
            ChannelKind::Extended(channel) => channel.get_extranonce_prefix(),
        }
    }

    /// Gives the channel a job on `work`: from the template's own coinbase (solo), or the
    /// upstream's coinbase under the job id `job_ids` hands out (proxy).
    pub(super) fn apply_work(
        &mut self,
        channel_id: u32,
        work: &Work,
        future: bool,
        job_ids: &AtomicU32,
    ) -> Result<(), ChannelError> {
        match work {
            Work::Solo(template) => {
                let new_template = template.new_template(future);
                let outputs = template.reward_outputs.clone();
                match &mut self.kind {
                    ChannelKind::Standard(channel) => channel
                        .on_new_template(new_template, outputs)
                        .map_err(ChannelError::Standard),
                    ChannelKind::Extended(channel) => channel
                        .on_new_template(new_template, outputs)
                        .map_err(ChannelError::Extended),
                }
            }
            Work::Upstream(job) => {
                let job_id = job_ids.fetch_add(1, Ordering::Relaxed);
                let job = job.extended_job(channel_id, job_id, future)?;
                self.take_job(job)
            }
        }
    }

    /// Takes a job made elsewhere: the group channel's, or an upstream job.
    pub(super) fn take_job(&mut self, job: ExtendedJob) -> Result<(), ChannelError> {
        match &mut self.kind {
            ChannelKind::Standard(channel) => channel
                .on_group_channel_job(job)
                .map_err(ChannelError::Standard),
            ChannelKind::Extended(channel) => channel
                .on_group_channel_job(job)
                .map_err(ChannelError::Extended),
        }
    }

    pub(super) fn apply_prev_hash(&mut self, work: &Work) -> Result<(), ChannelError> {
        let prev_hash = work.set_new_prev_hash();
        match &mut self.kind {
            ChannelKind::Standard(channel) => channel
                .on_set_new_prev_hash(prev_hash)
                .map_err(ChannelError::Standard),
            ChannelKind::Extended(channel) => channel
                .on_set_new_prev_hash(prev_hash)
                .map_err(ChannelError::Extended),
        }
    }

    /// Records the job that is now active with the channel's current target.
    pub(super) fn remember_active_job(&mut self, work: &Work) -> Option<u32> {
        let job_id = match self.active_job_message()? {
            MiningOwned::NewMiningJob(job) => job.job_id,
            MiningOwned::NewExtendedMiningJob(job) => job.job_id,
            _ => return None,
        };
        self.jobs.insert(job_id, JobInfo::new(self.target(), work));
        Some(job_id)
    }
}
