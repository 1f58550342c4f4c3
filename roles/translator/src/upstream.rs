//! The one Sv2 connection to the pool, carrying one extended channel per authorized Sv1 miner.
//!
//! Miners register here after `mining.authorize`; this task opens their channels, routes the
//! pool's messages to them by channel id, and forwards their shares. When the pool goes away,
//! miners are told (their Sv1 connections stay up), the task reconnects with a doubling backoff,
//! and every registered miner's channel is opened again.

use hashpool_service::stopped;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stratum_apps::network_helpers::connect_with_noise;
use stratum_apps::network_helpers::noise_stream::{NoiseTcpReadHalf, NoiseTcpWriteHalf};
use stratum_core::bitcoin::Target;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::framing_sv2::framing::MessageFrame;
use stratum_core::mining_sv2::{
    CloseChannelOwned, NewExtendedMiningJobOwned, SetNewPrevHashOwned, SubmitSharesExtendedOwned,
    UpdateChannelOwned,
};
use stratum_core::parsers_sv2::{
    AnyMessage, AnyMessageOwned, CommonMessages, CommonMessagesOwned, Mining, MiningOwned,
};
use stratum_core::stratum_translation::sv1_to_sv2::build_sv2_open_extended_mining_channel;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::UpstreamConfig;
use crate::metrics::TranslatorMetrics;

/// Identifies one Sv1 connection inside the translator.
pub type MinerId = u64;

/// SetupConnection flag: the translator's miners roll version bits (BIP 310).
const FLAG_REQUIRES_VERSION_ROLLING: u32 = 1 << 2;
const SV2_VERSION: u16 = 2;
/// Connect plus Noise handshake, and then SetupConnection, must each finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a miner's connection asks of the upstream task.
#[derive(Debug)]
pub enum Command {
    /// Open (and after every reconnect, reopen) this miner's channel.
    Open {
        miner: MinerId,
        identity: String,
        hashrate: f32,
        min_extranonce_size: u16,
        events: mpsc::UnboundedSender<Event>,
    },
    /// The miner suggested a difficulty: tell the pool its hashrate.
    UpdateHashrate { miner: MinerId, hashrate: f32 },
    Submit {
        miner: MinerId,
        share: SubmitSharesExtendedOwned,
    },
    /// The miner left: close its channel.
    Close { miner: MinerId },
}

/// What the upstream task tells a miner's connection.
#[derive(Debug)]
pub enum Event {
    /// The pool is unreachable: the channel opens when it is back.
    Queued,
    Opened {
        channel_id: u32,
        target: Target,
        extranonce_prefix: Vec<u8>,
        rollable_extranonce_size: u16,
    },
    /// The pool refused the channel (e.g. `identity-key-not-hex`); the miner is unregistered.
    Refused {
        code: String,
    },
    Job(NewExtendedMiningJobOwned),
    PrevHash(SetNewPrevHashOwned),
    Target(Target),
    /// Every share up to `last_sequence_number` on the channel was accepted.
    Accepted {
        channel_id: u32,
        last_sequence_number: u32,
    },
    Rejected {
        channel_id: u32,
        sequence_number: u32,
        code: String,
    },
    /// The connection to the pool is gone; the channel reopens when it is back.
    Lost,
    /// The pool closed the channel.
    Closed {
        reason: String,
    },
}

struct RegisteredMiner {
    identity: String,
    hashrate: f32,
    min_extranonce_size: u16,
    events: mpsc::UnboundedSender<Event>,
    channel_id: Option<u32>,
    /// The hashrate the open channel was last told, to send UpdateChannel only on change.
    channel_hashrate: f32,
}

impl RegisteredMiner {
    /// A miner waiting for its channel.
    fn new(
        identity: String,
        hashrate: f32,
        min_extranonce_size: u16,
        events: mpsc::UnboundedSender<Event>,
    ) -> Self {
        Self {
            identity,
            hashrate,
            min_extranonce_size,
            events,
            channel_id: None,
            channel_hashrate: hashrate,
        }
    }
}

