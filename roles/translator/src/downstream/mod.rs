//! One Sv1 miner connection: its session (subscribe, configure, authorize), its jobs and shares.
//!
//! Anything the miner sends that is not JSON-RPC, or a line longer than the cap, closes this
//! connection only, with the reason logged. Requests that cannot be served get JSON-RPC errors.
//! The miner's upstream channel is opened after `mining.authorize`, with its username as the
//! channel's `user_identity`, so its shares are credited to its own key.
//!
//! - this file: the connection, its lines in and out;
//! - [`requests`]: the miner's Sv1 requests other than shares;
//! - [`events`]: what the upstream task says about the miner's channel;
//! - [`shares`]: `mining.submit`, checked and forwarded, and the pool's answers;
//! - [`difficulty`]: the channel target as an Sv1 difficulty.

mod difficulty;
mod events;
mod requests;
mod shares;

use hashpool_service::stopped;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stratum_core::bitcoin::Target;
use stratum_core::sv1_api::json_rpc::{self, Response};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::DownstreamConfig;
use crate::job::{ExtranonceLayout, ExtranonceTooLong, JobBook, LayoutError};
use crate::metrics::TranslatorMetrics;
use crate::sv1;
use crate::upstream::{Command, Event, MinerId};
use hashpool_service::lines::{read_lines, LineError};

/// A miner that does not take our writes for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What every miner connection shares.
pub struct DownstreamContext {
    pub config: DownstreamConfig,
    pub commands: mpsc::Sender<Command>,
    pub metrics: Arc<TranslatorMetrics>,
}

/// Why a miner's connection was closed.
#[derive(Debug, Error)]
pub enum CloseReason {
    #[error("the miner disconnected")]
    PeerClosed,
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("bad input: {0}")]
    Line(LineError),
    #[error("bad input: {0}")]
    Share(#[from] ExtranonceTooLong),
    #[error("network: {0}")]
    Network(#[source] std::io::Error),
    #[error("network: the miner took no data for {WRITE_TIMEOUT:?}")]
    WriteTimeout,
    #[error("extranonce1 is not a valid Sv1 extranonce: {0}")]
    Extranonce1(String),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("the pool refused {user}: {code}")]
    Refused { user: String, code: String },
    #[error("the pool closed the channel: {reason}")]
    ChannelClosed { reason: String },
    #[error("the translator is shutting down")]
    Shutdown,
}

impl From<LineError> for CloseReason {
    fn from(error: LineError) -> Self {
        match error {
            LineError::Io(error) => Self::Network(error),
            other => Self::Line(other),
        }
    }
}

impl CloseReason {
    /// The miner's fault (not the network's, the pool's or ours): counted as dropped.
    fn is_bad_input(&self) -> bool {
        matches!(self, Self::BadInput(_) | Self::Line(_) | Self::Share(_))
    }
}

/// The miner's upstream channel, once open.
struct Channel {
    channel_id: u32,
    layout: ExtranonceLayout,
    target: Target,
    advertised_target: Target,
}

pub struct Downstream {
    id: MinerId,
    context: Arc<DownstreamContext>,
    /// The connection's sending half: TCP, or memory in the fuzz harness.
    writer: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    events_tx: mpsc::UnboundedSender<Event>,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    version_mask: Option<u32>,
    /// The username that authorized, once it did (or while its channel is opening).
    user: Option<String>,
    /// A `mining.authorize` waiting for the pool's answer on the channel.
    pending_authorize: Option<u64>,
    registered: bool,
    hashrate: f32,
    channel: Option<Channel>,
    jobs: JobBook,
    next_sequence: u32,
    /// Sv2 sequence number -> Sv1 request id of shares the pool has not answered yet.
    pending_shares: BTreeMap<u32, u64>,
    span: tracing::Span,
}

impl Downstream {
    /// Serves one Sv1 connection until it closes.
    pub async fn serve(
        id: MinerId,
        stream: TcpStream,
        context: Arc<DownstreamContext>,
        shutdown: watch::Receiver<bool>,
    ) {
        let peer = stream
            .peer_addr()
            .map(|address| address.to_string())
            .unwrap_or_default();
        let (reader, writer) = stream.into_split();
        Self::serve_halves(id, reader, writer, peer, context, shutdown).await
    }

