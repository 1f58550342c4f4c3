//! What the upstream task says about the miner's channel, one handler per event.

use stratum_core::bitcoin::Target;
use stratum_core::sv1_api::client_to_server::SubmitError;
use stratum_core::sv1_api::server_to_client::Notify;

use super::difficulty::{advertised_target, set_difficulty};
use super::{Channel, CloseReason, Downstream};
use crate::job::{ExtranonceLayout, JobBook, JobContext, JobError};
use crate::sv1;
use crate::upstream::Event;

impl Downstream {
    pub(super) async fn on_event(&mut self, event: Event) -> Result<(), CloseReason> {
        match event {
            Event::Queued => {
                tracing::info!("pool unreachable; the channel opens when it is back");
                self.grant_authorize().await
            }
            Event::Lost => self.on_lost().await,
            Event::Opened {
                channel_id,
                target,
                extranonce_prefix,
                rollable_extranonce_size,
            } => {
                let layout = ExtranonceLayout::new(
                    extranonce_prefix,
                    usize::from(rollable_extranonce_size),
                    self.extranonce1.clone(),
                    self.extranonce2_size,
                )?;
                self.on_opened(channel_id, layout, target).await
            }
            Event::Refused { code } => self.on_refused(code).await,
            Event::Closed { reason } => {
                self.registered = false;
                Err(CloseReason::ChannelClosed { reason })
            }
            Event::Target(target) => self.on_target(target).await,
            Event::Job(job) => {
                let channel_id = job.channel_id;
                self.notify_with(channel_id, |jobs, context| jobs.on_job(job, context))
                    .await
            }
            Event::PrevHash(prev_hash) => {
                let channel_id = prev_hash.channel_id;
                self.notify_with(channel_id, |jobs, context| {
                    jobs.on_prev_hash(prev_hash, context)
                })
                .await
            }
            Event::Accepted {
                channel_id,
                last_sequence_number,
            } => self.shares_accepted(channel_id, last_sequence_number).await,
            Event::Rejected {
                sequence_number,
                reason,
                ..
            } => self.share_rejected(sequence_number, reason).await,
        }
    }

    /// The pool connection is gone: the miner stays, its channel and unanswered shares do not.
    async fn on_lost(&mut self) -> Result<(), CloseReason> {
        tracing::info!("pool connection lost; keeping the miner while reconnecting");
        self.channel = None;
        self.jobs.reset_channel();
        self.fail_pending_shares("pool connection lost").await?;
        self.grant_authorize().await
    }

    async fn on_opened(
        &mut self,
        channel_id: u32,
        layout: ExtranonceLayout,
        target: Target,
    ) -> Result<(), CloseReason> {
        tracing::info!(channel_id, "channel open");
        self.channel = Some(Channel {
            channel_id,
            layout,
            target,
            advertised_target: advertised_target(target),
        });
        self.jobs.reset_channel();
        self.grant_authorize().await?;
        self.send_difficulty(target).await
    }

    /// The pool refused the channel: an `authorize` still waiting is refused, otherwise (a
    /// reopen after a reconnect) the connection is closed.
    async fn on_refused(&mut self, code: String) -> Result<(), CloseReason> {
        self.registered = false;
        let user = self.user.take().unwrap_or_default();
        if self.pending_authorize.is_some() {
            let refused = CloseReason::Refused { user, code };
            self.refuse_authorize(refused.to_string()).await
        } else {
            Err(CloseReason::Refused { user, code })
        }
    }

    async fn on_target(&mut self, target: Target) -> Result<(), CloseReason> {
        let Some(channel) = self.channel.as_mut() else {
            return Ok(());
        };
        channel.target = target;
        channel.advertised_target = advertised_target(target);
        self.send_difficulty(target).await
    }

    /// Applies a job message for `channel_id` to the miner's jobs and sends the notify it makes;
    /// a message for another channel (one the miner no longer has) is dropped.
    async fn notify_with(
        &mut self,
        channel_id: u32,
        apply: impl FnOnce(&mut JobBook, &JobContext<'_>) -> Result<Option<Notify>, JobError>,
    ) -> Result<(), CloseReason> {
        let Some(channel) = self.channel.as_ref() else {
            return Ok(());
        };
        if channel.channel_id != channel_id {
            return Ok(());
        }
        let context = JobContext {
            layout: &channel.layout,
            extranonce1: &self.extranonce1,
            upstream_target: channel.target,
            advertised_target: channel.advertised_target,
        };
        let notify = apply(&mut self.jobs, &context);
        match notify {
            Ok(Some(notify)) => {
                tracing::debug!(job_id = %notify.job_id, clean = notify.clean_jobs, "notify");
                self.write(notify.into()).await
            }
            Ok(None) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "cannot give the miner this job");
                Ok(())
            }
        }
    }

    async fn send_difficulty(&mut self, target: Target) -> Result<(), CloseReason> {
        match set_difficulty(target) {
            Ok(message) => self.write(message).await,
            Err(error) => {
                tracing::warn!(?error, "cannot express the channel target as a difficulty");
                Ok(())
            }
        }
    }

    async fn fail_pending_shares(&mut self, reason: &str) -> Result<(), CloseReason> {
        let pending = std::mem::take(&mut self.pending_shares);
        for (_, request_id) in pending {
            self.context.metrics.share("upstream-unavailable");
            self.respond(sv1::error_response(
                request_id,
                SubmitError::Other.code(),
                reason,
            ))
            .await?;
        }
        Ok(())
    }
}
