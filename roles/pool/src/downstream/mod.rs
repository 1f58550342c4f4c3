//! One miner connection: Sv2 over Noise, its channels, its jobs and its shares.
//!
//! A connection is one task. Frames are read by a helper task (reading is not cancellation
//! safe) and handled in order here, interleaved with template updates and the vardiff tick.
//! Anything the peer sends that is not valid Sv2 for this pool closes this connection, with the
//! reason logged; nothing it sends can stop the pool.

use hashpool_service::stopped;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ehash::{
    credited_work, expected_hashes, CreateQuote, MinerIdentity, QuoteMessage, ReleasePolicy,
    ShareWork, UpdateQuote,
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
    SetupConnectionSuccess,
};
use stratum_apps::stratum_core::framing_sv2::framing::MessageFrame;
use stratum_apps::stratum_core::framing_sv2::header::Header;
use stratum_apps::stratum_core::mining_sv2::{
    CloseChannel, OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned, OpenStandardMiningChannel, OpenStandardMiningChannelSuccessOwned,
    SetNewPrevHashOwned as MiningSetNewPrevHash, SetTargetOwned, SubmitSharesErrorOwned,
    SubmitSharesExtendedOwned, SubmitSharesStandard, SubmitSharesSuccess, UpdateChannel,
    UpdateChannelErrorOwned, ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
    ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW, ERROR_CODE_UPDATE_CHANNEL_INVALID_CHANNEL_ID,
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
use crate::metrics::PoolMetrics;
use crate::noise::{FrameReader, FrameWriter, TransportError};
use crate::publisher::QuoteSender;
use crate::template::Template;

/// Largest frame payload a miner may send; every mining message is far smaller. Checked on the
/// frame header, before any of the payload is read (see [`crate::noise`]).
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// The only Stratum V2 protocol version.
const SV2_VERSION: u16 = 2;
/// SetupConnection flags for the mining protocol (spec 5.3.1).
const FLAG_REQUIRES_STANDARD_JOBS: u32 = 1;
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
    pub templates: watch::Receiver<Option<Arc<Template>>>,
    pub template_store: TemplateStore,
    pub quotes: QuoteSender,
    pub metrics: Arc<PoolMetrics>,
    pub allocator: Mutex<ExtranonceAllocator>,
    pub next_channel_id: AtomicU32,
    pub blocks: BlockSubmitter,
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
}

/// Credit and block data remembered per job: the target the job was sent with, its template.
#[derive(Debug, Clone, Copy)]
struct JobInfo {
    target: Target,
    template_id: u64,
    height: u64,
}

/// A share of either channel type.
enum Submission {
    Standard(SubmitSharesStandard),
    Extended(SubmitSharesExtendedOwned),
}

impl Submission {
    /// (channel id, sequence number, job id)
    fn ids(&self) -> (u32, u32, u32) {
        match self {
            Submission::Standard(share) => (share.channel_id, share.sequence_number, share.job_id),
            Submission::Extended(share) => (share.channel_id, share.sequence_number, share.job_id),
        }
    }

    /// (version, ntime, nonce): what the block header needs beyond the job.
    fn header_fields(&self) -> (u32, u32, u32) {
        match self {
            Submission::Standard(share) => (share.version, share.ntime, share.nonce),
            Submission::Extended(share) => (share.version, share.ntime, share.nonce),
        }
    }
}

enum ChannelKind {
    Standard(Box<StandardChannel>),
    Extended(Box<ExtendedChannel>),
}

impl ChannelKind {
    fn target(&self) -> Target {
        match self {
            ChannelKind::Standard(channel) => *channel.get_target(),
            ChannelKind::Extended(channel) => *channel.get_target(),
        }
    }

    fn requested_max_target(&self) -> Target {
        match self {
            ChannelKind::Standard(channel) => *channel.get_requested_max_target(),
            ChannelKind::Extended(channel) => *channel.get_requested_max_target(),
        }
    }

    /// Replaces the target channels_sv2 chose for the channel's hashrate with the nearest power
    /// of two (see [`ShareWork`]), so every share proves an exact number of units, but never
    /// easier than the pool's `minimum` nor than the miner's own `max_target`: no miner gets a
    /// target easier than the minimum, whatever hashrate or `max_target` it announced. `None`
    /// (target unchanged) when the `max_target` is harder than any power of two the unit
    /// expresses.
    fn settle_target(&mut self, minimum: ShareWork) -> Option<ShareWork> {
        let miners_limit = ShareWork::at_or_below(self.requested_max_target())?;
        let work = ShareWork::nearest(self.target())
            .max(minimum)
            .max(miners_limit);
        let set = match self {
            ChannelKind::Standard(channel) => channel.set_target(work.target()).is_ok(),
            ChannelKind::Extended(channel) => channel.set_target(work.target()).is_ok(),
        };
        set.then_some(work)
    }
}

