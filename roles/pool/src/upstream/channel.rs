//! The proxy's one channel with its upstream, whatever the protocol: the jobs (kept by
//! channels_sv2's client channel), the work handed to downstream channels, and the shares
//! submitted and not yet answered. An Sv1 upstream's notifications are mapped onto the same
//! Sv2 messages first.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::channels_sv2::client::extended::{ExtendedChannel, ExtendedJob};
use stratum_apps::stratum_core::channels_sv2::extranonce_manager::ExtranoncePrefix;
use stratum_apps::stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, SetNewPrevHashOwned, SubmitSharesExtendedOwned,
};

use super::{bip34_height, ForwardedShare, Shared, UpstreamError, UpstreamJob};
use crate::work::Work;

/// Past upstream jobs the client channel keeps (each holds a whole coinbase).
const PAST_JOBS_KEPT: usize = 4;
/// Submitted shares remembered for the upstream's answer; an upstream that never answers makes
/// the oldest be forgotten (uncounted) rather than grow the map.
const PENDING_KEPT: usize = 65_536;

/// What the upstream gave the channel when it opened.
pub(super) struct Opened {
    pub channel_id: u32,
    pub identity: String,
    /// The upstream's extranonce prefix for this channel (`X1`).
    pub extranonce_prefix: Vec<u8>,
    /// The extranonce bytes the upstream leaves to us (`E`).
    pub extranonce_size: usize,
    pub target: Target,
    pub nominal_hashrate: f32,
    /// The version bits the upstream lets us roll; `None`: none.
    pub version_mask: Option<u32>,
}

pub(super) struct UpstreamChannel {
    session: u64,
    channel: ExtendedChannel,
    version_mask: Option<u32>,
    /// `E − T`: the upstream's extranonce bytes this pool's channels leave at zero.
    padding: usize,
    generation: u64,
    gave_work: bool,
    next_sequence_number: u32,
    pending: PendingShares,
}

fn broke(error: impl std::fmt::Debug) -> UpstreamError {
    UpstreamError::Protocol(format!("{error:?}"))
}

impl UpstreamChannel {
    pub(super) fn new(
        session: u64,
        opened: Opened,
        shared: &Shared,
    ) -> Result<Self, UpstreamError> {
        let needed = shared.channel_extranonce_len;
        if opened.extranonce_size < needed {
            return Err(UpstreamError::ExtranonceTooSmall {
                given: opened.extranonce_size,
                needed,
            });
        }
        let prefix = ExtranoncePrefix::from_wire(opened.extranonce_prefix).map_err(broke)?;
        let rollable = u16::try_from(opened.extranonce_size).map_err(broke)?;
        let channel = ExtendedChannel::new(
            opened.channel_id,
            opened.identity,
            prefix,
            opened.target,
            opened.nominal_hashrate,
            opened.version_mask.is_some(),
            rollable,
            Some(PAST_JOBS_KEPT),
        )
        .map_err(broke)?;
        Ok(Self {
            session,
            channel,
            version_mask: opened.version_mask,
            padding: opened.extranonce_size - needed,
            generation: 0,
            gave_work: false,
            next_sequence_number: 0,
            pending: PendingShares::default(),
        })
    }

    pub(super) fn gave_work(&self) -> bool {
        self.gave_work
    }

    pub(super) fn version_mask(&self) -> Option<u32> {
        self.version_mask
    }

    /// A new mask for the jobs from now on (Sv1 `mining.set_version_mask`).
    pub(super) fn set_version_mask(&mut self, mask: Option<u32>) {
        self.version_mask = mask;
    }

    /// The extranonce bytes the upstream leaves to us (`E`).
    pub(super) fn extranonce_size(&self) -> usize {
        usize::from(self.channel.get_rollable_extranonce_size())
    }

    pub(super) fn channel_id(&self) -> u32 {
        self.channel.get_channel_id()
    }

