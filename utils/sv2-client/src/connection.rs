use stratum_apps::key_utils::Secp256k1PublicKey;
use stratum_apps::network_helpers::connect_with_noise;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_apps::stratum_core::binary_sv2::Str0255Owned;
use stratum_apps::stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_apps::stratum_core::framing_sv2::framing::MessageFrame;
use stratum_apps::stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned,
};
use stratum_apps::stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessages, CommonMessagesOwned, Mining, MiningOwned,
};
use tokio::net::TcpStream;

use crate::error::{ChannelRefused, ClientError};
use crate::protocol::SV2_VERSION;

/// How a device describes itself in SetupConnection (the pool logs the vendor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub vendor: &'static str,
    pub hardware_version: &'static str,
    pub firmware: &'static str,
}

/// An Sv2 mining connection to a pool over Noise.
pub struct PoolConnection {
    reader: PoolReader,
    writer: PoolWriter,
}

/// The receiving half. Reading is not cancellation safe: await it alone, or
/// [`PoolReader::spawn`] it to select on its messages.
pub struct PoolReader {
    reader: NoiseTcpReadHalf,
}

/// The sending half.
pub struct PoolWriter {
    writer: NoiseTcpWriteHalf,
}

impl PoolConnection {
    /// Connects and completes the Noise handshake, checking the pool's certificate against
    /// `authority` (no check when `None`: encrypted but unauthenticated).
    pub async fn connect(
        address: &str,
        authority: Option<Secp256k1PublicKey>,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|source| ClientError::Connect {
                address: address.to_owned(),
                source,
            })?;
        let (reader, writer) = connect_with_noise(tcp, authority)
            .await
            .map_err(ClientError::Handshake)?
            .into_split();
        Ok(Self {
            reader: PoolReader { reader },
            writer: PoolWriter { writer },
        })
    }

    pub fn into_split(self) -> (PoolReader, PoolWriter) {
        (self.reader, self.writer)
    }

    /// SetupConnection for the mining protocol with `flags` (see [`crate::protocol`]). Returns
    /// the flags of the pool's SetupConnection.Success (e.g. [`crate::REQUIRES_FIXED_VERSION`]).
    pub async fn setup(&mut self, flags: u32, device: &Device) -> Result<u32, ClientError> {
        self.writer.send_setup(flags, device).await?;
        match self.recv().await? {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(success)) => {
                Ok(success.flags)
            }
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(error)) => {
                Err(ClientError::SetupRefused {
                    code: error.error_code.as_utf8_or_hex(),
                })
            }
            other => Err(ClientError::Unexpected(other.to_string())),
        }
    }

    /// Opens a standard channel whose `user_identity` is `identity` (`pubkey[.worker]`) and
    /// waits for the answer: the channel, or the pool's refusal (the connection stays usable).
    pub async fn open_standard(
        &mut self,
        request_id: u32,
        identity: &str,
        nominal_hash_rate: f32,
    ) -> Result<Result<OpenStandardMiningChannelSuccessOwned, ChannelRefused>, ClientError> {
        let open = OpenStandardMiningChannelOwned {
            request_id,
            user_identity: sv2_text("user_identity", identity)?,
            nominal_hash_rate,
            max_target: [0xff; 32].into(),
        };
        self.send_mining(MiningOwned::OpenStandardMiningChannel(open))
            .await?;
        self.channel_answer(|answer| match answer {
            MiningOwned::OpenStandardMiningChannelSuccess(success) => Some(success.clone()),
            _ => None,
        })
        .await
    }

    /// Opens an extended channel (the pool's coinbase, `min_extranonce_size` bytes of it to
    /// roll) and waits for the answer: the channel, or the pool's refusal.
    pub async fn open_extended(
        &mut self,
        request_id: u32,
        identity: &str,
        nominal_hash_rate: f32,
        min_extranonce_size: u16,
    ) -> Result<Result<OpenExtendedMiningChannelSuccessOwned, ChannelRefused>, ClientError> {
        let open = OpenExtendedMiningChannelOwned {
            request_id,
            user_identity: sv2_text("user_identity", identity)?,
            nominal_hash_rate,
            max_target: [0xff; 32].into(),
            min_extranonce_size,
        };
        self.send_mining(MiningOwned::OpenExtendedMiningChannel(open))
            .await?;
        self.channel_answer(|answer| match answer {
            MiningOwned::OpenExtendedMiningChannelSuccess(success) => Some(success.clone()),
            _ => None,
        })
        .await
    }

    /// The pool's answer to an open request: the success `success` picks out, or its refusal.
    async fn channel_answer<Success>(
        &mut self,
        success: impl FnOnce(&MiningOwned) -> Option<Success>,
    ) -> Result<Result<Success, ChannelRefused>, ClientError> {
        let answer = self.recv().await?;
        if let AnyMessageOwned::Mining(mining) = &answer {
            if let Some(opened) = success(mining) {
                return Ok(Ok(opened));
            }
            if let MiningOwned::OpenMiningChannelError(error) = mining {
                return Ok(Err(ChannelRefused {
                    request_id: error.request_id,
                    code: error.error_code.as_utf8_or_hex(),
                }));
            }
        }
        Err(ClientError::Unexpected(answer.to_string()))
    }

    pub async fn send(&mut self, message: AnyMessageOwned) -> Result<(), ClientError> {
        self.writer.send(message).await
    }

    pub async fn send_mining(&mut self, message: MiningOwned) -> Result<(), ClientError> {
        self.writer.send_mining(message).await
    }

    /// The next message from the pool.
    pub async fn recv(&mut self) -> Result<AnyMessageOwned, ClientError> {
        self.reader.recv().await
    }
}

