use stratum_apps::key_utils::Secp256k1PublicKey;
use stratum_apps::network_helpers::connect_with_noise;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_apps::stratum_core::binary_sv2::Str0255Owned;
use stratum_apps::stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_apps::stratum_core::framing_sv2::framing::MessageFrame;
use stratum_apps::stratum_core::mining_sv2::{
    OpenStandardMiningChannelOwned, OpenStandardMiningChannelSuccessOwned,
};
use stratum_apps::stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessages, CommonMessagesOwned, Mining, MiningOwned,
};
use thiserror::Error;
use tokio::net::TcpStream;

/// SetupConnection flag: this device wants standard jobs (header-only mining).
pub const REQUIRES_STANDARD_JOBS: u32 = 1;
/// Where the pool is and the key its Noise certificate must be signed with: the command-line
/// flags every tool that connects to the pool takes.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Pool address.
    #[arg(long = "pool", default_value = "127.0.0.1:34254")]
    pub address: String,
    /// The pool's Noise authority public key (base58); the regtest development key by default.
    #[arg(
        long,
        default_value = "9cGwoULotsUiHExSTdxxGfQXhx1aRdk4GTC2YX2ZkdYUKxjZ31W"
    )]
    pub authority_key: Secp256k1PublicKey,
}

impl PoolArgs {
    /// Connects over Noise, checking the pool's certificate against the authority key.
    pub async fn connect(&self) -> Result<PoolConnection, ConnectionError> {
        PoolConnection::connect(&self.address, Some(self.authority_key)).await
    }
}

/// SetupConnection.Success flag (mining protocol): the pool does not accept rolled versions.
pub const REQUIRES_FIXED_VERSION: u32 = 1;
const SV2_VERSION: u16 = 2;

#[derive(Debug, Error)]
pub enum ConnectionError {
    #[error("cannot reach the pool at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Noise handshake with the pool failed (wrong authority key?): {0}")]
    Handshake(String),
    #[error("connection lost: {0}")]
    Io(String),
    #[error("the pool sent an undecodable frame: {0}")]
    Decode(String),
    #[error("the pool refused SetupConnection: {0}")]
    SetupRefused(String),
    #[error("unexpected message from the pool: {0}")]
    Unexpected(String),
}

/// The result of opening a channel: the pool's success, or its error code.
pub type OpenedChannel = Result<OpenStandardMiningChannelSuccessOwned, String>;

/// An Sv2 mining connection to a pool over Noise.
pub struct PoolConnection {
    reader: PoolReader,
    writer: PoolWriter,
}

/// The receiving half, for a task of its own (reading is not cancellation safe).
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
    ) -> Result<Self, ConnectionError> {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|source| ConnectionError::Connect {
                address: address.to_owned(),
                source,
            })?;
        let stream = connect_with_noise(tcp, authority)
            .await
            .map_err(|error| ConnectionError::Handshake(format!("{error:?}")))?;
        let (reader, writer) = stream.into_split();
        Ok(Self {
            reader: PoolReader { reader },
            writer: PoolWriter { writer },
        })
    }

    pub fn into_split(self) -> (PoolReader, PoolWriter) {
        (self.reader, self.writer)
    }

    /// SetupConnection for the mining protocol; `flags` as in the spec. Returns the flags of the
    /// pool's SetupConnection.Success (bit 0: the pool requires a fixed version).
    pub async fn setup(&mut self, flags: u32) -> Result<u32, ConnectionError> {
        let text = |value: &str| Str0255Owned::try_from(value.to_owned()).expect("short text");
        let setup = SetupConnectionOwned {
            protocol: Protocol::MiningProtocol,
            min_version: SV2_VERSION,
            max_version: SV2_VERSION,
            flags,
            endpoint_host: text(""),
            endpoint_port: 0,
            vendor: text("hashpool"),
            hardware_version: text("cpu"),
            firmware: text(env!("CARGO_PKG_VERSION")),
            device_id: text(""),
        };
        self.send(AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnection(setup),
        ))
        .await?;
        match self.recv().await? {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(success)) => {
                Ok(success.flags)
            }
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(error)) => Err(
                ConnectionError::SetupRefused(error.error_code.as_utf8_or_hex()),
            ),
            other => Err(ConnectionError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Opens a standard channel whose `user_identity` is `identity` (`pubkey[.worker]`).
    pub async fn open_standard(
        &mut self,
        request_id: u32,
        identity: &str,
        nominal_hash_rate: f32,
    ) -> Result<OpenedChannel, ConnectionError> {
        let open = OpenStandardMiningChannelOwned {
            request_id,
            user_identity: Str0255Owned::try_from(identity.to_owned()).map_err(|_| {
                ConnectionError::Unexpected("identity longer than 255 bytes".into())
            })?,
            nominal_hash_rate,
            max_target: [0xff; 32].into(),
        };
        self.send_mining(MiningOwned::OpenStandardMiningChannel(open))
            .await?;
        match self.recv().await? {
            AnyMessageOwned::Mining(MiningOwned::OpenStandardMiningChannelSuccess(success)) => {
                Ok(Ok(success))
            }
            AnyMessageOwned::Mining(MiningOwned::OpenMiningChannelError(error)) => {
                Ok(Err(error.error_code.as_utf8_or_hex()))
            }
            other => Err(ConnectionError::Unexpected(format!("{other:?}"))),
        }
    }

    pub async fn send(&mut self, message: AnyMessageOwned) -> Result<(), ConnectionError> {
        self.writer.send(message).await
    }

    pub async fn send_mining(&mut self, message: MiningOwned) -> Result<(), ConnectionError> {
        self.writer.send_mining(message).await
    }

    /// The next message from the pool.
    pub async fn recv(&mut self) -> Result<AnyMessageOwned, ConnectionError> {
        self.reader.recv().await
    }
}

impl PoolWriter {
    pub async fn send(&mut self, message: AnyMessageOwned) -> Result<(), ConnectionError> {
        let frame: MessageFrame<AnyMessageOwned> = message
            .try_into()
            .map_err(|error| ConnectionError::Io(format!("cannot encode: {error:?}")))?;
        self.writer
            .write_frame(frame)
            .await
            .map_err(|error| ConnectionError::Io(format!("{error:?}")))
    }

    pub async fn send_mining(&mut self, message: MiningOwned) -> Result<(), ConnectionError> {
        self.send(AnyMessageOwned::Mining(message)).await
    }
}

impl PoolReader {
    /// The next message from the pool.
    pub async fn recv(&mut self) -> Result<AnyMessageOwned, ConnectionError> {
        let mut frame = self
            .reader
            .read_frame()
            .await
            .map_err(|error| ConnectionError::Io(format!("{error:?}")))?;
        let header = frame.header();
        let message: AnyMessage<'_> = (header, frame.payload())
            .try_into()
            .map_err(|error| ConnectionError::Decode(format!("{error:?}")))?;
        Ok(match message {
            AnyMessage::Mining(mining) => AnyMessageOwned::Mining(Mining::into_owned(mining)),
            AnyMessage::Common(common) => {
                AnyMessageOwned::Common(CommonMessages::into_owned(common))
            }
            other => return Err(ConnectionError::Unexpected(format!("{other}"))),
        })
    }
}