struct Channel {
    kind: ChannelKind,
    /// A standard channel whose jobs come through the connection's group channel.
    grouped: bool,
    identity: MinerIdentity,
    vardiff: VardiffState,
    jobs: HashMap<u32, JobInfo>,
}

impl Channel {
    fn target(&self) -> Target {
        self.kind.target()
    }

    fn accounting(&self) -> &ShareAccounting {
        match &self.kind {
            ChannelKind::Standard(channel) => channel.get_share_accounting(),
            ChannelKind::Extended(channel) => channel.get_share_accounting(),
        }
    }

    fn active_job_message(&self) -> Option<MiningOwned> {
        match &self.kind {
            ChannelKind::Standard(channel) => channel
                .get_active_job()
                .map(|job| MiningOwned::NewMiningJob(job.get_job_message().clone())),
            ChannelKind::Extended(channel) => channel
                .get_active_job()
                .map(|job| MiningOwned::NewExtendedMiningJob(job.get_job_message().clone())),
        }
    }

    fn future_job_message(&self, template_id: u64) -> Option<MiningOwned> {
        match &self.kind {
            ChannelKind::Standard(channel) => channel
                .get_future_job_id_from_template_id(template_id)
                .and_then(|id| channel.get_future_job(id))
                .map(|job| MiningOwned::NewMiningJob(job.get_job_message().clone())),
            ChannelKind::Extended(channel) => channel
                .get_future_job_id_from_template_id(template_id)
                .and_then(|id| channel.get_future_job(id))
                .map(|job| MiningOwned::NewExtendedMiningJob(job.get_job_message().clone())),
        }
    }

    fn apply_template(&mut self, template: &Template, future: bool) -> Result<(), String> {
        let new_template = template.new_template(future);
        let outputs = template.reward_outputs.clone();
        match &mut self.kind {
            ChannelKind::Standard(channel) => channel
                .on_new_template(new_template, outputs)
                .map_err(|error| format!("{error:?}")),
            ChannelKind::Extended(channel) => channel
                .on_new_template(new_template, outputs)
                .map_err(|error| format!("{error:?}")),
        }
    }

    fn apply_prev_hash(&mut self, template: &Template) -> Result<(), String> {
        let prev_hash = template.set_new_prev_hash();
        match &mut self.kind {
            ChannelKind::Standard(channel) => channel
                .on_set_new_prev_hash(prev_hash)
                .map_err(|error| format!("{error:?}")),
            ChannelKind::Extended(channel) => channel
                .on_set_new_prev_hash(prev_hash)
                .map_err(|error| format!("{error:?}")),
        }
    }