/// Why a connected session ended.
enum SessionEnd {
    Shutdown,
    Lost(String),
}

pub struct Upstream {
    config: UpstreamConfig,
    commands: mpsc::Receiver<Command>,
    metrics: Arc<TranslatorMetrics>,
    miners: HashMap<MinerId, RegisteredMiner>,
}

impl Upstream {
    pub fn new(
        config: UpstreamConfig,
        commands: mpsc::Receiver<Command>,
        metrics: Arc<TranslatorMetrics>,
    ) -> Self {
        Self {
            config,
            commands,
            metrics,
            miners: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let base_delay = Duration::from_millis(self.config.reconnect_delay_ms.max(1));
        let max_delay = Duration::from_millis(
            self.config
                .max_reconnect_delay_ms
                .max(self.config.reconnect_delay_ms),
        );
        let mut delay = base_delay;
        let mut connected_before = false;
        loop {
            let attempt = tokio::select! {
                attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => attempt,
                () = stopped(&mut shutdown) => return,
            };
            match attempt {
                Ok(Ok((reader, writer))) => {
                    if connected_before {
                        self.metrics
                            .upstream_reconnects
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    connected_before = true;
                    let span = tracing::info_span!("upstream", pool = %self.config.address);
                    let (end, was_set_up) = self
                        .serve(reader, writer, &mut shutdown)
                        .instrument(span)
                        .await;
                    self.connection_lost();
                    match end {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Lost(reason) => {
                            tracing::warn!(pool = %self.config.address, %reason, "lost the pool; miners stay connected while reconnecting");
                        }
                    }
                    if was_set_up {
                        delay = base_delay;
                    }
                }
                Ok(Err(reason)) => {
                    tracing::warn!(pool = %self.config.address, %reason, retry_in_ms = delay.as_millis() as u64, "cannot reach the pool")
                }
                Err(_) => {
                    tracing::warn!(pool = %self.config.address, retry_in_ms = delay.as_millis() as u64, "connecting to the pool timed out")
                }
            }
            // Wait out the backoff, still serving miners (their channels queue until we're back).
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    () = &mut sleep => break,
                    command = self.commands.recv() => match command {
                        Some(command) => self.on_command_disconnected(command),
                        None => return,
                    },
                    () = stopped(&mut shutdown) => return,
                }
            }
            delay = (delay * 2).min(max_delay);
        }
    }

    async fn connect(&self) -> Result<(NoiseTcpReadHalf, NoiseTcpWriteHalf), String> {
        let tcp = TcpStream::connect(&self.config.address)
            .await
            .map_err(|error| format!("TCP connect: {error}"))?;
        let stream = connect_with_noise(tcp, Some(self.config.authority_public_key))
            .await
            .map_err(|error| format!("Noise handshake failed (wrong authority key?): {error:?}"))?;
        Ok(stream.into_split())
    }