impl PoolWriter {
    /// Sends SetupConnection for the mining protocol without waiting for the answer, for a
    /// client that keeps serving others meanwhile; [`PoolConnection::setup`] waits for it.
    pub async fn send_setup(&mut self, flags: u32, device: &Device) -> Result<(), ClientError> {
        self.send(setup_connection(flags, device)?).await
    }

    pub async fn send(&mut self, message: AnyMessageOwned) -> Result<(), ClientError> {
        let frame: MessageFrame<AnyMessageOwned> =
            message.try_into().map_err(ClientError::Encode)?;
        self.writer
            .write_frame(frame)
            .await
            .map_err(ClientError::transport)
    }

    pub async fn send_mining(&mut self, message: MiningOwned) -> Result<(), ClientError> {
        self.send(AnyMessageOwned::Mining(message)).await
    }

    /// Closes the sending side (the pool sees the connection end).
    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

impl PoolReader {
    /// The next message from the pool: a mining or a common message (a pool sends nothing
    /// else to a miner).
    pub async fn recv(&mut self) -> Result<AnyMessageOwned, ClientError> {
        let mut frame = self
            .reader
            .read_frame()
            .await
            .map_err(ClientError::transport)?;
        let header = frame.header();
        let message_type = header.msg_type();
        let message: AnyMessage<'_> =
            (header, frame.payload())
                .try_into()
                .map_err(|error| ClientError::Decode {
                    message_type,
                    error,
                })?;
        match message {
            AnyMessage::Mining(mining) => Ok(AnyMessageOwned::Mining(Mining::into_owned(mining))),
            AnyMessage::Common(common) => {
                Ok(AnyMessageOwned::Common(CommonMessages::into_owned(common)))
            }
            other => Err(ClientError::Unexpected(other.to_string())),
        }
    }
}

fn setup_connection(flags: u32, device: &Device) -> Result<AnyMessageOwned, ClientError> {
    let setup = SetupConnectionOwned {
        protocol: Protocol::MiningProtocol,
        min_version: SV2_VERSION,
        max_version: SV2_VERSION,
        flags,
        endpoint_host: sv2_text("endpoint_host", "")?,
        endpoint_port: 0,
        vendor: sv2_text("vendor", device.vendor)?,
        hardware_version: sv2_text("hardware_version", device.hardware_version)?,
        firmware: sv2_text("firmware", device.firmware)?,
        device_id: sv2_text("device_id", "")?,
    };
    Ok(AnyMessageOwned::Common(
        CommonMessagesOwned::SetupConnection(setup),
    ))
}

fn sv2_text(field: &'static str, value: &str) -> Result<Str0255Owned, ClientError> {
    Str0255Owned::try_from(value.to_owned()).map_err(|_| ClientError::TooLong { field })
}
