//! One Sv1 miner connection: its session (subscribe, configure, authorize), its jobs and shares.
//!
//! Anything the miner sends that is not JSON-RPC, or a line longer than the cap, closes this
//! connection only, with the reason logged. Requests that cannot be served get JSON-RPC errors.
//! The miner's upstream channel is opened after `mining.authorize`, with its username as the
//! channel's `user_identity`, so its shares are credited to its own key.

use hashpool_service::stopped;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ehash::{MinerIdentity, ShareWork};
use stratum_core::bitcoin::Target;
use stratum_core::stratum_translation::sv2_to_sv1::{
    build_sv1_set_difficulty_from_sv2_target,
    build_sv1_set_difficulty_from_sv2_target_with_integer_power_of_two_rounding,
    sv1_advertised_target_from_sv2_target,
};
use stratum_core::sv1_api::client_to_server::{
    Authorize, Configure, Submit, SubmitError, SubmitOutcome,
};
use stratum_core::sv1_api::json_rpc::{self, Response};
use stratum_core::sv1_api::methods::Client2Server;
use stratum_core::sv1_api::server_to_client::{Notify, VersionRollingParams};
use stratum_core::sv1_api::utils::{Extranonce, HexU32Be};
use thiserror::Error;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::DownstreamConfig;
use crate::job::{check_share, sv2_share, ExtranonceLayout, JobBook, JobContext, ShareCheck};
use crate::metrics::TranslatorMetrics;
use crate::sv1::{self, Incoming, LineError};
use crate::upstream::{Command, Event, MinerId};

