//! One miner connection: Sv2 over Noise, its channels, its jobs and its shares.
//!
//! A connection is one task. Frames are read by a helper task (reading is not cancellation
//! safe) and handled in order here, interleaved with template updates and the vardiff tick.
//! Anything the peer sends that is not valid Sv2 for this pool closes this connection, with the
//! reason logged; nothing it sends can stop the pool.

use hashpool_service::{stopped, unix_now};
use hashpool_sv2_client::protocol::{REQUIRES_STANDARD_JOBS, SV2_VERSION};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ehash::{
    credited_work, expected_hashes, AcceptedShare, CreateQuote, MinerIdentity, QuoteMessage,
    ReleasePolicy, ShareWork, UpdateQuote,
};
use stratum_apps::stratum_core::bitcoin::hashes::Hash;
use stratum_apps::stratum_core::bitcoin::{BlockHash, Target};
use stratum_apps::stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_apps::stratum_core::channels_sv2::server::extended::ExtendedChannel;
use stratum_apps::stratum_core::channels_sv2::server::group::GroupChannel;
use stratum_apps::stratum_core::channels_sv2::server::jobs::extended::ExtendedJob;
use stratum_apps::stratum_core::channels_sv2::server::share_accounting::{
    ShareAccounting, ShareValidationError, ShareValidationResult,
};
use stratum_apps::stratum_core::channels_sv2::server::standard::StandardChannel;
use stratum_apps::stratum_core::channels_sv2::{Vardiff, VardiffState};
use stratum_apps::stratum_core::common_messages_sv2::{
    has_version_rolling, Protocol, SetupConnection, SetupConnectionErrorOwned,
    SetupConnectionSuccess, ERROR_CODE_SETUP_CONNECTION_PROTOCOL_VERSION_MISMATCH,
    ERROR_CODE_SETUP_CONNECTION_UNSUPPORTED_PROTOCOL,
};
use stratum_apps::stratum_core::framing_sv2::framing::MessageFrame;
use stratum_apps::stratum_core::framing_sv2::header::Header;
use stratum_apps::stratum_core::mining_sv2::{
    CloseChannel, OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned, OpenStandardMiningChannel, OpenStandardMiningChannelSuccessOwned,
    SetTargetOwned, SubmitSharesErrorOwned, SubmitSharesExtendedOwned, SubmitSharesStandard,
    SubmitSharesSuccess, UpdateChannel, UpdateChannelErrorOwned,
    ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
    ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW, ERROR_CODE_SUBMIT_SHARES_INVALID_CHANNEL_ID,
    ERROR_CODE_UPDATE_CHANNEL_INVALID_CHANNEL_ID,
    ERROR_CODE_UPDATE_CHANNEL_INVALID_NOMINAL_HASHRATE,
    ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
};
use stratum_apps::stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessages, CommonMessagesOwned, Mining, MiningOwned,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};

use crate::blocks::BlockSubmitter;
use crate::chain::TemplateStore;
use crate::epochs::EpochBook;
use crate::metrics::PoolMetrics;
use crate::noise::{FrameReader, FrameWriter, TransportError};
use crate::publisher::QuoteSender;
use crate::upstream::{UpstreamHandle, UpstreamJob};
use crate::work::Work;

mod channel;
mod channels;
mod difficulty;
mod jobs;
mod shares;

use channel::{Channel, ChannelKind, Submission};

/// Largest frame payload a miner may send; every mining message is far smaller. Checked on the
/// frame header, before any of the payload is read (see [`crate::noise`]).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// SetupConnection.Success flags for the mining protocol (spec 5.3.2): the pool sets neither
/// REQUIRES_FIXED_VERSION (bit 0) nor REQUIRES_EXTENDED_CHANNELS (bit 1). Version rolling is
/// always allowed: standard channels may roll the bits of `VERSION_ROLLING_MASK`, and extended
/// jobs say `version_rolling_allowed`.
const SUCCESS_FLAGS: u32 = 0;
/// Successful shares acknowledged per SubmitShares.Success.
const SHARE_BATCH: usize = 1;
/// How often channels are considered for a difficulty change.
const VARDIFF_TICK: Duration = Duration::from_secs(15);
const POOL_TAG: &str = "hashpool";