    /// Serves one connection until it ends; also says whether SetupConnection succeeded.
    async fn serve(
        &mut self,
        reader: NoiseTcpReadHalf,
        writer: NoiseTcpWriteHalf,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (SessionEnd, bool) {
        let (frames_tx, mut frames) = mpsc::channel(256);
        let reader_task = tokio::spawn(read_messages(reader, frames_tx));
        let mut session = Session {
            writer,
            set_up: false,
            channels: HashMap::new(),
            requests: HashMap::new(),
            next_request_id: 1,
        };
        let end = match session.send(setup_connection()).await {
            Err(reason) => SessionEnd::Lost(reason),
            Ok(()) => {
                let setup_deadline = tokio::time::sleep(CONNECT_TIMEOUT);
                tokio::pin!(setup_deadline);
                loop {
                    let step = tokio::select! {
                        // Shutdown first: the connection closes without a last word (a
                        // CloseChannel per miner would say nothing closing the connection does not).
                        biased;
                        () = stopped(shutdown) => break SessionEnd::Shutdown,
                        message = frames.recv() => match message {
                            Some(Ok(message)) => self.on_pool_message(&mut session, message).await,
                            Some(Err(reason)) => Err(reason),
                            None => Err("reader stopped".to_owned()),
                        },
                        command = self.commands.recv() => match command {
                            Some(command) => self.on_command(&mut session, command).await,
                            None => break SessionEnd::Shutdown,
                        },
                        () = &mut setup_deadline, if !session.set_up => {
                            Err("no SetupConnection.Success in time".to_owned())
                        }
                    };
                    if let Err(reason) = step {
                        break SessionEnd::Lost(reason);
                    }
                }
            }
        };
        reader_task.abort();
        let _ = session.writer.shutdown().await;
        (end, session.set_up)
    }

    /// The connection is gone: every miner's channel with it. Miners keep their registration.
    fn connection_lost(&mut self) {
        self.metrics.upstream_connected.store(0, Ordering::Relaxed);
        self.metrics.channels_open.store(0, Ordering::Relaxed);
        self.miners.retain(|_, miner| {
            miner.channel_id = None;
            miner.events.send(Event::Lost).is_ok()
        });
    }

    fn on_command_disconnected(&mut self, command: Command) {
        match command {
            Command::Open {
                miner,
                identity,
                hashrate,
                min_extranonce_size,
                events,
            } => {
                let _ = events.send(Event::Queued);
                self.miners.insert(
                    miner,
                    RegisteredMiner::new(identity, hashrate, min_extranonce_size, events),
                );
            }
            Command::UpdateHashrate { miner, hashrate } => {
                if let Some(entry) = self.miners.get_mut(&miner) {
                    entry.hashrate = hashrate;
                }
            }
            Command::Submit { miner, share } => {
                if let Some(entry) = self.miners.get(&miner) {
                    let _ = entry.events.send(Event::Rejected {
                        channel_id: share.channel_id,
                        sequence_number: share.sequence_number,
                        code: "upstream-unavailable".into(),
                    });
                }
            }
            Command::Close { miner } => {
                self.miners.remove(&miner);
            }
        }
    }

    async fn on_command(&mut self, session: &mut Session, command: Command) -> Result<(), String> {
        match command {
            Command::Open {
                miner,
                identity,
                hashrate,
                min_extranonce_size,
                events,
            } => {
                self.miners.insert(
                    miner,
                    RegisteredMiner::new(identity, hashrate, min_extranonce_size, events),
                );
                if session.set_up {
                    self.open_channel(session, miner).await?;
                }
                Ok(())
            }
            Command::UpdateHashrate { miner, hashrate } => {
                let Some(entry) = self.miners.get_mut(&miner) else {
                    return Ok(());
                };
                entry.hashrate = hashrate;
                match entry.channel_id {
                    Some(channel_id) => {
                        entry.channel_hashrate = hashrate;
                        session.send(update_channel(channel_id, hashrate)).await
                    }
                    None => Ok(()),
                }
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
                        code: "upstream-reconnected".into(),
                    });
                    return Ok(());
                }
                session
                    .send(AnyMessageOwned::Mining(MiningOwned::SubmitSharesExtended(
                        share,
                    )))
                    .await
            }
            Command::Close { miner } => {
                let Some(entry) = self.miners.remove(&miner) else {
                    return Ok(());
                };
                session.requests.retain(|_, waiting| *waiting != miner);
                match entry.channel_id {
                    Some(channel_id) => self.close_channel(session, channel_id).await,
                    None => Ok(()),
                }
            }
        }
    }

    async fn close_channel(&self, session: &mut Session, channel_id: u32) -> Result<(), String> {
        session.channels.remove(&channel_id);
        self.metrics.channel_closed();
        session
            .send(AnyMessageOwned::Mining(MiningOwned::CloseChannel(
                CloseChannelOwned {
                    channel_id,
                    reason_code: "miner-disconnected"
                        .to_owned()
                        .try_into()
                        .expect("a short reason"),
                },
            )))
            .await
    }

    async fn open_channel(&mut self, session: &mut Session, miner: MinerId) -> Result<(), String> {
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
            .send(AnyMessageOwned::Mining(
                MiningOwned::OpenExtendedMiningChannel(open),
            ))
            .await
    }

    /// Sends an event to the miner on `channel_id`; a miner that is gone has its channel closed.
    async fn route(
        &mut self,
        session: &mut Session,
        channel_id: u32,
        event: Event,
    ) -> Result<(), String> {
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

    async fn on_pool_message(
        &mut self,
        session: &mut Session,
        message: AnyMessageOwned,
    ) -> Result<(), String> {
        let mining = match message {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionSuccess(_)) => {
                session.set_up = true;
                self.metrics.upstream_connected.store(1, Ordering::Relaxed);
                tracing::info!(
                    miners = self.miners.len(),
                    "connected to the pool; opening a channel per authorized miner"
                );
                let miners: Vec<MinerId> = self.miners.keys().copied().collect();
                for miner in miners {
                    self.open_channel(session, miner).await?;
                }
                return Ok(());
            }
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(error)) => {
                return Err(format!(
                    "the pool refused SetupConnection: {}",
                    error.error_code.as_utf8_or_hex()
                ))
            }
            AnyMessageOwned::Mining(mining) => mining,
            other => {
                tracing::debug!(message = ?other, "ignoring a message from the pool");
                return Ok(());
            }
        };
        match mining {
            MiningOwned::OpenExtendedMiningChannelSuccess(success) => {
                let Some(miner) = session.requests.remove(&success.request_id) else {
                    // Its miner left while the channel was opening.
                    self.metrics.channels_open.fetch_add(1, Ordering::Relaxed);
                    return self.close_channel(session, success.channel_id).await;
                };
                let Some(entry) = self.miners.get_mut(&miner) else {
                    return Ok(());
                };
                entry.channel_id = Some(success.channel_id);
                session.channels.insert(success.channel_id, miner);
                self.metrics.channels_open.fetch_add(1, Ordering::Relaxed);
                tracing::info!(miner, channel_id = success.channel_id, identity = %entry.identity, "channel opened");
                let opened = Event::Opened {
                    channel_id: success.channel_id,
                    target: Target::from_le_bytes(success.target.to_array()),
                    extranonce_prefix: success.extranonce_prefix.as_bytes().to_vec(),
                    rollable_extranonce_size: success.extranonce_size,
                };
                let (hashrate, told) = (entry.hashrate, entry.channel_hashrate);
                self.route(session, success.channel_id, opened).await?;
                if hashrate != told {
                    // suggest_difficulty arrived while the channel was opening.
                    if let Some(entry) = self.miners.get_mut(&miner) {
                        entry.channel_hashrate = hashrate;
                    }
                    session
                        .send(update_channel(success.channel_id, hashrate))
                        .await?;
                }
                Ok(())
            }
            MiningOwned::OpenMiningChannelError(error) => {
                let code = error.error_code.as_utf8_or_hex();
                if let Some(miner) = session.requests.remove(&error.request_id) {
                    if let Some(entry) = self.miners.remove(&miner) {
                        tracing::info!(miner, identity = %entry.identity, %code, "the pool refused the channel");
                        let _ = entry.events.send(Event::Refused { code });
                    }
                }
                Ok(())
            }
            MiningOwned::NewExtendedMiningJob(job) => {
                self.route(session, job.channel_id, Event::Job(job)).await
            }
            MiningOwned::SetNewPrevHash(prev_hash) => {
                self.route(session, prev_hash.channel_id, Event::PrevHash(prev_hash))
                    .await
            }
            MiningOwned::SetTarget(set_target) => {
                let target = Target::from_le_bytes(set_target.maximum_target.to_array());
                self.route(session, set_target.channel_id, Event::Target(target))
                    .await
            }
            MiningOwned::SubmitSharesSuccess(success) => {
                let event = Event::Accepted {
                    channel_id: success.channel_id,
                    last_sequence_number: success.last_sequence_number,
                };
                self.route(session, success.channel_id, event).await
            }
            MiningOwned::SubmitSharesError(error) => {
                let event = Event::Rejected {
                    channel_id: error.channel_id,
                    sequence_number: error.sequence_number,
                    code: error.error_code.as_utf8_or_hex(),
                };
                self.route(session, error.channel_id, event).await
            }
            MiningOwned::CloseChannel(close) => {
                let reason = close.reason_code.as_utf8_or_hex();
                if let Some(miner) = session.channels.remove(&close.channel_id) {
                    self.metrics.channel_closed();
                    if let Some(entry) = self.miners.remove(&miner) {
                        let _ = entry.events.send(Event::Closed { reason });
                    }
                }
                Ok(())
            }
            MiningOwned::UpdateChannelError(error) => {
                tracing::warn!(
                    channel_id = error.channel_id,
                    code = %error.error_code.as_utf8_or_hex(),
                    "the pool refused UpdateChannel"
                );
                Ok(())
            }
            other => {
                tracing::debug!(message = ?other, "ignoring a mining message from the pool");
                Ok(())
            }
        }
    }
}

