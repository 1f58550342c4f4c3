//! One connection to the pool: its SetupConnection, its channels, and the miners' commands.

use hashpool_service::stopped;
use std::collections::HashMap;

use hashpool_sv2_client::{ClientError, Messages, PoolWriter, REQUIRES_VERSION_ROLLING};
use stratum_core::bitcoin::Target;
use stratum_core::mining_sv2::{CloseChannelOwned, UpdateChannelOwned};
use stratum_core::parsers_sv2::MiningOwned;
use stratum_core::stratum_translation::sv1_to_sv2::build_sv2_open_extended_mining_channel;
use tokio::sync::watch;

use super::{
    Command, Event, MinerId, SessionEnd, Upstream, UpstreamError, CONNECT_TIMEOUT, TRANSLATOR,
};
use crate::reject::ShareRejection;

/// The CloseChannel reason when a miner disconnects.
const MINER_DISCONNECTED: &str = "miner-disconnected";

pub(super) struct Session {
    writer: PoolWriter,
    pub(super) set_up: bool,
    pub(super) channels: HashMap<u32, MinerId>,
    pub(super) requests: HashMap<u32, MinerId>,
    next_request_id: u32,
}

impl Session {
    pub(super) fn new(writer: PoolWriter) -> Self {
        Self {
            writer,
            set_up: false,
            channels: HashMap::new(),
            requests: HashMap::new(),
            next_request_id: 1,
        }
    }

    pub(super) async fn send(&mut self, message: MiningOwned) -> Result<(), ClientError> {
        self.writer.send_mining(message).await
    }

    pub(super) async fn update_channel(
        &mut self,
        channel_id: u32,
        hashrate: f32,
    ) -> Result<(), ClientError> {
        self.send(MiningOwned::UpdateChannel(UpdateChannelOwned {
            channel_id,
            nominal_hash_rate: hashrate,
            maximum_target: [0xff; 32].into(),
        }))
        .await
    }

    /// Ends the connection without a last word: a CloseChannel per miner would say nothing
    /// closing the connection does not.
    pub(super) async fn close(&mut self) {
        self.writer.shutdown().await;
    }
}

impl Upstream {
    /// SetupConnection, then the pool's messages and the miners' commands until the connection
    /// ends. Commands are served while the pool has not answered SetupConnection yet: a miner
    /// registering meanwhile has its channel opened once it does.
    pub(super) async fn run_session(
        &mut self,
        session: &mut Session,
        mut messages: Messages,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        if let Err(error) = session
            .writer
            .send_setup(REQUIRES_VERSION_ROLLING, &TRANSLATOR)
            .await
        {
            return SessionEnd::Lost(error.into());
        }
        let setup_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
        tokio::pin!(setup_deadline);
        loop {
            let step = tokio::select! {
                biased;
                () = stopped(shutdown) => return SessionEnd::Shutdown,
                message = messages.recv() => match message {
                    Ok(message) => self.on_pool_message(session, message).await,
                    Err(error) => Err(error.into()),
                },
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(session, command).await.map_err(UpstreamError::from),
                    None => return SessionEnd::Shutdown,
                },
                () = &mut setup_deadline, if !session.set_up => Err(UpstreamError::SetupTimeout),
            };
            if let Err(error) = step {
                return SessionEnd::Lost(error);
            }
        }
    }

    async fn on_command(
        &mut self,
        session: &mut Session,
        command: Command,
    ) -> Result<(), ClientError> {
        match command {
            Command::Open(registration) => {
                let miner = registration.miner;
                self.miners.insert(miner, registration.into());
                if session.set_up {
                    self.open_channel(session, miner).await?;
                }
                Ok(())
            }
            Command::UpdateHashrate { miner, hashrate } => {
                self.update_hashrate(session, miner, hashrate).await
            }
            Command::Submit { miner, share } => {
                let Some(entry) = self.miners.get(&miner) else {
                    return Ok(());
                };
                if entry.channel_id != Some(share.channel_id) {
                    // A share on a channel of an earlier connection.
                    let _ = entry.events.send(Event::Rejected {
                        channel_id: share.channel_id,
                        sequence_number: share.sequence_number,
                        reason: ShareRejection::UpstreamReconnected,
                    });
                    return Ok(());
                }
                session.send(MiningOwned::SubmitSharesExtended(share)).await
            }
            Command::Close { miner } => self.miner_left(session, miner).await,
        }
    }

    async fn update_hashrate(
        &mut self,
        session: &mut Session,
        miner: MinerId,
        hashrate: f32,
    ) -> Result<(), ClientError> {
        let Some(entry) = self.miners.get_mut(&miner) else {
            return Ok(());
        };
        entry.hashrate = hashrate;
        let Some(channel_id) = entry.channel_id else {
            return Ok(());
        };
        entry.channel_hashrate = hashrate;
        session.update_channel(channel_id, hashrate).await
    }

    async fn miner_left(
        &mut self,
        session: &mut Session,
        miner: MinerId,
    ) -> Result<(), ClientError> {
        let Some(entry) = self.miners.remove(&miner) else {
            return Ok(());
        };
        session.requests.retain(|_, waiting| *waiting != miner);
        match entry.channel_id {
            Some(channel_id) => self.close_channel(session, channel_id).await,
            None => Ok(()),
        }
    }

    pub(super) async fn close_channel(
        &self,
        session: &mut Session,
        channel_id: u32,
    ) -> Result<(), ClientError> {
        session.channels.remove(&channel_id);
        self.metrics.channel_closed();
        session
            .send(MiningOwned::CloseChannel(CloseChannelOwned {
                channel_id,
                reason_code: MINER_DISCONNECTED
                    .to_owned()
                    .try_into()
                    .expect("a short reason"),
            }))
            .await
    }

    pub(super) async fn open_channel(
        &mut self,
        session: &mut Session,
        miner: MinerId,
    ) -> Result<(), ClientError> {
        let Some(entry) = self.miners.get_mut(&miner) else {
            return Ok(());
        };
        let request_id = session.next_request_id;
        session.next_request_id = session.next_request_id.wrapping_add(1);
        let open = match build_sv2_open_extended_mining_channel(
            request_id,
            entry.identity.clone(),
            entry.hashrate,
            Target::from_le_bytes([0xff; 32]),
            entry.min_extranonce_size,
        ) {
            Ok(open) => open,
            Err(error) => {
                let _ = entry.events.send(Event::Refused {
                    code: format!("{error:?}"),
                });
                self.miners.remove(&miner);
                return Ok(());
            }
        };
        entry.channel_hashrate = entry.hashrate;
        session.requests.insert(request_id, miner);
        tracing::debug!(miner, request_id, identity = %entry.identity, "opening channel");
        session
            .send(MiningOwned::OpenExtendedMiningChannel(open))
            .await
    }

    /// Sends an event to the miner on `channel_id`; a miner that is gone has its channel closed.
    pub(super) async fn route(
        &mut self,
        session: &mut Session,
        channel_id: u32,
        event: Event,
    ) -> Result<(), ClientError> {
        let Some(miner) = session.channels.get(&channel_id).copied() else {
            tracing::debug!(channel_id, ?event, "message for a channel no miner has");
            return Ok(());
        };
        let delivered = self
            .miners
            .get(&miner)
            .is_some_and(|entry| entry.events.send(event).is_ok());
        if !delivered {
            self.miners.remove(&miner);
            self.close_channel(session, channel_id).await?;
        }
        Ok(())
    }
}
