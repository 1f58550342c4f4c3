use stratum_apps::network_helpers;
use stratum_apps::stratum_core::parsers_sv2::ParserError;
use thiserror::Error;

/// Why a connection to the pool failed. Every variant ends the connection.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the pool at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Noise handshake with the pool failed (wrong authority key?): {0}")]
    Handshake(network_helpers::Error),
    #[error("the pool closed the connection")]
    Closed,
    #[error("connection lost: {0}")]
    Transport(network_helpers::Error),
    #[error("cannot encode a message for the pool: {0:?}")]
    Encode(ParserError),
    #[error("undecodable message type {message_type:#04x} from the pool: {error:?}")]
    Decode {
        message_type: u8,
        error: ParserError,
    },
    #[error("the pool refused SetupConnection: {code}")]
    SetupRefused { code: String },
    #[error("unexpected message from the pool: {0}")]
    Unexpected(String),
    #[error("{field} is longer than the 255 bytes Sv2 allows")]
    TooLong { field: &'static str },
}

impl ClientError {
    /// A transport error, with the peer hanging up told apart from the rest.
    pub(crate) fn transport(error: network_helpers::Error) -> Self {
        match error {
            network_helpers::Error::SocketClosed => Self::Closed,
            other => Self::Transport(other),
        }
    }
}

/// The pool would not open the channel; `code` is its OpenMiningChannel.Error code (for
/// hashpool, also why the identity is not a key, e.g. `identity-key-not-hex`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the pool refused the channel: {code}")]
pub struct ChannelRefused {
    pub request_id: u32,
    pub code: String,
}