/// BIP 320: the version bits a miner may roll.
const BIP320_MASK: u32 = 0x1fff_e000;
/// Difficulties from 1 up are advertised rounded down to a power of two (integers for firmwares
/// that cannot take fractions); below it, as they are.
const POWER_OF_TWO_FROM: f64 = 1.0;
/// A miner that does not take our writes for this long is disconnected.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Shares waiting for the pool's answer; beyond this the oldest is answered as unknown.
const MAX_PENDING_SHARES: usize = 1024;

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
    #[error("network: {0}")]
    Network(String),
    #[error("{0}")]
    Upstream(String),
    #[error("the translator is shutting down")]
    Shutdown,
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
    writer: OwnedWriteHalf,
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
        let span = tracing::info_span!("miner", id, %peer, user = tracing::field::Empty);
        let (reader, writer) = stream.into_split();
        let (events_tx, events) = mpsc::unbounded_channel();
        let extranonce1 = extranonce1_for(id, usize::from(context.config.extranonce1_size));
        let downstream = Self {
            id,
            writer,
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
        reader: tokio::net::tcp::OwnedReadHalf,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let metrics = self.context.metrics.clone();
        metrics
            .downstreams_connected
            .fetch_add(1, Ordering::Relaxed);
        metrics.downstreams_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!("miner connected");
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
                    Some(Err(LineError::Io(error))) => Err(CloseReason::Network(error.to_string())),
                    Some(Err(error)) => Err(CloseReason::BadInput(error.to_string())),
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
        if self.registered {
            let _ = self
                .context
                .commands
                .send(Command::Close { miner: self.id })
                .await;
        }
        let _ = self.writer.shutdown().await;
        metrics
            .downstreams_connected
            .fetch_sub(1, Ordering::Relaxed);
        match &reason {
            CloseReason::BadInput(_) => {
                metrics.downstreams_dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%reason, "miner disconnected")
            }
            CloseReason::PeerClosed | CloseReason::Shutdown => {
                tracing::info!(%reason, "miner disconnected")
            }
            _ => tracing::warn!(%reason, "miner disconnected"),
        }
    }

    async fn write(&mut self, message: json_rpc::Message) -> Result<(), CloseReason> {
        let line = sv1::encode(&message);
        match tokio::time::timeout(WRITE_TIMEOUT, self.writer.write_all(line.as_bytes())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(CloseReason::Network(error.to_string())),
            Err(_) => Err(CloseReason::Network(format!(
                "the miner took no data for {WRITE_TIMEOUT:?}"
            ))),
        }
    }

    async fn respond(&mut self, response: Response) -> Result<(), CloseReason> {
        self.write(json_rpc::Message::from(response)).await
    }

    async fn on_line(&mut self, line: &str) -> Result<(), CloseReason> {
        if line.trim().is_empty() {
            return Ok(());
        }
        match sv1::parse(line) {
            Incoming::Malformed(reason) => Err(CloseReason::BadInput(reason)),
            Incoming::Ignore(reason) => {
                tracing::debug!(%reason, "ignored a message");
                Ok(())
            }
            Incoming::Refuse { id, reason } => {
                tracing::info!(%reason, "request refused");
                self.respond(sv1::error_response(id, SubmitError::Other.code(), reason))
                    .await
            }
            Incoming::SuggestDifficulty { id, difficulty } => {
                self.suggest_difficulty(difficulty).await?;
                match id {
                    Some(id) => {
                        self.respond(Response {
                            id,
                            result: serde_json::Value::Bool(true),
                            error: None,
                        })
                        .await
                    }
                    None => Ok(()),
                }
            }
            Incoming::Request(request) => self.on_request(request).await,
        }
    }

    async fn on_request(&mut self, request: Client2Server) -> Result<(), CloseReason> {
        match request {
            Client2Server::Subscribe(subscribe) => {
                let subscription = format!("{:x}", self.id);
                let extranonce1 = Extranonce::try_from(self.extranonce1.clone())
                    .map_err(|error| CloseReason::Upstream(format!("{error:?}")))?;
                let response = subscribe.respond(
                    vec![
                        ("mining.set_difficulty".to_owned(), subscription.clone()),
                        ("mining.notify".to_owned(), subscription),
                    ],
                    extranonce1,
                    self.extranonce2_size,
                );
                self.respond(response).await
            }
            Client2Server::Configure(configure) => self.configure(configure).await,
            Client2Server::ExtranonceSubscribe(subscribe) => {
                // The upstream prefix lives in coinb1, so extranonce1 never changes and
                // mining.set_extranonce is never sent; acknowledging is all there is to do.
                self.respond(subscribe.respond()).await
            }
            Client2Server::Authorize(authorize) => self.authorize(authorize).await,
            Client2Server::Submit(submit) => self.submit(submit).await,
            Client2Server::SuggestDifficulty() => Ok(()),
        }
    }

    async fn configure(&mut self, configure: Configure) -> Result<(), CloseReason> {
        let rolling = configure.version_rolling_mask().map(|requested| {
            let mask = requested.0 & BIP320_MASK;
            self.version_mask = Some(mask);
            tracing::debug!(requested = %requested, mask = format_args!("{mask:08x}"), "version rolling");
            VersionRollingParams::new(
                HexU32Be(mask),
                configure
                    .version_rolling_min_bit_count()
                    .unwrap_or(HexU32Be(0)),
            )
        });
        self.respond(configure.respond(rolling, None)).await
    }

    async fn authorize(&mut self, authorize: Authorize) -> Result<(), CloseReason> {
        if let Some(user) = &self.user {
            let response = if *user == authorize.name {
                authorize.respond(true)
            } else {
                sv1::error_response(
                    authorize.id,
                    SubmitError::UnauthorizedWorker.code(),
                    format!(
                        "this connection already mines for {user}; open another connection for {}",
                        authorize.name
                    ),
                )
            };
            return self.respond(response).await;
        }
        if let Err(error) = authorize.name.parse::<MinerIdentity>() {
            tracing::info!(user = %authorize.name, %error, "authorize refused: the username is not a public key");
            let message = format!(
                "{}: {error}; the username must be your compressed public key in hex, optionally followed by .worker",
                error.code()
            );
            let response = sv1::error_response(
                authorize.id,
                SubmitError::UnauthorizedWorker.code(),
                message,
            );
            return self.respond(response).await;
        }
        self.span.record("user", authorize.name.as_str());
        self.user = Some(authorize.name.clone());
        self.pending_authorize = Some(authorize.id);
        self.registered = true;
        // The answer waits for the pool: it checks the identity again when opening the channel.
        let open = Command::Open {
            miner: self.id,
            identity: authorize.name,
            hashrate: self.hashrate,
            min_extranonce_size: (self.extranonce1.len() + self.extranonce2_size) as u16,
            events: self.events_tx.clone(),
        };
        self.upstream(open).await
    }

    async fn upstream(&self, command: Command) -> Result<(), CloseReason> {
        self.context
            .commands
            .send(command)
            .await
            .map_err(|_| CloseReason::Shutdown)
    }

    async fn suggest_difficulty(&mut self, difficulty: f64) -> Result<(), CloseReason> {
        // The hashrate at which this difficulty gives the pool's share rate, never below the
        // minimum difficulty's.
        let hashrate = self.context.config.announced_hashrate(Some(difficulty));
        tracing::info!(difficulty, hashrate, "miner suggests a difficulty");
        self.hashrate = hashrate;
        if self.registered {
            self.upstream(Command::UpdateHashrate {
                miner: self.id,
                hashrate,
            })
            .await?;
        }
        Ok(())
    }

    async fn answer_authorize(&mut self, ok: Result<(), String>) -> Result<(), CloseReason> {
        let Some(id) = self.pending_authorize.take() else {
            return Ok(());
        };
        let response = match ok {
            Ok(()) => Response {
                id,
                result: serde_json::Value::Bool(true),
                error: None,
            },
            Err(message) => {
                sv1::error_response(id, SubmitError::UnauthorizedWorker.code(), message)
            }
        };
        self.respond(response).await
    }

    async fn on_event(&mut self, event: Event) -> Result<(), CloseReason> {
        match event {
            Event::Queued => {
                tracing::info!("pool unreachable; the channel opens when it is back");
                self.answer_authorize(Ok(())).await
            }
            Event::Lost => {
                tracing::info!("pool connection lost; keeping the miner while reconnecting");
                self.channel = None;
                self.jobs.reset_channel();
                self.fail_pending_shares("pool connection lost").await?;
                self.answer_authorize(Ok(())).await
            }
            Event::Opened {
                channel_id,
                target,
                extranonce_prefix,
                rollable_extranonce_size,
            } => {
                let layout = ExtranonceLayout::new(
                    extranonce_prefix,
                    usize::from(rollable_extranonce_size),
                    self.extranonce1.clone(),
                    self.extranonce2_size,
                )
                .map_err(|error| CloseReason::Upstream(error.to_string()))?;
                tracing::info!(channel_id, "channel open");
                let advertised_target = advertised_target(target);
                self.channel = Some(Channel {
                    channel_id,
                    layout,
                    target,
                    advertised_target,
                });
                self.jobs.reset_channel();
                self.answer_authorize(Ok(())).await?;
                self.send_difficulty(target).await
            }
            Event::Refused { code } => {
                self.registered = false;
                let user = self.user.take().unwrap_or_default();
                let message = format!("the pool refused {user}: {code}");
                if self.pending_authorize.is_some() {
                    self.answer_authorize(Err(message)).await
                } else {
                    Err(CloseReason::Upstream(message))
                }
            }
            Event::Closed { reason } => {
                self.registered = false;
                Err(CloseReason::Upstream(format!(
                    "the pool closed the channel: {reason}"
                )))
            }
            Event::Target(target) => {
                let Some(channel) = self.channel.as_mut() else {
                    return Ok(());
                };
                channel.target = target;
                channel.advertised_target = advertised_target(target);
                self.send_difficulty(target).await
            }
            Event::Job(job) => {
                let notify = match self.job_context() {
                    Some(context) if job.channel_id == context.0 => {
                        self.jobs.on_job(job, &context.1.as_context())
                    }
                    _ => return Ok(()),
                };
                self.send_notify(notify).await
            }
            Event::PrevHash(prev_hash) => {
                let notify = match self.job_context() {
                    Some(context) if prev_hash.channel_id == context.0 => {
                        self.jobs.on_prev_hash(prev_hash, &context.1.as_context())
                    }
                    _ => return Ok(()),
                };
                self.send_notify(notify).await
            }
            Event::Accepted {
                channel_id,
                last_sequence_number,
            } => {
                if self.channel.as_ref().map(|c| c.channel_id) != Some(channel_id) {
                    return Ok(());
                }
                let later = self
                    .pending_shares
                    .split_off(&last_sequence_number.wrapping_add(1));
                let answered = std::mem::replace(&mut self.pending_shares, later);
                for (_, request_id) in answered {
                    self.context.metrics.share("accepted");
                    self.respond(Response {
                        id: request_id,
                        result: serde_json::Value::Bool(true),
                        error: None,
                    })
                    .await?;
                }
                Ok(())
            }
            Event::Rejected {
                sequence_number,
                code,
                ..
            } => {
                let Some(request_id) = self.pending_shares.remove(&sequence_number) else {
                    return Ok(());
                };
                tracing::info!(%code, "share rejected by the pool");
                self.reject_share(request_id, &code).await
            }
        }
    }

    /// (channel id, what jobs need) while a channel is open.
    fn job_context(&self) -> Option<(u32, OwnedJobContext)> {
        let channel = self.channel.as_ref()?;
        Some((
            channel.channel_id,
            OwnedJobContext {
                layout: channel.layout.clone(),
                extranonce1: self.extranonce1.clone(),
                upstream_target: channel.target,
                advertised_target: channel.advertised_target,
            },
        ))
    }

    async fn send_notify(
        &mut self,
        notify: Result<Option<Notify>, String>,
    ) -> Result<(), CloseReason> {
        match notify {
            Ok(Some(notify)) => {
                tracing::debug!(job_id = %notify.job_id, clean = notify.clean_jobs, "notify");
                self.write(notify.into()).await
            }
            Ok(None) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, "cannot give the miner this job");
                Ok(())
            }
        }
    }

    async fn send_difficulty(&mut self, target: Target) -> Result<(), CloseReason> {
        let message = match ShareWork::of_target(target) {
            // The pool's targets are powers of two: tell the miner that difficulty exactly.
            Some(work) => build_sv1_set_difficulty_from_sv2_target(sv1_target_of(work)),
            _ => build_sv1_set_difficulty_from_sv2_target_with_integer_power_of_two_rounding(
                target,
                POWER_OF_TWO_FROM,
            ),
        };
        match message {
            Ok(message) => self.write(message).await,
            Err(error) => {
                tracing::warn!(?error, "cannot express the channel target as a difficulty");
                Ok(())
            }
        }
    }

    async fn fail_pending_shares(&mut self, reason: &str) -> Result<(), CloseReason> {
        let pending = std::mem::take(&mut self.pending_shares);
        for (_, request_id) in pending {
            self.context.metrics.share("upstream-unavailable");
            self.respond(sv1::error_response(
                request_id,
                SubmitError::Other.code(),
                reason,
            ))
            .await?;
        }
        Ok(())
    }

    async fn reject_share(&mut self, request_id: u64, code: &str) -> Result<(), CloseReason> {
        self.context.metrics.share(code);
        let standard = match code {
            "stale-share" | "invalid-job-id" | "job-not-found" => SubmitError::JobNotFound,
            "duplicate-share" => SubmitError::DuplicateShare,
            "difficulty-too-low" | "low-difficulty" => SubmitError::LowDifficultyShare,
            "unauthorized-worker" => SubmitError::UnauthorizedWorker,
            _ => SubmitError::Other,
        };
        self.respond(sv1::error_response(
            request_id,
            standard.code(),
            format!("{} ({code})", standard.message()),
        ))
        .await
    }

    async fn submit(&mut self, submit: Submit) -> Result<(), CloseReason> {
        if self.user.as_deref() != Some(submit.user_name.as_str())
            || self.pending_authorize.is_some()
        {
            return self.reject_share(submit.id, "unauthorized-worker").await;
        }
        let Some(channel) = self.channel.as_ref() else {
            return self.reject_share(submit.id, "upstream-unavailable").await;
        };
        let Some(job) = self.jobs.job(&submit.job_id) else {
            return self.reject_share(submit.id, "job-not-found").await;
        };
        if job.channel_id != channel.channel_id {
            return self.reject_share(submit.id, "job-not-found").await;
        }
        let extranonce2: Vec<u8> = submit.extra_nonce2.clone().into();
        if extranonce2.len() != self.extranonce2_size {
            return self.reject_share(submit.id, "bad-extranonce2-size").await;
        }
        let version = match (&submit.version_bits, self.version_mask) {
            (None, _) => job.version,
            (Some(bits), Some(mask)) if bits.0 & !mask == 0 => {
                (job.version & !mask) | (bits.0 & mask)
            }
            (Some(_), Some(_)) => {
                return self
                    .reject_share(submit.id, "version-bits-outside-mask")
                    .await
            }
            (Some(_), None) => {
                return self
                    .reject_share(submit.id, "version-rolling-not-configured")
                    .await
            }
        };
        let hash = job.share_hash(&extranonce2, submit.time.0, submit.nonce.0, version);
        match check_share(job, &hash, channel.advertised_target) {
            ShareCheck::TooLow => self.reject_share(submit.id, "low-difficulty").await,
            ShareCheck::MeetsAdvertisedOnly => {
                // The miner met the (rounded-down) difficulty it was told; the pool would not
                // credit the share, so it stops here.
                self.context.metrics.share("below-pool-target");
                self.respond(submit.respond(SubmitOutcome::Accepted)).await
            }
            ShareCheck::MeetsUpstream => {
                let sequence_number = self.next_sequence;
                let share = sv2_share(
                    job,
                    &channel.layout,
                    sequence_number,
                    &extranonce2,
                    submit.time.0,
                    submit.nonce.0,
                    version,
                )
                .map_err(CloseReason::BadInput)?;
                self.next_sequence = self.next_sequence.wrapping_add(1);
                self.pending_shares.insert(sequence_number, submit.id);
                if self.pending_shares.len() > MAX_PENDING_SHARES {
                    if let Some((_, oldest)) = self.pending_shares.pop_first() {
                        self.reject_share(oldest, "no-answer-from-pool").await?;
                    }
                }
                tracing::debug!(%hash, sequence_number, "share forwarded");
                self.upstream(Command::Submit {
                    miner: self.id,
                    share,
                })
                .await
            }
        }
    }
}