    /// Records the job that is now active with the channel's current target.
    fn remember_active_job(&mut self, template: &Template) -> Option<u32> {
        let job_id = match self.active_job_message()? {
            MiningOwned::NewMiningJob(job) => job.job_id,
            MiningOwned::NewExtendedMiningJob(job) => job.job_id,
            _ => return None,
        };
        self.jobs.insert(
            job_id,
            JobInfo {
                target: self.target(),
                template_id: template.id,
                height: template.height,
            },
        );
        Some(job_id)
    }
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
    /// The template the channels' jobs are built on, and its tip.
    template: Option<Arc<Template>>,
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
            template: None,
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
        let mut templates = self.context.templates.clone();
        let mut vardiff = tokio::time::interval(VARDIFF_TICK);
        vardiff.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);

        let reason = loop {
            let step = tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Ok(frame)) => self.handle_frame(frame).await,
                    Some(Err(reason)) => Err(reason),
                    None => Err(CloseReason::PeerClosed),
                },
                changed = templates.changed() => match changed {
                    Ok(()) => {
                        let latest = templates.borrow_and_update().clone();
                        match latest {
                            Some(template) => self.on_template(template).await,
                            None => Ok(()),
                        }
                    }
                    Err(_) => Err(CloseReason::Shutdown),
                },
                _ = vardiff.tick() => self.run_vardiff().await,
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
            .fetch_sub(self.channels.len() as u64, Ordering::Relaxed);
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
            Some(("unsupported-protocol", 0))
        } else if setup.get_version(SV2_VERSION, SV2_VERSION).is_none() {
            Some(("protocol-version-mismatch", 0))
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
        self.requires_standard_jobs = setup.flags & FLAG_REQUIRES_STANDARD_JOBS != 0;
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

    async fn refuse_channel(&mut self, request_id: u32, code: &str) -> Result<(), CloseReason> {
        self.context
            .metrics
            .share_rejected(&format!("open-channel:{code}"));
        self.send_mining(MiningOwned::OpenMiningChannelError(
            OpenMiningChannelErrorOwned {
                request_id,
                error_code: code.to_owned().try_into().expect("error codes are short"),
            },
        ))
        .await
    }

    fn identity_of(&self, user_identity: &str) -> Result<MinerIdentity, &'static str> {
        user_identity.parse::<MinerIdentity>().map_err(|error| {
            tracing::info!(peer = %self.peer, %error, "channel refused: bad user_identity");
            error.code()
        })
    }

    fn nominal_hashrate(&self, requested: f32) -> f32 {
        if requested.is_finite() && requested > 0.0 {
            requested
        } else {
            self.context.initial_hashrate
        }
    }

    async fn open_standard(
        &mut self,
        open: OpenStandardMiningChannel<'_>,
    ) -> Result<(), CloseReason> {
        let open = open.into_owned();
        let identity = match self.identity_of(&open.user_identity.as_utf8_or_hex()) {
            Ok(identity) => identity,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let allocated = self
            .context
            .allocator
            .lock()
            .expect("allocator lock")
            .allocate_standard();
        let prefix = match allocated {
            Ok(prefix) => prefix,
            Err(_) => {
                return self
                    .refuse_channel(open.request_id, "channel-capacity-exhausted")
                    .await
            }
        };
        let channel_id = self.context.next_channel_id.fetch_add(1, Ordering::Relaxed);
        let channel = StandardChannel::new_for_pool(
            channel_id,
            identity.to_string(),
            prefix,
            Target::from_le_bytes(open.max_target.to_array()),
            self.nominal_hashrate(open.nominal_hash_rate),
            SHARE_BATCH,
            self.context.shares_per_minute,
            POOL_TAG.to_owned(),
            None,
        );
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => {
                let code = standard_open_error_code(&error);
                return self.refuse_channel(open.request_id, code).await;
            }
        };
        let mut kind = ChannelKind::Standard(Box::new(channel));
        if kind
            .settle_target(self.context.minimum_share_work)
            .is_none()
        {
            return self
                .refuse_channel(
                    open.request_id,
                    ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
                )
                .await;
        }
        let ChannelKind::Standard(channel) = &kind else {
            unreachable!("made above")
        };
        // A device that did not ask for standard jobs gets its standard channels' work through
        // a group channel, as SRI's pool does.
        let group_channel_id = if self.requires_standard_jobs {
            0
        } else {
            match self.join_group(channel_id, channel.get_extranonce_prefix().len()) {
                Ok(group_channel_id) => group_channel_id,
                Err(error) => {
                    tracing::error!(peer = %self.peer, channel_id, %error, "cannot group the channel");
                    return self
                        .refuse_channel(open.request_id, "channel-capacity-exhausted")
                        .await;
                }
            }
        };
        let success = OpenStandardMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id,
            target: channel.get_target().to_le_bytes().into(),
            extranonce_prefix: channel
                .get_extranonce_prefix()
                .to_vec()
                .try_into()
                .expect("an extranonce prefix is at most 32 bytes"),
            group_channel_id,
        };
        self.send_mining(MiningOwned::OpenStandardMiningChannelSuccess(success))
            .await?;
        self.add_channel(channel_id, kind, group_channel_id != 0, identity)
            .await
    }

    async fn open_extended(
        &mut self,
        open: OpenExtendedMiningChannel<'_>,
    ) -> Result<(), CloseReason> {
        let open = open.into_owned();
        if self.requires_standard_jobs {
            return self
                .refuse_channel(
                    open.request_id,
                    "extended-channels-not-supported-for-standard-jobs",
                )
                .await;
        }
        let identity = match self.identity_of(&open.user_identity.as_utf8_or_hex()) {
            Ok(identity) => identity,
            Err(code) => return self.refuse_channel(open.request_id, code).await,
        };
        let allocated = {
            let mut allocator = self.context.allocator.lock().expect("allocator lock");
            let rollable = allocator.rollable_extranonce_size();
            allocator
                .allocate_extended(open.min_extranonce_size as usize)
                .map(|prefix| (prefix, rollable))
        };
        let Ok((prefix, rollable)) = allocated else {
            return self
                .refuse_channel(open.request_id, "min-extranonce-size-too-large")
                .await;
        };
        let channel_id = self.context.next_channel_id.fetch_add(1, Ordering::Relaxed);
        let channel = ExtendedChannel::new_for_pool(
            channel_id,
            identity.to_string(),
            prefix,
            Target::from_le_bytes(open.max_target.to_array()),
            self.nominal_hashrate(open.nominal_hash_rate),
            true,
            u16::from(rollable),
            SHARE_BATCH,
            self.context.shares_per_minute,
            POOL_TAG.to_owned(),
            None,
        );
        let channel = match channel {
            Ok(channel) => channel,
            Err(error) => {
                let code = extended_open_error_code(&error);
                return self.refuse_channel(open.request_id, code).await;
            }
        };
        let mut kind = ChannelKind::Extended(Box::new(channel));
        if kind
            .settle_target(self.context.minimum_share_work)
            .is_none()
        {
            return self
                .refuse_channel(
                    open.request_id,
                    ERROR_CODE_OPEN_MINING_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
                )
                .await;
        }
        let ChannelKind::Extended(channel) = &kind else {
            unreachable!("made above")
        };
        let success = OpenExtendedMiningChannelSuccessOwned {
            request_id: open.request_id,
            channel_id,
            target: channel.get_target().to_le_bytes().into(),
            extranonce_size: channel.get_rollable_extranonce_size(),
            extranonce_prefix: channel
                .get_extranonce_prefix()
                .to_vec()
                .try_into()
                .expect("an extranonce prefix is at most 32 bytes"),
            group_channel_id: 0,
        };
        self.send_mining(MiningOwned::OpenExtendedMiningChannelSuccess(success))
            .await?;
        self.add_channel(channel_id, kind, false, identity).await
    }

    /// Registers an opened channel and gives it work on the current template at once.
    async fn add_channel(
        &mut self,
        channel_id: u32,
        kind: ChannelKind,
        grouped: bool,
        identity: MinerIdentity,
    ) -> Result<(), CloseReason> {
        tracing::info!(peer = %self.peer, channel_id, grouped, miner = %identity, "channel opened");
        self.context
            .metrics
            .channels
            .fetch_add(1, Ordering::Relaxed);
        let channel = Channel {
            kind,
            grouped,
            identity,
            vardiff: VardiffState::new().expect("the system clock is after 1970"),
            jobs: HashMap::new(),
        };
        self.channels.insert(channel_id, channel);
        let Some(template) = self.template.clone() else {
            return Ok(());
        };
        if grouped {
            // The whole group restarts on the current template: the new member needs a future
            // job and a prev hash like any new channel, and the group's jobs are shared.
            self.start_group_on(&template).await
        } else {
            self.start_channel_on(channel_id, &template).await
        }
    }

    /// Adds a standard channel to the connection's group channel (made on first use); returns
    /// the group channel id.
    fn join_group(&mut self, channel_id: u32, extranonce_len: usize) -> Result<u32, String> {
        if self.group.is_none() {
            let group_channel_id = self.context.next_channel_id.fetch_add(1, Ordering::Relaxed);
            let group = GroupChannel::new_for_pool(
                group_channel_id,
                extranonce_len,
                true,
                POOL_TAG.to_owned(),
            )
            .map_err(|error| format!("{error:?}"))?;
            self.group = Some(group);
        }
        let group = self.group.as_mut().expect("made above");
        group
            .add_channel_id(channel_id, extranonce_len)
            .map_err(|error| format!("{error:?}"))?;
        Ok(group.get_group_channel_id())
    }

    /// On a new tip (or a new member): one future job for the whole group, then the prev hash
    /// that activates it, each sent once to the group channel.
    async fn start_group_on(&mut self, template: &Template) -> Result<(), CloseReason> {
        let Some(group) = self.group.as_mut().filter(|group| !group.is_empty()) else {
            return Ok(());
        };
        let group_channel_id = group.get_group_channel_id();
        let cannot = |error: String| {
            CloseReason::Protocol(format!(
                "group channel {group_channel_id} cannot take the template: {error}"
            ))
        };
        group
            .on_new_template(template.new_template(true), template.reward_outputs.clone())
            .map_err(|error| cannot(format!("{error:?}")))?;
        let job = group
            .get_future_job_id_from_template_id(template.id)
            .and_then(|job_id| group.get_future_job(job_id))
            .cloned()
            .ok_or_else(|| cannot("no future job made".into()))?;
        group
            .on_set_new_prev_hash(template.set_new_prev_hash())
            .map_err(|error| cannot(format!("{error:?}")))?;
        self.give_group_job(&job, template, true)?;
        let job_id = job.get_job_id();
        // Jobs of the old tip can only be stale now.
        self.group_jobs.clear();
        self.group_jobs.insert(job_id, job.clone());
        self.send_mining(MiningOwned::NewExtendedMiningJob(
            job.get_job_message().clone(),
        ))
        .await?;
        self.send_mining(MiningOwned::SetNewPrevHash(prev_hash_message(
            group_channel_id,
            job_id,
            template,
        )))
        .await
    }

    /// On the same tip: a fresh job for the whole group, active at once.
    async fn refresh_group(&mut self, template: &Template) -> Result<(), CloseReason> {
        let Some(group) = self.group.as_mut().filter(|group| !group.is_empty()) else {
            return Ok(());
        };
        let group_channel_id = group.get_group_channel_id();
        group
            .on_new_template(
                template.new_template(false),
                template.reward_outputs.clone(),
            )
            .map_err(|error| {
                CloseReason::Protocol(format!(
                    "group channel {group_channel_id} cannot take the template: {error:?}"
                ))
            })?;
        let Some(job) = group.get_active_job().cloned() else {
            return Ok(());
        };
        self.give_group_job(&job, template, false)?;
        self.group_jobs.insert(job.get_job_id(), job.clone());
        self.send_mining(MiningOwned::NewExtendedMiningJob(
            job.get_job_message().clone(),
        ))
        .await
    }

    /// Hands a group job to every member, so each can validate shares on it (with its own
    /// extranonce prefix and target); `with_prev_hash` also moves them to the template's tip.
    fn give_group_job(
        &mut self,
        job: &ExtendedJob,
        template: &Template,
        with_prev_hash: bool,
    ) -> Result<(), CloseReason> {
        let members: Vec<u32> = self
            .group
            .as_ref()
            .map(|group| group.get_channel_ids().copied().collect())
            .unwrap_or_default();
        for channel_id in members {
            let channel = self
                .channels
                .get_mut(&channel_id)
                .expect("members are channels");
            let ChannelKind::Standard(inner) = &mut channel.kind else {
                unreachable!("only standard channels are grouped");
            };
            let cannot = |error| {
                CloseReason::Protocol(format!(
                    "channel {channel_id} cannot take the group job: {error:?}"
                ))
            };
            inner.on_group_channel_job(job.clone()).map_err(cannot)?;
            if with_prev_hash {
                inner
                    .on_set_new_prev_hash(template.set_new_prev_hash())
                    .map_err(cannot)?;
            }
            channel.remember_active_job(template);
        }
        Ok(())
    }

    /// A channel's first work on a tip: the template as a future job, then the prev hash that
    /// activates it.
    async fn start_channel_on(
        &mut self,
        channel_id: u32,
        template: &Template,
    ) -> Result<(), CloseReason> {
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        let cannot = |error: String| {
            CloseReason::Protocol(format!(
                "channel {channel_id} cannot take the template: {error}"
            ))
        };
        channel.apply_template(template, true).map_err(cannot)?;
        let future_job = channel.future_job_message(template.id);
        channel.apply_prev_hash(template).map_err(cannot)?;
        let job_id = channel.remember_active_job(template);
        if let (Some(job), Some(job_id)) = (future_job, job_id) {
            self.send_mining(job).await?;
            self.send_mining(MiningOwned::SetNewPrevHash(prev_hash_message(
                channel_id, job_id, template,
            )))
            .await?;
        }
        Ok(())
    }

    /// New template: on a new tip, every channel gets a future job and then the new prev hash;
    /// on the same tip, a fresh job on the current one.
    async fn on_template(&mut self, template: Arc<Template>) -> Result<(), CloseReason> {
        let new_tip =
            self.template.as_ref().map(|current| current.prev_hash) != Some(template.prev_hash);
        self.template = Some(template.clone());
        let ids: Vec<u32> = self
            .channels
            .iter()
            .filter(|(_, channel)| !channel.grouped)
            .map(|(channel_id, _)| *channel_id)
            .collect();
        for channel_id in ids {
            if new_tip {
                self.start_channel_on(channel_id, &template).await?;
            } else {
                let channel = self.channels.get_mut(&channel_id).expect("channel exists");
                channel.apply_template(&template, false).map_err(|error| {
                    CloseReason::Protocol(format!(
                        "channel {channel_id} cannot take the template: {error}"
                    ))
                })?;
                channel.remember_active_job(&template);
                if let Some(job) = channel.active_job_message() {
                    self.send_mining(job).await?;
                }
            }
        }
        if new_tip {
            self.start_group_on(&template).await
        } else {
            self.refresh_group(&template).await
        }
    }

    /// Validates a share on its channel and answers it.
    async fn submit(&mut self, share: Submission) -> Result<(), CloseReason> {
        let (channel_id, sequence_number, job_id) = share.ids();
        let header = share.header_fields();
        let result = match (self.channels.get_mut(&channel_id), share) {
            (
                Some(Channel {
                    kind: ChannelKind::Standard(channel),
                    ..
                }),
                Submission::Standard(share),
            ) => channel.validate_share(share),
            (
                Some(Channel {
                    kind: ChannelKind::Extended(channel),
                    ..
                }),
                Submission::Extended(share),
            ) => channel.validate_share(share),
            // No such channel, or a share of the other channel type.
            _ => {
                return self
                    .reject_share(channel_id, sequence_number, "invalid-channel-id")
                    .await
            }
        };
        self.on_share_result(channel_id, sequence_number, job_id, header, result)
            .await
    }

    async fn reject_share(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
        code: &str,
    ) -> Result<(), CloseReason> {
        self.context.metrics.share_rejected(code);
        self.send_mining(MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
            channel_id,
            sequence_number,
            error_code: code.to_owned().try_into().expect("error codes are short"),
        }))
        .await
    }

    async fn on_share_result(
        &mut self,
        channel_id: u32,
        sequence_number: u32,
        job_id: u32,
        (version, ntime, nonce): (u32, u32, u32),
        result: Result<ShareValidationResult, ShareValidationError>,
    ) -> Result<(), CloseReason> {
        let (share_hash, block) = match result {
            Ok(ShareValidationResult::Valid(hash)) => (hash, None),
            Ok(ShareValidationResult::BlockFound(hash, template_id, coinbase)) => {
                (hash, Some((template_id, coinbase)))
            }
            Err(error) => {
                let Some(code) = share_error_code(&error) else {
                    return Err(CloseReason::Protocol(format!(
                        "channel {channel_id}: {error:?}"
                    )));
                };
                return self.reject_share(channel_id, sequence_number, code).await;
            }
        };
        let channel = self
            .channels
            .get_mut(&channel_id)
            .expect("validated on this channel");
        channel.vardiff.increment_shares_since_last_update();
        let Some(job) = channel.jobs.get(&job_id).copied() else {
            return Err(CloseReason::Protocol(format!(
                "accepted share on job {job_id} the pool never recorded"
            )));
        };
        let block = block.map(|(template_id, coinbase)| {
            match (&channel.kind, self.group_jobs.get(&job_id)) {
                (ChannelKind::Standard(inner), Some(group_job)) if channel.grouped => {
                    // channels_sv2 8.0.0 gives a grouped standard channel a coinbase with the
                    // template's outputs twice (`ExtendedJob::into_standard_job` passes all of
                    // the job's outputs as additional ones), which is not the transaction the
                    // miner hashed. Rebuild it from the group job's bytes and this channel's
                    // extranonce prefix, exactly as the miner did.
                    let coinbase = [
                        group_job.get_coinbase_tx_prefix_with_bip141(),
                        inner.get_extranonce_prefix().to_vec(),
                        group_job.get_coinbase_tx_suffix_with_bip141(),
                    ]
                    .concat();
                    (template_id, coinbase)
                }
                _ => (template_id, coinbase),
            }
        });
        let hash_target = Target::from_le_bytes(share_hash.to_byte_array());
        if hash_target > job.target {
            // On regtest (and any network whose target is easier than the share target) a hash
            // can meet the network target without meeting the job's: channels_sv2 reports the
            // block, which is submitted, but the share proves less than the job asked for and
            // earns nothing.
            tracing::debug!(
                channel_id,
                "block candidate below the share target: not credited"
            );
            if let Some((template_id, coinbase)) = block {
                self.found_block(
                    share_hash.to_byte_array(),
                    template_id.unwrap_or(job.template_id),
                    &coinbase,
                    (version, ntime, nonce),
                );
            }
            return self
                .reject_share(
                    channel_id,
                    sequence_number,
                    ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW,
                )
                .await;
        }
        let work = credited_work(job.target.to_le_bytes());
        let proven_hashes = expected_hashes(job.target);
        let locking_key = channel.identity.locking_key();
        let create = CreateQuote::for_share(
            BlockHash::from_byte_array(share_hash.to_byte_array()),
            locking_key,
            work,
            channel_id,
            job_id,
            job.template_id,
            job.height,
            unix_now(),
        );
        tracing::debug!(channel_id, quote_id = %create.quote_id, work, "share accepted");
        let quote_id = create.quote_id;
        self.context.quotes.publish(QuoteMessage::Create(create));
        if self.context.release_policy == ReleasePolicy::Ehash {
            // The share is valid and its template came from bitcoind: nothing left to wait for.
            self.context
                .quotes
                .publish(QuoteMessage::Update(UpdateQuote::paid(vec![quote_id])));
        }
        self.context
            .metrics
            .share_accepted(&locking_key.to_string(), work, proven_hashes);

        let acknowledge = block.is_some() || channel.accounting().should_acknowledge();
        let success = acknowledge.then(|| {
            let accounting = channel.accounting();
            SubmitSharesSuccess {
                channel_id,
                last_sequence_number: accounting.get_last_share_sequence_number(),
                new_submits_accepted_count: accounting.get_last_batch_accepted(),
                new_shares_sum: accounting.get_last_batch_work_sum(),
            }
        });
        if let Some((template_id, coinbase)) = block {
            self.found_block(
                share_hash.to_byte_array(),
                template_id.unwrap_or(job.template_id),
                &coinbase,
                (version, ntime, nonce),
            );
        }
        if let Some(success) = success {
            self.send_mining(MiningOwned::SubmitSharesSuccess(success))
                .await?;
        }
        Ok(())
    }

    /// Assembles a found block and hands it to the block submitter (never waits for bitcoind).
    fn found_block(
        &self,
        share_hash: [u8; 32],
        template_id: u64,
        coinbase: &[u8],
        (version, ntime, nonce): (u32, u32, u32),
    ) {
        let Some(template) = self.context.template_store.get(template_id) else {
            tracing::error!(template_id, "block found on a template no longer kept");
            return;
        };
        let block = match template.assemble_block(coinbase, version, ntime, nonce) {
            Ok(block) => block,
            Err(error) => {
                tracing::error!(%error, "cannot assemble the found block");
                return;
            }
        };
        // The block must be the header the miner hashed; anything else is a bug here, and
        // bitcoind would only answer with a less telling reason.
        if block.block_hash().to_byte_array() != share_hash {
            tracing::error!(
                block_hash = %block.block_hash(),
                share_hash = %BlockHash::from_byte_array(share_hash),
                "the assembled block is not the block found; not submitted"
            );
            self.context
                .metrics
                .blocks_rejected
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.context.blocks.offer(block);
    }

    async fn update_channel(&mut self, update: UpdateChannel<'_>) -> Result<(), CloseReason> {
        let update = update.into_owned();
        let channel_id = update.channel_id;
        let max_target = Target::from_le_bytes(update.maximum_target.to_array());
        let minimum = self.context.minimum_share_work;
        let result = match self.channels.get_mut(&channel_id) {
            // Refused before anything changes: no power of two the unit expresses is that hard.
            Some(_) if ShareWork::at_or_below(max_target).is_none() => {
                Err(ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE)
            }
            Some(channel) => {
                let updated = match &mut channel.kind {
                    ChannelKind::Standard(inner) => inner
                        .update_channel(update.nominal_hash_rate, Some(max_target))
                        .map_err(|error| update_error_code(&error.into())),
                    ChannelKind::Extended(inner) => inner
                        .update_channel(update.nominal_hash_rate, Some(max_target))
                        .map_err(|error| update_error_code(&error.into())),
                };
                updated.and_then(|()| {
                    channel
                        .kind
                        .settle_target(minimum)
                        .map(|_| ())
                        .ok_or(ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE)
                })
            }
            None => Err(ERROR_CODE_UPDATE_CHANNEL_INVALID_CHANNEL_ID),
        };
        match result {
            Ok(()) => self.retarget(channel_id).await,
            Err(code) => {
                self.send_mining(MiningOwned::UpdateChannelError(UpdateChannelErrorOwned {
                    channel_id,
                    error_code: code.to_owned().try_into().expect("error codes are short"),
                }))
                .await
            }
        }
    }

    fn close_channel(&mut self, close: CloseChannel<'_>) {
        if let Some(channel) = self.channels.remove(&close.channel_id) {
            if let Some(group) = &mut self.group {
                group.remove_channel_id(close.channel_id);
            }
            self.context
                .metrics
                .channels
                .fetch_sub(1, Ordering::Relaxed);
            tracing::info!(peer = %self.peer, channel_id = close.channel_id, miner = %channel.identity, "channel closed by the miner");
        }
    }

    async fn run_vardiff(&mut self) -> Result<(), CloseReason> {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        for channel_id in ids {
            let channel = self.channels.get_mut(&channel_id).expect("channel exists");
            let (hashrate, target, spm) = match &channel.kind {
                ChannelKind::Standard(inner) => (
                    inner.get_nominal_hashrate(),
                    *inner.get_target(),
                    inner.get_shares_per_minute(),
                ),
                ChannelKind::Extended(inner) => (
                    inner.get_nominal_hashrate(),
                    *inner.get_target(),
                    inner.get_shares_per_minute(),
                ),
            };
            let Ok(Some(new_hashrate)) = channel.vardiff.try_vardiff(hashrate, &target, spm) else {
                continue;
            };
            let updated = match &mut channel.kind {
                ChannelKind::Standard(inner) => inner.update_channel(new_hashrate, None).is_ok(),
                ChannelKind::Extended(inner) => inner.update_channel(new_hashrate, None).is_ok(),
            };
            // Vardiff moves the target too: back onto a power of two, never under the minimum.
            let minimum = self.context.minimum_share_work;
            if updated && channel.kind.settle_target(minimum).is_some() {
                tracing::debug!(channel_id, hashrate = new_hashrate, "vardiff: new target");
                self.retarget(channel_id).await?;
            }
        }
        Ok(())
    }

    /// Tells the miner its channel's new target and gives it a job made with that target (a
    /// job's target is fixed when the job is made; shares on older jobs keep theirs).
    async fn retarget(&mut self, channel_id: u32) -> Result<(), CloseReason> {
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        let maximum_target = channel.target().to_le_bytes().into();
        let grouped = channel.grouped;
        self.send_mining(MiningOwned::SetTarget(SetTargetOwned {
            channel_id,
            maximum_target,
        }))
        .await?;
        let Some(template) = self.template.clone() else {
            return Ok(());
        };
        if grouped {
            // A member's jobs are the group's: a fresh group job carries every member's current
            // target, this one's new one included.
            return self.refresh_group(&template).await;
        }
        let channel = self.channels.get_mut(&channel_id).expect("channel exists");
        if channel.apply_template(&template, false).is_ok() {
            channel.remember_active_job(&template);
            if let Some(job) = channel.active_job_message() {
                self.send_mining(job).await?;
            }
        }
        Ok(())
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

fn prev_hash_message(channel_id: u32, job_id: u32, template: &Template) -> MiningSetNewPrevHash {
    MiningSetNewPrevHash {
        channel_id,
        job_id,
        prev_hash: template.prev_hash.to_byte_array().into(),
        min_ntime: template.time,
        nbits: template.bits,
    }
}

fn share_error_code(error: &ShareValidationError) -> Option<&'static str> {
    match error {
        ShareValidationError::Invalid(code)
        | ShareValidationError::Stale(code)
        | ShareValidationError::InvalidJobId(code)
        | ShareValidationError::DoesNotMeetTarget(code)
        | ShareValidationError::VersionRollingNotAllowed(code)
        | ShareValidationError::DuplicateShare(code)
        | ShareValidationError::BadExtranonceSize(code) => Some(code),
        _ => None,
    }
}

fn standard_open_error_code(
    error: &stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError,
) -> &'static str {
    use stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError as E;
    match error {
        E::OpenChannelInvalidNominalHashrate(code) | E::OpenChannelInvalidMaxTarget(code) => code,
        _ => "max-target-out-of-range",
    }
}

