//! A channel's target over its life: UpdateChannel from the miner, vardiff, SetTarget.

use super::*;

impl Downstream {
    pub(super) async fn update_channel(
        &mut self,
        update: UpdateChannel<'_>,
    ) -> Result<(), CloseReason> {
        let update = update.into_owned();
        let channel_id = update.channel_id;
        let max_target = Target::from_le_bytes(update.maximum_target.to_array());
        let minimum = self.context.minimum_share_work;
        let cap = self.upstream_work();
        let result = match self.channels.get_mut(&channel_id) {
            // Refused before anything changes: no power of two the unit expresses is that hard.
            Some(_) if ShareWork::at_or_below(max_target).is_none() => {
                Err(ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE)
            }
            Some(channel) => {
                let updated = match &mut channel.kind {
                    ChannelKind::Standard(inner) => inner
                        .update_channel(update.nominal_hash_rate, Some(max_target))
                        .map_err(|error| update_error_code(&error.into())),
                    ChannelKind::Extended(inner) => inner
                        .update_channel(update.nominal_hash_rate, Some(max_target))
                        .map_err(|error| update_error_code(&error.into())),
                };
                updated.and_then(|()| {
                    channel
                        .kind
                        .settle_target(minimum, cap)
                        .map(|_| ())
                        .ok_or(ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE)
                })
            }
            None => Err(ERROR_CODE_UPDATE_CHANNEL_INVALID_CHANNEL_ID),
        };
        match result {
            Ok(()) => self.retarget(channel_id).await,
            Err(code) => {
                self.send_mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                    channel_id,
                    error_code: code.to_owned().try_into().expect("error codes are short"),
                }))
                .await
            }
        }
    }

    pub(super) async fn run_vardiff(&mut self) -> Result<(), CloseReason> {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        let cap = self.upstream_work();
        for channel_id in ids {
            let channel = self.channels.get_mut(&channel_id).expect("channel exists");
            let (hashrate, target, spm) = match &channel.kind {
                ChannelKind::Standard(inner) => (
                    inner.get_nominal_hashrate(),
                    *inner.get_target(),
                    inner.get_shares_per_minute(),
                ),
                ChannelKind::Extended(inner) => (
                    inner.get_nominal_hashrate(),
                    *inner.get_target(),
                    inner.get_shares_per_minute(),
                ),
            };
            let Ok(Some(new_hashrate)) = channel.vardiff.try_vardiff(hashrate, &target, spm) else {
                continue;
            };
            let updated = match &mut channel.kind {
                ChannelKind::Standard(inner) => inner.update_channel(new_hashrate, None).is_ok(),
                ChannelKind::Extended(inner) => inner.update_channel(new_hashrate, None).is_ok(),
            };
            // Vardiff moves the target too: back onto a power of two, never under the minimum.
            let minimum = self.context.minimum_share_work;
            if updated && channel.kind.settle_target(minimum, cap).is_some() {
                tracing::debug!(channel_id, hashrate = new_hashrate, "vardiff: new target");
                self.retarget(channel_id).await?;
            }
        }
        Ok(())
    }

    /// A proxy's cap on its channels' work: the upstream's target as a power of two.
    pub(super) fn upstream_work(&self) -> Option<ShareWork> {
        let job = self.work.as_ref()?.upstream()?;
        ShareWork::at_or_above(job.upstream_target)
    }

    /// Tells the miner its channel's new target and gives it a job made with that target (a
    /// job's target is fixed when the job is made; shares on older jobs keep theirs).
    pub(super) async fn retarget(&mut self, channel_id: u32) -> Result<(), CloseReason> {
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        let maximum_target = channel.target().to_le_bytes().into();
        let grouped = channel.grouped;
        self.send_mining(MiningOwned::SetTarget(SetTargetOwned {
            channel_id,
            maximum_target,
        }))
        .await?;
        let Some(work) = self.work.clone() else {
            return Ok(());
        };
        if grouped {
            // A member's jobs are the group's: a fresh group job carries every member's current
            // target, this one's new one included.
            return self.refresh_group(&work).await;
        }
        self.refresh_channel(channel_id, &work).await
    }
}

/// The UpdateChannel.Error code for what channels_sv2 refused.
pub(super) fn update_error_code(error: &UpdateRefusal) -> &'static str {
    match error {
        UpdateRefusal::MaxTarget => ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
        UpdateRefusal::NominalHashrate => ERROR_CODE_UPDATE_CHANNEL_INVALID_NOMINAL_HASHRATE,
    }
}

/// Why channels_sv2 refused an UpdateChannel, for either channel type.
pub(super) enum UpdateRefusal {
    MaxTarget,
    NominalHashrate,
}

impl From<stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError>
    for UpdateRefusal
{
    fn from(
        error: stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError,
    ) -> Self {
        use stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError as E;
        match error {
            E::UpdateChannelInvalidMaxTarget(_) | E::InvalidTarget => UpdateRefusal::MaxTarget,
            _ => UpdateRefusal::NominalHashrate,
        }
    }
}

impl From<stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError>
    for UpdateRefusal
{
    fn from(
        error: stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError,
    ) -> Self {
        use stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError as E;
        match error {
            E::UpdateChannelInvalidMaxTarget(_) | E::InvalidTarget => UpdateRefusal::MaxTarget,
            _ => UpdateRefusal::NominalHashrate,
        }
    }
}
