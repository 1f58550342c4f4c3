//! What the pool says on the connection, one handler per message kind.

use hashpool_sv2_client::ClientError;
use stratum_core::bitcoin::Target;
use stratum_core::mining_sv2::{
    CloseChannelOwned, OpenExtendedMiningChannelSuccessOwned, OpenMiningChannelErrorOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, MiningOwned};

use super::session::Session;
use super::{Event, MinerId, Upstream, UpstreamError};
use crate::reject::ShareRejection;

impl Upstream {
    pub(super) async fn on_pool_message(
        &mut self,
        session: &mut Session,
        message: AnyMessageOwned,
    ) -> Result<(), UpstreamError> {
        match message {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(_)) => {
                Ok(self.set_up(session).await?)
            }
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(error)) => {
                Err(ClientError::SetupRefused {
                    code: error.error_code.as_utf8_or_hex(),
                }
                .into())
            }
            AnyMessageOwned::Mining(mining) => Ok(self.on_mining(session, mining).await?),
            other => {
                tracing::debug!(message = ?other, "ignoring a message from the pool");
                Ok(())
            }
        }
    }

    async fn on_mining(
        &mut self,
        session: &mut Session,
        message: MiningOwned,
    ) -> Result<(), ClientError> {
        match message {
            MiningOwned::OpenExtendedMiningChannelSuccess(success) => {
                self.channel_opened(session, success).await
            }
            MiningOwned::OpenMiningChannelError(error) => {
                self.channel_refused(session, error);
                Ok(())
            }
            MiningOwned::NewExtendedMiningJob(job) => {
                self.route(session, job.channel_id, Event::Job(job)).await
            }
            MiningOwned::SetNewPrevHash(prev_hash) => {
                self.route(session, prev_hash.channel_id, Event::PrevHash(prev_hash))
                    .await
            }
            MiningOwned::SetTarget(set_target) => {
                let target = Target::from_le_bytes(set_target.maximum_target.to_array());
                self.route(session, set_target.channel_id, Event::Target(target))
                    .await
            }
            MiningOwned::SubmitSharesSuccess(success) => {
                let event = Event::Accepted {
                    channel_id: success.channel_id,
                    last_sequence_number: success.last_sequence_number,
                };
                self.route(session, success.channel_id, event).await
            }
            MiningOwned::SubmitSharesError(error) => {
                let event = Event::Rejected {
                    channel_id: error.channel_id,
                    sequence_number: error.sequence_number,
                    reason: ShareRejection::Pool(error.error_code.as_utf8_or_hex()),
                };
                self.route(session, error.channel_id, event).await
            }
            MiningOwned::CloseChannel(close) => {
                self.channel_closed_by_pool(session, close);
                Ok(())
            }
            MiningOwned::UpdateChannelError(error) => {
                tracing::warn!(
                    channel_id = error.channel_id,
                    code = %error.error_code.as_utf8_or_hex(),
                    "the pool refused UpdateChannel"
                );
                Ok(())
            }
            other => {
                tracing::debug!(message = ?other, "ignoring a mining message from the pool");
                Ok(())
            }
        }
    }

    /// SetupConnection.Success: every registered miner's channel can open now.
    async fn set_up(&mut self, session: &mut Session) -> Result<(), ClientError> {
        session.set_up = true;
        self.metrics.upstream_connected.set(1);
        tracing::info!(
            miners = self.miners.len(),
            "connected to the pool; opening a channel per authorized miner"
        );
        let miners: Vec<MinerId> = self.miners.keys().copied().collect();
        for miner in miners {
            self.open_channel(session, miner).await?;
        }
        Ok(())
    }

    async fn channel_opened(
        &mut self,
        session: &mut Session,
        success: OpenExtendedMiningChannelSuccessOwned,
    ) -> Result<(), ClientError> {
        let channel_id = success.channel_id;
        let Some(miner) = session.requests.remove(&success.request_id) else {
            // Its miner left while the channel was opening.
            self.metrics.channels_open.inc();
            return self.close_channel(session, channel_id).await;
        };
        let Some(entry) = self.miners.get_mut(&miner) else {
            return Ok(());
        };
        entry.channel_id = Some(channel_id);
        session.channels.insert(channel_id, miner);
        self.metrics.channels_open.inc();
        tracing::info!(miner, channel_id, identity = %entry.identity, "channel opened");
        let (hashrate, told) = (entry.hashrate, entry.channel_hashrate);
        let opened = Event::Opened {
            channel_id,
            target: Target::from_le_bytes(success.target.to_array()),
            extranonce_prefix: success.extranonce_prefix.as_bytes().to_vec(),
            rollable_extranonce_size: success.extranonce_size,
        };
        self.route(session, channel_id, opened).await?;
        if hashrate == told {
            return Ok(());
        }
        // suggest_difficulty arrived while the channel was opening.
        if let Some(entry) = self.miners.get_mut(&miner) {
            entry.channel_hashrate = hashrate;
        }
        session.update_channel(channel_id, hashrate).await
    }

    fn channel_refused(&mut self, session: &mut Session, error: OpenMiningChannelErrorOwned) {
        let code = error.error_code.as_utf8_or_hex();
        let Some(miner) = session.requests.remove(&error.request_id) else {
            return;
        };
        if let Some(entry) = self.miners.remove(&miner) {
            tracing::info!(miner, identity = %entry.identity, %code, "the pool refused the channel");
            let _ = entry.events.send(Event::Refused { code });
        }
    }

    fn channel_closed_by_pool(&mut self, session: &mut Session, close: CloseChannelOwned) {
        let reason = close.reason_code.as_utf8_or_hex();
        let Some(miner) = session.channels.remove(&close.channel_id) else {
            return;
        };
        self.metrics.channel_closed();
        if let Some(entry) = self.miners.remove(&miner) {
            let _ = entry.events.send(Event::Closed { reason });
        }
    }
}