    /// A new job: a future one waits for its prev hash; a current one is relayed at once.
    pub(super) fn on_job(
        &mut self,
        job: NewExtendedMiningJobOwned,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        let future = job.min_ntime.clone().into_inner().is_none();
        self.channel
            .on_new_extended_mining_job(job)
            .map_err(broke)?;
        if future {
            Ok(())
        } else {
            self.publish_active(shared)
        }
    }

    /// A new tip: its job is relayed as a clean job.
    pub(super) fn on_prev_hash(
        &mut self,
        prev_hash: SetNewPrevHashOwned,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        self.channel
            .on_set_new_prev_hash(prev_hash)
            .map_err(broke)?;
        self.new_tip(shared)
    }

    /// The target for jobs from now on (jobs keep the one they were made with).
    pub(super) fn set_target(&mut self, target: Target) -> Result<(), UpstreamError> {
        self.channel.set_target(target).map_err(broke)
    }

    /// A new extranonce prefix, for the jobs from now on. Over Sv2 the upstream keeps the old
    /// prefix for the jobs made with it (shares name their job); over Sv1 a share carries only
    /// extranonce2, so the jobs relayed so far are `retired`: their shares earn nothing, and the
    /// next job is a clean start.
    pub(super) fn set_extranonce_prefix(
        &mut self,
        prefix: Vec<u8>,
        retire: bool,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        let prefix = ExtranoncePrefix::from_wire(prefix).map_err(broke)?;
        self.channel.set_extranonce_prefix(prefix).map_err(broke)?;
        if retire {
            self.generation += 1;
            shared.live.retire_before(self.generation);
        }
        Ok(())
    }

    fn new_tip(&mut self, shared: &Shared) -> Result<(), UpstreamError> {
        self.generation += 1;
        self.publish_active(shared)
    }

    /// Hands the channel's active job to the downstream channels.
    fn publish_active(&mut self, shared: &Shared) -> Result<(), UpstreamError> {
        let (Some(active), Some(tip)) =
            (self.channel.get_active_job(), self.channel.get_chain_tip())
        else {
            return Ok(());
        };
        let job = self.upstream_job(
            active,
            tip.prev_hash().to_array(),
            tip.nbits(),
            tip.min_ntime(),
            shared,
        );
        job.check()
            .map_err(|error| UpstreamError::Protocol(error.to_string()))?;
        if !self.gave_work {
            self.gave_work = true;
            shared.live.start(self.session);
        }
        tracing::debug!(
            work_id = job.work_id,
            generation = job.generation,
            height = job.height,
            "upstream job relayed"
        );
        shared
            .work
            .send_replace(Some(Work::Upstream(Arc::new(job))));
        Ok(())
    }

    fn upstream_job(
        &self,
        active: &ExtendedJob,
        prev_hash: [u8; 32],
        nbits: u32,
        tip_min_ntime: u32,
        shared: &Shared,
    ) -> UpstreamJob {
        let message = &active.job_message;
        let upstream_prefix = message.coinbase_tx_prefix.as_bytes().to_vec();
        let coinbase_prefix = [
            upstream_prefix.as_slice(),
            active.extranonce_prefix.as_slice(),
            &vec![0u8; self.padding],
        ]
        .concat();
        UpstreamJob {
            session: self.session,
            generation: self.generation,
            work_id: shared.next_work_id.fetch_add(1, Ordering::Relaxed),
            upstream_job_id: message.job_id,
            prev_hash,
            nbits,
            min_ntime: message
                .min_ntime
                .clone()
                .into_inner()
                .unwrap_or(tip_min_ntime),
            version: message.version,
            version_rolling_allowed: message.version_rolling_allowed && self.version_mask.is_some(),
            version_mask: self.version_mask.unwrap_or(0),
            height: bip34_height(&upstream_prefix).unwrap_or(0),
            coinbase_prefix,
            coinbase_suffix: message.coinbase_tx_suffix.as_bytes().to_vec(),
            merkle_path: message
                .merkle_path
                .iter()
                .map(|node| node.to_array())
                .collect(),
            upstream_target: active.target,
            padding: self.padding,
        }
    }

