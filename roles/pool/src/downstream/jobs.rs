//! Work to jobs: each channel's own jobs, and the group channel's shared ones.

use super::channel::ChannelError;
use super::*;

impl Downstream {
    /// New work: on a new tip, every channel gets a future job and then the new prev hash;
    /// on the same tip, a fresh job on the current one.
    pub(super) async fn on_work(&mut self, work: Work) -> Result<(), CloseReason> {
        let new_tip = self.work.as_ref().map(Work::tip) != Some(work.tip());
        self.work = Some(work.clone());
        let ids: Vec<u32> = self
            .channels
            .iter()
            .filter(|(_, channel)| !channel.grouped)
            .map(|(channel_id, _)| *channel_id)
            .collect();
        for channel_id in ids {
            if new_tip {
                self.start_channel_on(channel_id, &work).await?;
            } else {
                self.refresh_channel(channel_id, &work).await?;
            }
        }
        if new_tip {
            self.start_group_on(&work).await
        } else {
            self.refresh_group(&work).await
        }
    }

    /// A fresh job on the tip the channel has, active at once (new transactions, or a new
    /// target).
    pub(super) async fn refresh_channel(
        &mut self,
        channel_id: u32,
        work: &Work,
    ) -> Result<(), CloseReason> {
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        channel
            .apply_work(channel_id, work, false, &self.context.next_job_id)
            .map_err(|error| {
                CloseReason::Protocol(format!(
                    "channel {channel_id} cannot take the work: {error}"
                ))
            })?;
        channel.remember_active_job(work);
        if let Some(job) = channel.active_job_message() {
            self.send_mining(job).await?;
        }
        Ok(())
    }

    /// A channel's first work on a tip: the work as a future job, then the prev hash that
    /// activates it.
    pub(super) async fn start_channel_on(
        &mut self,
        channel_id: u32,
        work: &Work,
    ) -> Result<(), CloseReason> {
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        let cannot = |error: ChannelError| {
            CloseReason::Protocol(format!(
                "channel {channel_id} cannot take the work: {error}"
            ))
        };
        channel
            .apply_work(channel_id, work, true, &self.context.next_job_id)
            .map_err(cannot)?;
        let future_job = channel.future_job_message(work.id());
        channel.apply_prev_hash(work).map_err(cannot)?;
        // Jobs of the old tip are stale now: channels_sv2 refuses shares on them before this
        // map is read, so the channel keeps only the jobs of the current tip.
        channel.jobs.clear();
        let job_id = channel.remember_active_job(work);
        if let (Some(job), Some(job_id)) = (future_job, job_id) {
            self.send_mining(job).await?;
            self.send_mining(MiningOwned::SetNewPrevHash(
                work.prev_hash_message(channel_id, job_id),
            ))
            .await?;
        }
        Ok(())
    }

    /// Adds a standard channel to the connection's group channel (made on first use); returns
    /// the group channel id.
    pub(super) fn join_group(
        &mut self,
        channel_id: u32,
        extranonce_len: usize,
    ) -> Result<u32, ChannelError> {
        if self.group.is_none() {
            let group_channel_id = self.context.next_channel_id.fetch_add(1, Ordering::Relaxed);
            let group = GroupChannel::new_for_pool(
                group_channel_id,
                extranonce_len,
                true,
                POOL_TAG.to_owned(),
            )
            .map_err(ChannelError::Group)?;
            self.group = Some(group);
        }
        let group = self.group.as_mut().expect("made above");
        group
            .add_channel_id(channel_id, extranonce_len)
            .map_err(ChannelError::Group)?;
        Ok(group.get_group_channel_id())
    }