/// What every connection shares.
pub struct PoolContext {
    pub release_policy: ReleasePolicy,
    pub shares_per_minute: f32,
    pub initial_hashrate: f32,
    /// The least work any channel's target asks for (see [`Channel::settle_target`]).
    pub minimum_share_work: ShareWork,
    /// The newest work: templates (solo) or the upstream's jobs (proxy).
    pub work: watch::Receiver<Option<Work>>,
    /// Solo: recent templates, for assembling found blocks.
    pub template_store: TemplateStore,
    pub quotes: QuoteSender,
    pub metrics: Arc<PoolMetrics>,
    pub allocator: Mutex<ExtranonceAllocator>,
    pub next_channel_id: AtomicU32,
    /// Job ids of upstream work (solo jobs are numbered by each channel's job factory).
    pub next_job_id: AtomicU32,
    /// Solo: where found blocks go. A proxy submits no blocks; its upstream does.
    pub blocks: Option<BlockSubmitter>,
    /// Proxy: the upstream connection's state and its share queue.
    pub upstream: Option<UpstreamHandle>,
    /// The payout epochs, under the payout-epoch policy.
    pub epochs: Option<Arc<EpochBook>>,
    pub dashboard: Arc<crate::dashboard::Dashboard>,
    /// How long a connection may stay after the Noise handshake without SetupConnection.
    pub setup_timeout: Duration,
}

/// Why a connection was closed by the pool.
#[derive(Debug, Error)]
pub enum CloseReason {
    #[error("peer closed the connection")]
    PeerClosed,
    #[error("connection error: {0}")]
    Network(String),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("pool is shutting down")]
    Shutdown,
    #[error("no SetupConnection within {0:?} of the handshake")]
    SetupTimeout(Duration),
}

pub struct Downstream {
    context: Arc<PoolContext>,
    peer: String,
    writer: FrameWriter,
    setup_done: bool,
    requires_standard_jobs: bool,
    channels: HashMap<u32, Channel>,
    /// The connection's standard channels, when the device takes extended jobs: one job per
    /// template for all of them (NewExtendedMiningJob to the group), which each channel turns
    /// into its own with its extranonce prefix. Made at the first such channel.
    group: Option<GroupChannel>,
    /// The group's jobs on the current tip by job id, for rebuilding a found block's coinbase.
    group_jobs: HashMap<u32, ExtendedJob>,
    /// The work the channels' jobs are built on, and its tip.
    work: Option<Work>,
}

impl Downstream {
    pub fn new(context: Arc<PoolContext>, peer: String, writer: FrameWriter) -> Self {
        Self {
            context,
            peer,
            writer,
            setup_done: false,
            requires_standard_jobs: false,
            channels: HashMap::new(),
            group: None,
            group_jobs: HashMap::new(),
            work: None,
        }
    }

