//! Templates to jobs: each channel's own jobs, and the group channel's shared ones.

use super::channel::ChannelError;
use super::*;

impl Downstream {
    /// New template: on a new tip, every channel gets a future job and then the new prev hash;
    /// on the same tip, a fresh job on the current one.
    pub(super) async fn on_template(&mut self, template: Arc<Template>) -> Result<(), CloseReason> {
        let new_tip =
            self.template.as_ref().map(|current| current.prev_hash) != Some(template.prev_hash);
        self.template = Some(template.clone());
        let ids: Vec<u32> = self
            .channels
            .iter()
            .filter(|(_, channel)| !channel.grouped)
            .map(|(channel_id, _)| *channel_id)
            .collect();
        for channel_id in ids {
            if new_tip {
                self.start_channel_on(channel_id, &template).await?;
            } else {
                let channel = self.channels.get_mut(&channel_id).expect("channel exists");
                channel.apply_template(&template, false).map_err(|error| {
                    CloseReason::Protocol(format!(
                        "channel {channel_id} cannot take the template: {error}"
                    ))
                })?;
                channel.remember_active_job(&template);
                if let Some(job) = channel.active_job_message() {
                    self.send_mining(job).await?;
                }
            }
        }
        if new_tip {
            self.start_group_on(&template).await
        } else {
            self.refresh_group(&template).await
        }
    }

    /// A channel's first work on a tip: the template as a future job, then the prev hash that
    /// activates it.
    pub(super) async fn start_channel_on(
        &mut self,
        channel_id: u32,
        template: &Template,
    ) -> Result<(), CloseReason> {
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        let cannot = |error: ChannelError| {
            CloseReason::Protocol(format!(
                "channel {channel_id} cannot take the template: {error}"
            ))
        };
        channel.apply_template(template, true).map_err(cannot)?;
        let future_job = channel.future_job_message(template.id);
        channel.apply_prev_hash(template).map_err(cannot)?;
        // Jobs of the old tip are stale now: channels_sv2 refuses shares on them before this
        // map is read, so the channel keeps only the jobs of the current tip.
        channel.jobs.clear();
        let job_id = channel.remember_active_job(template);
        if let (Some(job), Some(job_id)) = (future_job, job_id) {
            self.send_mining(job).await?;
            self.send_mining(MiningOwned::SetNewPrevHash(prev_hash_message(
                channel_id, job_id, template,
            )))
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

    /// On a new tip (or a new member): one future job for the whole group, then the prev hash
    /// that activates it, each sent once to the group channel.
    pub(super) async fn start_group_on(&mut self, template: &Template) -> Result<(), CloseReason> {
        let Some(group) = self.group.as_mut().filter(|group| !group.is_empty()) else {
            return Ok(());
        };
        let group_channel_id = group.get_group_channel_id();
        let cannot = |error: ChannelError| {
            CloseReason::Protocol(format!(
                "group channel {group_channel_id} cannot take the template: {error}"
            ))
        };
        group
            .on_new_template(template.new_template(true), template.reward_outputs.clone())
            .map_err(|error| cannot(ChannelError::Group(error)))?;
        let job = group
            .get_future_job_id_from_template_id(template.id)
            .and_then(|job_id| group.get_future_job(job_id))
            .cloned()
            .ok_or_else(|| cannot(ChannelError::NoFutureJob(template.id)))?;
        group
            .on_set_new_prev_hash(template.set_new_prev_hash())
            .map_err(|error| cannot(ChannelError::Group(error)))?;
        self.give_group_job(&job, template, true)?;
        let job_id = job.get_job_id();
        // Jobs of the old tip can only be stale now.
        self.group_jobs.clear();
        self.group_jobs.insert(job_id, job.clone());
        self.send_mining(MiningOwned::NewExtendedMiningJob(
            job.get_job_message().clone(),
        ))
        .await?;
        self.send_mining(MiningOwned::SetNewPrevHash(prev_hash_message(
            group_channel_id,
            job_id,
            template,
        )))
        .await
    }

    /// On the same tip: a fresh job for the whole group, active at once.
    pub(super) async fn refresh_group(&mut self, template: &Template) -> Result<(), CloseReason> {
        let Some(group) = self.group.as_mut().filter(|group| !group.is_empty()) else {
            return Ok(());
        };
        let group_channel_id = group.get_group_channel_id();
        group
            .on_new_template(
                template.new_template(false),
                template.reward_outputs.clone(),
            )
            .map_err(|error| {
                CloseReason::Protocol(format!(
                    "group channel {group_channel_id} cannot take the template: {error:?}"
                ))
            })?;
        let Some(job) = group.get_active_job().cloned() else {
            return Ok(());
        };
        self.give_group_job(&job, template, false)?;
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
        template: &Template,
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
            let ChannelKind::Standard(inner) = &mut channel.kind else {
                unreachable!("only standard channels are grouped");
            };
            let cannot = |error| {
                CloseReason::Protocol(format!(
                    "channel {channel_id} cannot take the group job: {error:?}"
                ))
            };
            inner.on_group_channel_job(job.clone()).map_err(cannot)?;
            if with_prev_hash {
                inner
                    .on_set_new_prev_hash(template.set_new_prev_hash())
                    .map_err(cannot)?;
                // As for ungrouped channels: only the new tip's jobs can take shares.
                channel.jobs.clear();
            }
            channel.remember_active_job(template);
        }
        Ok(())
    }
}