    /// The group channel's job on `work`: made by its own job factory from a template (solo),
    /// or from the upstream's coinbase (proxy).
    fn group_job(
        &mut self,
        work: &Work,
        future: bool,
    ) -> Result<Option<ExtendedJob>, ChannelError> {
        let Some(group) = self.group.as_mut().filter(|group| !group.is_empty()) else {
            return Ok(None);
        };
        let job = match work {
            Work::Solo(template) => {
                group
                    .on_new_template(
                        template.new_template(future),
                        template.reward_outputs.clone(),
                    )
                    .map_err(ChannelError::Group)?;
                if future {
                    let job = group
                        .get_future_job_id_from_template_id(template.id)
                        .and_then(|job_id| group.get_future_job(job_id))
                        .cloned()
                        .ok_or(ChannelError::NoFutureJob(template.id))?;
                    group
                        .on_set_new_prev_hash(template.set_new_prev_hash())
                        .map_err(ChannelError::Group)?;
                    Some(job)
                } else {
                    group.get_active_job().cloned()
                }
            }
            Work::Upstream(job) => {
                let job_id = self.context.next_job_id.fetch_add(1, Ordering::Relaxed);
                Some(job.extended_job(group.get_group_channel_id(), job_id, future)?)
            }
        };
        Ok(job)
    }

    /// On a new tip (or a new member): one future job for the whole group, then the prev hash
    /// that activates it, each sent once to the group channel.
    pub(super) async fn start_group_on(&mut self, work: &Work) -> Result<(), CloseReason> {
        let Some(group_channel_id) = self.group.as_ref().map(GroupChannel::get_group_channel_id)
        else {
            return Ok(());
        };
        let job = self.group_job(work, true).map_err(|error| {
            CloseReason::Protocol(format!(
                "group channel {group_channel_id} cannot take the work: {error}"
            ))
        })?;
        let Some(job) = job else {
            return Ok(());
        };
        self.give_group_job(&job, work, true)?;
        let job_id = job.get_job_id();
        // Jobs of the old tip can only be stale now.
        self.group_jobs.clear();
        self.group_jobs.insert(job_id, job.clone());
        self.send_mining(MiningOwned::NewExtendedMiningJob(
            job.get_job_message().clone(),
        ))
        .await?;
        self.send_mining(MiningOwned::SetNewPrevHash(
            work.prev_hash_message(group_channel_id, job_id),
        ))
        .await
    }

    /// On the same tip: a fresh job for the whole group, active at once.
    pub(super) async fn refresh_group(&mut self, work: &Work) -> Result<(), CloseReason> {
        let Some(group_channel_id) = self.group.as_ref().map(GroupChannel::get_group_channel_id)
        else {
            return Ok(());
        };
        let job = self.group_job(work, false).map_err(|error| {
            CloseReason::Protocol(format!(
                "group channel {group_channel_id} cannot take the work: {error}"
            ))
        })?;
        let Some(job) = job else {
            return Ok(());
        };
        self.give_group_job(&job, work, false)?;
        self.group_jobs.insert(job.get_job_id(), job.clone());
        self.send_mining(MiningOwned::NewExtendedMiningJob(
            job.get_job_message().clone(),
        ))
        .await
    }

    /// Hands a group job to every member, so each can validate shares on it (with its own
    /// extranonce prefix and target); `with_prev_hash` also moves them to the template's tip.
    pub(super) fn give_group_job(
        &mut self,
        job: &ExtendedJob,
        work: &Work,
        with_prev_hash: bool,
    ) -> Result<(), CloseReason> {
        let members: Vec<u32> = self
            .group
            .as_ref()
            .map(|group| group.get_channel_ids().copied().collect())
            .unwrap_or_default();
        for channel_id in members {
            let channel = self
                .channels
                .get_mut(&channel_id)
                .expect("members are channels");
            let cannot = |error: ChannelError| {
                CloseReason::Protocol(format!(
                    "channel {channel_id} cannot take the group job: {error}"
                ))
            };
            channel.take_job(job.clone()).map_err(cannot)?;
            if with_prev_hash {
                channel.apply_prev_hash(work).map_err(cannot)?;
                // As for ungrouped channels: only the new tip's jobs can take shares.
                channel.jobs.clear();
            }
            channel.remember_active_job(work);
        }
        Ok(())
    }
}