struct Session {
    writer: NoiseTcpWriteHalf,
    set_up: bool,
    channels: HashMap<u32, MinerId>,
    requests: HashMap<u32, MinerId>,
    next_request_id: u32,
}

impl Session {
    async fn send(&mut self, message: AnyMessageOwned) -> Result<(), String> {
        let frame: MessageFrame<AnyMessageOwned> = message
            .try_into()
            .map_err(|error| format!("cannot encode a message: {error:?}"))?;
        self.writer
            .write_frame(frame)
            .await
            .map_err(|error| format!("write failed: {error:?}"))
    }
}

fn setup_connection() -> AnyMessageOwned {
    let text = |value: &str| value.to_owned().try_into().expect("short text");
    AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(SetupConnectionOwned {
        protocol: Protocol::MiningProtocol,
        min_version: SV2_VERSION,
        max_version: SV2_VERSION,
        flags: FLAG_REQUIRES_VERSION_ROLLING,
        endpoint_host: text(""),
        endpoint_port: 0,
        vendor: text("hashpool-translator"),
        hardware_version: text("sv1-proxy"),
        firmware: text(env!("CARGO_PKG_VERSION")),
        device_id: text(""),
    }))
}

fn update_channel(channel_id: u32, hashrate: f32) -> AnyMessageOwned {
    AnyMessageOwned::Mining(MiningOwned::UpdateChannel(UpdateChannelOwned {
        channel_id,
        nominal_hash_rate: hashrate,
        maximum_target: [0xff; 32].into(),
    }))
}

/// Reads and decodes the pool's frames on a task of its own (reading is not cancellation safe).
async fn read_messages(
    mut reader: NoiseTcpReadHalf,
    messages: mpsc::Sender<Result<AnyMessageOwned, String>>,
) {
    loop {
        let message = match reader.read_frame().await {
            Ok(mut frame) => {
                let header = frame.header();
                let message_type = header.msg_type();
                match AnyMessage::try_from((header, frame.payload())) {
                    Ok(AnyMessage::Mining(mining)) => {
                        Ok(AnyMessageOwned::Mining(Mining::into_owned(mining)))
                    }
                    Ok(AnyMessage::Common(common)) => {
                        Ok(AnyMessageOwned::Common(CommonMessages::into_owned(common)))
                    }
                    Ok(other) => Err(format!("unexpected message from the pool: {other}")),
                    Err(error) => Err(format!(
                        "undecodable message type {message_type:#04x} from the pool: {error:?}"
                    )),
                }
            }
            Err(stratum_apps::network_helpers::Error::SocketClosed) => {
                Err("the pool closed the connection".to_owned())
            }
            Err(error) => Err(format!("read failed: {error:?}")),
        };
        let last = message.is_err();
        if messages.send(message).await.is_err() || last {
            return;
        }
    }
}