    /// Serves one Sv1 connection on any byte stream until it closes.
    pub async fn serve_halves(
        id: MinerId,
        reader: impl AsyncRead + Send + Unpin + 'static,
        writer: impl AsyncWrite + Send + Sync + Unpin + 'static,
        peer: String,
        context: Arc<DownstreamContext>,
        shutdown: watch::Receiver<bool>,
    ) {
        let span = tracing::info_span!("miner", id, %peer, user = tracing::field::Empty);
        let (events_tx, events) = mpsc::unbounded_channel();
        let extranonce1 = extranonce1_for(id, usize::from(context.config.extranonce1_size));
        let downstream = Self {
            id,
            writer: Box::new(writer),
            events_tx,
            extranonce1,
            extranonce2_size: usize::from(context.config.extranonce2_size),
            version_mask: None,
            user: None,
            pending_authorize: None,
            registered: false,
            hashrate: context.config.announced_hashrate(None),
            channel: None,
            jobs: JobBook::default(),
            next_sequence: 0,
            pending_shares: BTreeMap::new(),
            span: span.clone(),
            context,
        };
        downstream
            .run(reader, events, shutdown)
            .instrument(span)
            .await;
    }

    async fn run(
        mut self,
        reader: impl AsyncRead + Send + Unpin + 'static,
        events: mpsc::UnboundedReceiver<Event>,
        shutdown: watch::Receiver<bool>,
    ) {
        let metrics = self.context.metrics.clone();
        metrics.downstreams_connected.inc();
        metrics.downstreams_total.inc();
        tracing::info!("miner connected");
        let reason = self.serve_lines(reader, events, shutdown).await;
        if self.registered {
            let _ = self
                .context
                .commands
                .send(Command::Close { miner: self.id })
                .await;
        }
        let _ = self.writer.shutdown().await;
        metrics.downstreams_connected.dec();
        match &reason {
            reason if reason.is_bad_input() => {
                metrics.downstreams_dropped.inc();
                tracing::warn!(%reason, "miner disconnected")
            }
            CloseReason::PeerClosed | CloseReason::Shutdown => {
                tracing::info!(%reason, "miner disconnected")
            }
            _ => tracing::warn!(%reason, "miner disconnected"),
        }
    }

    /// The miner's lines and the upstream task's events, in order, until one closes the
    /// connection; returns why.
    async fn serve_lines(
        &mut self,
        reader: impl AsyncRead + Send + Unpin + 'static,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) -> CloseReason {
        let (lines_tx, mut lines) = mpsc::channel(64);
        let max_line = self.context.config.max_line_bytes;
        let reader_task = tokio::spawn(read_lines(reader, max_line, lines_tx));
        let authorize_timeout = Duration::from_secs(self.context.config.authorize_timeout_secs);
        let authorize_deadline = tokio::time::sleep(authorize_timeout);
        tokio::pin!(authorize_deadline);
        let reason = loop {
            let step = tokio::select! {
                () = &mut authorize_deadline, if self.user.is_none() => Err(CloseReason::BadInput(
                    format!("no mining.authorize within {} s", authorize_timeout.as_secs()),
                )),
                line = lines.recv() => match line {
                    Some(Ok(line)) => self.on_line(&line).await,
                    Some(Err(error)) => Err(error.into()),
                    None => Err(CloseReason::PeerClosed),
                },
                Some(event) = events.recv() => self.on_event(event).await,
                () = stopped(&mut shutdown) => Err(CloseReason::Shutdown),
            };
            if let Err(reason) = step {
                break reason;
            }
        };
        reader_task.abort();
        reason
    }

    async fn write(&mut self, message: json_rpc::Message) -> Result<(), CloseReason> {
        let line = sv1::encode(&message);
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(line.as_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(CloseReason::Network(error)),
            Err(_) => Err(CloseReason::WriteTimeout),
        }
    }

    async fn respond(&mut self, response: Response) -> Result<(), CloseReason> {
        self.write(json_rpc::Message::from(response)).await
    }

    /// A `true` result for request `id`.
    async fn respond_true(&mut self, id: u64) -> Result<(), CloseReason> {
        self.respond(Response {
            id,
            result: serde_json::Value::Bool(true),
            error: None,
        })
        .await
    }

    async fn upstream(&self, command: Command) -> Result<(), CloseReason> {
        self.context
            .commands
            .send(command)
            .await
            .map_err(|_| CloseReason::Shutdown)
    }
}

/// A per-connection extranonce1: the connection's id, big-endian, in `size` bytes.
fn extranonce1_for(id: MinerId, size: usize) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let mut extranonce1 = vec![0; size.saturating_sub(bytes.len())];
    extranonce1.extend_from_slice(&bytes[bytes.len().saturating_sub(size)..]);
    extranonce1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extranonce1_is_the_id_in_the_configured_size() {
        assert_eq!(extranonce1_for(0x0102_0304_0506, 4), vec![3, 4, 5, 6]);
        assert_eq!(extranonce1_for(7, 0), Vec::<u8>::new());
        assert_eq!(extranonce1_for(7, 10), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
    }
}
