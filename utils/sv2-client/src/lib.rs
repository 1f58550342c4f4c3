//! The client side of a Stratum V2 mining connection to a hashpool pool, shared by the
//! translator and the mining device.
//!
//! - [`protocol`]: the Sv2 constants every role agrees on (version, SetupConnection flags, the
//!   BIP320 version-rolling mask). The pool takes them from here too.
//! - [`PoolConnection`]: TCP, the Noise handshake with the pool's authority key checked,
//!   SetupConnection, and typed SRI messages in and out; [`PoolConnection::into_split`] gives a
//!   [`PoolReader`] and a [`PoolWriter`] for a task each.
//! - [`Messages`]: a [`PoolReader`] on a task of its own, so the pool's messages can be awaited
//!   in a `select!` (reading a Noise frame is not cancellation safe).
//! - [`ClientError`]: why the connection failed; [`ChannelRefused`]: the pool's answer to a
//!   channel it will not open (the connection itself is fine).

mod connection;
mod error;
mod messages;
pub mod protocol;

pub use connection::{Device, PoolConnection, PoolReader, PoolWriter};
pub use error::{ChannelRefused, ClientError};
pub use messages::Messages;
pub use protocol::{
    REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS, REQUIRES_VERSION_ROLLING, SV2_VERSION,
    VERSION_ROLLING_MASK,
};