    /// Serves the connection until it closes; returns why.
    pub async fn run(
        mut self,
        reader: FrameReader,
        mut shutdown: watch::Receiver<bool>,
    ) -> CloseReason {
        let (frames_tx, mut frames) = mpsc::channel(64);
        let reader_task = tokio::spawn(read_frames(reader, frames_tx));
        let mut work = self.context.work.clone();
        let mut vardiff = tokio::time::interval(VARDIFF_TICK);
        vardiff.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // A peer that finished the handshake and says nothing holds a connection slot for
        // nothing: it has this long to set up.
        let setup_timeout = self.context.setup_timeout;
        let setup_deadline = tokio::time::sleep(setup_timeout);
        tokio::pin!(setup_deadline);

        let reason = loop {
            let step = tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Ok(frame)) => self.handle_frame(frame).await,
                    Some(Err(reason)) => Err(reason),
                    None => Err(CloseReason::PeerClosed),
                },
                changed = work.changed() => match changed {
                    Ok(()) => {
                        let latest = work.borrow_and_update().clone();
                        match latest {
                            Some(latest) => self.on_work(latest).await,
                            None => Ok(()),
                        }
                    }
                    Err(_) => Err(CloseReason::Shutdown),
                },
                _ = vardiff.tick() => self.run_vardiff().await,
                () = &mut setup_deadline, if !self.setup_done => {
                    Err(CloseReason::SetupTimeout(setup_timeout))
                }
                () = stopped(&mut shutdown) => Err(CloseReason::Shutdown),
            };
            if let Err(reason) = step {
                break reason;
            }
        };
        reader_task.abort();
        let _ = self.writer.shutdown().await;
        self.context
            .metrics
            .channels
            .dec_by(self.channels.len() as u64);
        for channel in self.channels.values() {
            self.context.dashboard.channel_closed(&channel.identity);
        }
        reason
    }

    async fn send(&mut self, message: AnyMessageOwned) -> Result<(), CloseReason> {
        let frame: MessageFrame<AnyMessageOwned> = message
            .try_into()
            .map_err(|error| CloseReason::Protocol(format!("cannot encode a reply: {error:?}")))?;
        self.writer
            .write_frame(frame)
            .await
            .map_err(|error| CloseReason::Network(error.to_string()))
    }

    async fn send_mining(&mut self, message: MiningOwned) -> Result<(), CloseReason> {
        self.send(AnyMessageOwned::Mining(message)).await
    }

    /// A refused share or channel, by its error code: in `/metrics` and on the dashboard.
    fn count_rejection(&self, code: &str) {
        self.context.metrics.share_rejected(code);
        self.context.dashboard.share_rejected(code);
    }

    async fn handle_frame(&mut self, mut frame: InboundFrame) -> Result<(), CloseReason> {
        let header = frame.header;
        let message_type = header.msg_type();
        let message: AnyMessage<'_> =
            (header, frame.payload.as_mut_slice())
                .try_into()
                .map_err(|error| {
                    CloseReason::Protocol(format!(
                        "undecodable message type {message_type:#04x}: {error:?}"
                    ))
                })?;
        let message = match message {
            AnyMessage::Common(CommonMessages::SetupConnection(setup)) => {
                return self.setup_connection(setup).await
            }
            AnyMessage::Mining(mining) if self.setup_done => mining,
            AnyMessage::Mining(_) => {
                return Err(CloseReason::Protocol(
                    "mining message before SetupConnection".into(),
                ))
            }
            other => {
                return Err(CloseReason::Protocol(format!(
                    "unexpected message type {message_type:#04x} for a pool: {other}"
                )))
            }
        };
        match message {
            Mining::OpenStandardMiningChannel(open) => self.open_standard(open).await,
            Mining::OpenExtendedMiningChannel(open) => self.open_extended(open).await,
            Mining::SubmitSharesStandard(share) => self.submit(Submission::Standard(share)).await,
            Mining::SubmitSharesExtended(share) => {
                self.submit(Submission::Extended(share.into_owned())).await
            }
            Mining::UpdateChannel(update) => self.update_channel(update).await,
            Mining::CloseChannel(close) => {
                self.close_channel(close);
                Ok(())
            }
            other => Err(CloseReason::Protocol(format!(
                "unexpected message type {message_type:#04x} for a pool: {other}"
            ))),
        }
    }

    async fn setup_connection(&mut self, setup: SetupConnection<'_>) -> Result<(), CloseReason> {
        if self.setup_done {
            return Err(CloseReason::Protocol("SetupConnection sent twice".into()));
        }
        let refusal = if setup.protocol != Protocol::MiningProtocol {
            Some((ERROR_CODE_SETUP_CONNECTION_UNSUPPORTED_PROTOCOL, 0))
        } else if setup.get_version(SV2_VERSION, SV2_VERSION).is_none() {
            Some((ERROR_CODE_SETUP_CONNECTION_PROTOCOL_VERSION_MISMATCH, 0))
        } else {
            None
        };
        if let Some((code, flags)) = refusal {
            let error = SetupConnectionErrorOwned {
                flags,
                error_code: code.to_owned().try_into().expect("a short error code"),
            };
            self.send(AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionError(error),
            ))
            .await?;
            return Err(CloseReason::Protocol(format!(
                "SetupConnection refused: {code}"
            )));
        }
        self.requires_standard_jobs = setup.flags & REQUIRES_STANDARD_JOBS != 0;
        self.setup_done = true;
        tracing::info!(
            peer = %self.peer,
            vendor = %setup.vendor.as_utf8_or_hex(),
            version_rolling = has_version_rolling(setup.flags),
            "miner connected"
        );
        // The success flags are not an echo of the request: bit 0 there means
        // REQUIRES_FIXED_VERSION, which would forbid the version rolling we allow.
        self.send(AnyMessageOwned::Common(
            CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: SV2_VERSION,
                flags: SUCCESS_FLAGS,
            }),
        ))
        .await
    }
}

/// A frame as read, with its payload copied out of the decoder's buffer pool.
///
/// The codec's frames borrow memory of the reader's `BufferPool`, and dropping a `BufferPool`
/// spins until every frame borrowed from it is gone. A frame handed to the connection task
/// while the reader task ends (the peer sent a frame and hung up) made the reader spin on its
/// worker thread, and the connection task woken to release that frame sat behind it on the same
/// worker: the worker was lost for good. Copying (at most [`MAX_PAYLOAD`] bytes) keeps every
/// borrow inside the reader task.
struct InboundFrame {
    header: Header,
    payload: Vec<u8>,
}

async fn read_frames(
    mut reader: FrameReader,
    frames: mpsc::Sender<Result<InboundFrame, CloseReason>>,
) {
    loop {
        let frame = reader.read_frame().await.map(|mut frame| InboundFrame {
            header: frame.header(),
            payload: frame.payload().to_vec(),
        });
        let frame = frame.map_err(|error| match error {
            TransportError::Closed => CloseReason::PeerClosed,
            // Oversize or undecryptable frames are the peer's fault, not the network's.
            other => CloseReason::Protocol(other.to_string()),
        });
        let last = frame.is_err();
        if frames.send(frame).await.is_err() || last {
            return;
        }
    }
}