fn extended_open_error_code(
    error: &stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError,
) -> &'static str {
    use stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError as E;
    match error {
        E::OpenChannelInvalidNominalHashrate(code) | E::OpenChannelInvalidMaxTarget(code) => code,
        _ => "min-extranonce-size-too-large",
    }
}

/// The UpdateChannel.Error code for what channels_sv2 refused.
fn update_error_code(error: &UpdateRefusal) -> &'static str {
    match error {
        UpdateRefusal::MaxTarget => ERROR_CODE_UPDATE_CHANNEL_MAX_TARGET_OUT_OF_RANGE,
        UpdateRefusal::NominalHashrate => ERROR_CODE_UPDATE_CHANNEL_INVALID_NOMINAL_HASHRATE,
    }
}

/// Why channels_sv2 refused an UpdateChannel, for either channel type.
enum UpdateRefusal {
    MaxTarget,
    NominalHashrate,
}

impl From<stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError>
    for UpdateRefusal
{
    fn from(
        error: stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError,
    ) -> Self {
        use stratum_apps::stratum_core::channels_sv2::server::error::StandardChannelError as E;
        match error {
            E::UpdateChannelInvalidMaxTarget(_) | E::InvalidTarget => UpdateRefusal::MaxTarget,
            _ => UpdateRefusal::NominalHashrate,
        }
    }
}

impl From<stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError>
    for UpdateRefusal
{
    fn from(
        error: stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError,
    ) -> Self {
        use stratum_apps::stratum_core::channels_sv2::server::error::ExtendedChannelError as E;
        match error {
            E::UpdateChannelInvalidMaxTarget(_) | E::InvalidTarget => UpdateRefusal::MaxTarget,
            _ => UpdateRefusal::NominalHashrate,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default()
}