    /// The share to submit for a forward of this session, numbered, if the client channel agrees
    /// it is one the upstream can take (its job not stale, not a duplicate, at the job's
    /// target); `None` (counted as dropped) otherwise.
    pub(super) fn share_to_submit(
        &mut self,
        share: ForwardedShare,
        shared: &Shared,
    ) -> Option<SubmitSharesExtendedOwned> {
        let Some(submit) = self.checked(&share) else {
            shared.metrics.upstream.dropped.inc();
            return None;
        };
        self.next_sequence_number = self.next_sequence_number.wrapping_add(1);
        self.pending.submitted(submit.sequence_number, share.miner);
        shared.metrics.upstream.forwarded.inc();
        Some(submit)
    }

    /// The share as the upstream would get it, if it is for this session and the client channel
    /// finds it valid there.
    fn checked(&mut self, share: &ForwardedShare) -> Option<SubmitSharesExtendedOwned> {
        if share.session != self.session {
            return None;
        }
        let submit = SubmitSharesExtendedOwned {
            channel_id: self.channel.get_channel_id(),
            sequence_number: self.next_sequence_number,
            job_id: share.upstream_job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
            extranonce: share.extranonce.clone().try_into().ok()?,
        };
        if let Err(error) = self.channel.validate_share(submit.clone()) {
            tracing::debug!(
                ?error,
                job_id = share.upstream_job_id,
                "forward not submitted"
            );
            return None;
        }
        Some(submit)
    }

    /// The upstream accepted every share up to `last_sequence_number` it did not reject.
    pub(super) fn accepted_through(&mut self, last_sequence_number: u32, shared: &Shared) {
        for miner in self.pending.accepted_through(last_sequence_number) {
            shared.upstream_answer(&miner, true);
        }
    }

    /// The upstream's answer to one share.
    pub(super) fn answered(&mut self, sequence_number: u32, accepted: bool, shared: &Shared) {
        if let Some(miner) = self.pending.take(sequence_number) {
            shared.upstream_answer(&miner, accepted);
        }
    }

    pub(super) fn on_rejection(&mut self, sequence_number: u32, code: &str, shared: &Shared) {
        self.channel.on_share_rejection(code);
        tracing::info!(sequence_number, %code, "upstream rejected a share");
        self.answered(sequence_number, false, shared);
    }

    pub(super) fn on_acknowledgement(&mut self, accepted_count: u32, shares_sum: u64) {
        self.channel
            .on_share_acknowledgement(accepted_count, shares_sum);
    }
}

/// Shares submitted upstream and not yet answered, by sequence number, with the miner each
/// is counted for.
#[derive(Debug, Default)]
struct PendingShares {
    by_sequence: BTreeMap<u32, String>,
}

impl PendingShares {
    fn submitted(&mut self, sequence_number: u32, miner: String) {
        self.by_sequence.insert(sequence_number, miner);
        if self.by_sequence.len() > PENDING_KEPT {
            self.by_sequence.pop_first();
        }
    }

    /// The miner of one share, answered on its own.
    fn take(&mut self, sequence_number: u32) -> Option<String> {
        self.by_sequence.remove(&sequence_number)
    }

    /// The miners of every share up to `last_sequence_number` not refused: an acknowledgement
    /// covers a batch.
    fn accepted_through(&mut self, last_sequence_number: u32) -> Vec<String> {
        let later = self
            .by_sequence
            .split_off(&last_sequence_number.saturating_add(1));
        std::mem::replace(&mut self.by_sequence, later)
            .into_values()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acknowledgement_accepts_its_batch_less_the_refused() {
        let mut pending = PendingShares::default();
        for (sequence, miner) in [(1, "a"), (2, "b"), (3, "a"), (4, "c")] {
            pending.submitted(sequence, miner.to_owned());
        }
        assert_eq!(pending.take(2).as_deref(), Some("b"));
        assert_eq!(pending.accepted_through(3), ["a", "a"]);
        assert_eq!(pending.accepted_through(3), Vec::<String>::new());
        assert_eq!(pending.accepted_through(u32::MAX), ["c"]);
        assert_eq!(pending.take(2), None);
    }
}