struct OwnedJobContext {
    layout: ExtranonceLayout,
    extranonce1: Vec<u8>,
    upstream_target: Target,
    advertised_target: Target,
}

impl OwnedJobContext {
    fn as_context(&self) -> JobContext<'_> {
        JobContext {
            layout: &self.layout,
            extranonce1: &self.extranonce1,
            upstream_target: self.upstream_target,
            advertised_target: self.advertised_target,
        }
    }
}

/// The target of the difficulty the miner is told for a channel target.
fn advertised_target(target: Target) -> Target {
    match ShareWork::of_target(target) {
        Some(work) => sv1_target_of(work),
        None => sv1_advertised_target_from_sv2_target(target, POWER_OF_TWO_FROM).unwrap_or(target),
    }
}

/// The Sv1 target of the difficulty of `work` (2^(log2-32)): Sv1 difficulty `d` means the target
/// `0xffff * 2^208 / d`, here `0xffff * 2^(240-log2)`. It is a hair harder than the pool's
/// `2^(256-log2) - 1`, so every share the miner finds at it is one the pool credits (the miner
/// misses 1 in 65,536 of the shares the pool would take: Sv1's difficulty 1 is not 2^32 hashes).
fn sv1_target_of(work: ShareWork) -> Target {
    let lowest_bit = 240 - usize::from(work.log2());
    let mut le = [0u8; 32];
    for bit in lowest_bit..lowest_bit + 16 {
        le[bit / 8] |= 1 << (bit % 8);
    }
    Target::from_le_bytes(le)
}

