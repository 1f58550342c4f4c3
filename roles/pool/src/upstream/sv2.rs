//! A Stratum V2 upstream: Noise with the authority key checked, one extended channel.

use std::time::Duration;

use hashpool_sv2_client::{
    Device, Messages, PoolConnection, PoolWriter, REQUIRES_FIXED_VERSION, REQUIRES_VERSION_ROLLING,
    VERSION_ROLLING_MASK,
};
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

use super::channel::{Opened, UpstreamChannel};
use super::{ForwardedShare, Protocol, Shared, UpstreamError};
use crate::config::UpstreamConfig;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const URL_SCHEME: &str = "stratum2+tcp://";
const DEVICE: Device = Device {
    vendor: "hashpool-proxy",
    hardware_version: "",
    firmware: env!("CARGO_PKG_VERSION"),
};

pub(super) struct Sv2Session {
    channel: UpstreamChannel,
    writer: PoolWriter,
    messages: Messages,
}

impl Sv2Session {
    /// Connects to `address`, sets up and opens the extended channel.
    pub(super) async fn connect(
        address: &str,
        upstream: &UpstreamConfig,
        session: u64,
        shared: &Shared,
    ) -> Result<Self, UpstreamError> {
        let connect = PoolConnection::connect(address, upstream.authority_public_key);
        let mut connection = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))??;
        let flags = connection.setup(REQUIRES_VERSION_ROLLING, &DEVICE).await?;
        let needed = u16::try_from(shared.channel_extranonce_len).unwrap_or(u16::MAX);
        let opened = connection
            .open_extended(
                1,
                &upstream.user_identity,
                upstream.nominal_hashrate,
                needed,
            )
            .await?
            .map_err(|refused| UpstreamError::Refused(refused.code))?;
        let channel = UpstreamChannel::new(
            session,
            Opened {
                channel_id: opened.channel_id,
                identity: upstream.user_identity.clone(),
                extranonce_prefix: opened.extranonce_prefix.as_bytes().to_vec(),
                extranonce_size: usize::from(opened.extranonce_size),
                target: Target::from_le_bytes(opened.target.to_array()),
                nominal_hashrate: upstream.nominal_hashrate,
                // BIP320's bits: what any Sv2 upstream takes rolled.
                version_mask: (flags & REQUIRES_FIXED_VERSION == 0).then_some(VERSION_ROLLING_MASK),
            },
            shared,
        )?;
        tracing::info!(
            channel_id = opened.channel_id,
            extranonce_size = opened.extranonce_size,
            "upstream channel open (Sv2)"
        );
        let (reader, writer) = connection.into_split();
        Ok(Self {
            channel,
            writer,
            messages: reader.spawn(256),
        })
    }

    fn on_message(
        &mut self,
        message: AnyMessageOwned,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        let AnyMessageOwned::Mining(message) = message else {
            return Err(UpstreamError::Protocol(format!(
                "unexpected message: {message}"
            )));
        };
        match message {
            MiningOwned::NewExtendedMiningJob(job) => self.channel.on_job(job, shared)?,
            MiningOwned::SetNewPrevHash(prev_hash) => {
                self.channel.on_prev_hash(prev_hash, shared)?
            }
            MiningOwned::SetTarget(target) => self
                .channel
                .set_target(Target::from_le_bytes(target.maximum_target.to_array()))?,
            MiningOwned::SetExtranoncePrefix(set) => self.channel.set_extranonce_prefix(
                set.extranonce_prefix.as_bytes().to_vec(),
                false,
                shared,
            )?,
            MiningOwned::SubmitSharesSuccess(success) => {
                self.channel
                    .on_acknowledgement(success.new_submits_accepted_count, success.new_shares_sum);
                self.channel
                    .accepted_through(success.last_sequence_number, shared);
            }
            MiningOwned::SubmitSharesError(error) => self.channel.on_rejection(
                error.sequence_number,
                &error.error_code.as_utf8_or_hex(),
                shared,
            ),
            MiningOwned::CloseChannel(_) => return Err(UpstreamError::ChannelClosed),
            other => tracing::debug!(message = %other, "upstream message ignored"),
        }
        Ok(())
    }
}

impl Protocol for Sv2Session {
    type Incoming = AnyMessageOwned;

    async fn next_incoming(&mut self) -> Result<AnyMessageOwned, UpstreamError> {
        Ok(self.messages.recv().await?)
    }

    fn on_incoming(
        &mut self,
        message: AnyMessageOwned,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        self.on_message(message, shared)
    }

    async fn submit(
        &mut self,
        share: ForwardedShare,
        shared: &Shared,
    ) -> Result<(), UpstreamError> {
        let Some(submit) = self.channel.share_to_submit(share, shared) else {
            return Ok(());
        };
        self.writer
            .send_mining(MiningOwned::SubmitSharesExtended(submit))
            .await?;
        Ok(())
    }

    async fn close(&mut self) {
        self.writer.shutdown().await;
    }

    fn gave_work(&self) -> bool {
        self.channel.gave_work()
    }
}