/// A per-connection extranonce1: the connection's id, big-endian, in `size` bytes.
fn extranonce1_for(id: MinerId, size: usize) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let mut extranonce1 = vec![0; size.saturating_sub(bytes.len())];
    extranonce1.extend_from_slice(&bytes[bytes.len().saturating_sub(size)..]);
    extranonce1
}

async fn read_lines(
    reader: tokio::net::tcp::OwnedReadHalf,
    max: usize,
    lines: mpsc::Sender<Result<String, LineError>>,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let line = match sv1::read_line(&mut reader, max).await {
            Ok(Some(line)) => Ok(line),
            Ok(None) => return,
            Err(error) => Err(error),
        };
        let last = line.is_err();
        if lines.send(line).await.is_err() || last {
            return;
        }
    }
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

    #[test]
    fn power_of_two_targets_are_advertised_at_their_exact_difficulty() {
        for log2 in ShareWork::MIN.log2()..=ShareWork::MAX.log2() {
            let work = ShareWork::from_log2(log2).unwrap();
            let advertised = advertised_target(work.target());
            assert!(
                advertised <= work.target(),
                "2^{log2}: never easier than the pool's"
            );
            assert_eq!(advertised.difficulty_float(), work.difficulty(), "2^{log2}");
        }
    }

    #[test]
    fn advertised_difficulty_never_exceeds_the_channel_difficulty() {
        use stratum_core::bitcoin::CompactTarget;
        let easy = Target::from_le_bytes([0xff; 32]);
        assert_eq!(
            advertised_target(easy),
            easy,
            "below difficulty 1: as it is"
        );
        // Difficulty 16307 is advertised as 8192: an easier (larger) target.
        let hard = Target::from_compact(CompactTarget::from_consensus(0x1b04_04cb));
        let advertised = advertised_target(hard);
        assert!(advertised > hard);
        assert_eq!(advertised.difficulty_float().round(), 8192.0);
    }
}
