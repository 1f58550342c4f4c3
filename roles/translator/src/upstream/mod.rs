//! The one Sv2 connection to the pool, carrying one extended channel per authorized Sv1 miner.
//!
//! Miners register here after `mining.authorize`; this task opens their channels, routes the
//! pool's messages to them by channel id, and forwards their shares. When the pool goes away,
//! miners are told (their Sv1 connections stay up), the task reconnects with a doubling backoff,
//! and every registered miner's channel is opened again.
//!
//! - this file: what miners and this task say to each other, and the reconnect loop;
//! - [`session`]: one connection's channels and the miners' commands on it;
//! - [`pool_messages`]: what the pool says, routed to the miners.

mod pool_messages;
mod session;

use hashpool_service::{stopped, Backoff};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hashpool_sv2_client::{ClientError, Device, PoolConnection};
use stratum_core::bitcoin::Target;
use stratum_core::mining_sv2::{
    NewExtendedMiningJobOwned, SetNewPrevHashOwned, SubmitSharesExtendedOwned,
};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::config::UpstreamConfig;
use crate::metrics::TranslatorMetrics;
use crate::reject::ShareRejection;
use session::Session;

/// Identifies one Sv1 connection inside the translator.
pub type MinerId = u64;

/// Connect plus Noise handshake, and then SetupConnection, must each finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the translator says it is in SetupConnection.
const TRANSLATOR: Device = Device {
    vendor: "hashpool-translator",
    hardware_version: "sv1-proxy",
    firmware: env!("CARGO_PKG_VERSION"),
};

/// Why the connection to the pool ended or could not be made.
#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("connecting to the pool timed out")]
    ConnectTimeout,
    #[error("no SetupConnection.Success in time")]
    SetupTimeout,
}

/// What a miner's connection asks of the upstream task.
#[derive(Debug)]
pub enum Command {
    /// Open (and after every reconnect, reopen) this miner's channel.
    Open(Registration),
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
        reason: ShareRejection,
    },
    /// The connection to the pool is gone; the channel reopens when it is back.
    Lost,
    /// The pool closed the channel.
    Closed {
        reason: String,
    },
}

/// An authorized miner asking for its channel.
#[derive(Debug)]
pub struct Registration {
    pub miner: MinerId,
    pub identity: String,
    pub hashrate: f32,
    pub min_extranonce_size: u16,
    pub events: mpsc::UnboundedSender<Event>,
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

impl From<Registration> for RegisteredMiner {
    /// A miner waiting for its channel.
    fn from(registration: Registration) -> Self {
        Self {
            identity: registration.identity,
            hashrate: registration.hashrate,
            min_extranonce_size: registration.min_extranonce_size,
            events: registration.events,
            channel_id: None,
            channel_hashrate: registration.hashrate,
        }
    }
}

/// Why a connected session ended.
enum SessionEnd {
    Shutdown,
    Lost(UpstreamError),
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
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.reconnect_delay_ms),
            Duration::from_millis(self.config.max_reconnect_delay_ms),
        );
        let mut connected_before = false;
        loop {
            let attempt = tokio::select! {
                attempt = self.connect() => attempt,
                () = stopped(&mut shutdown) => return,
            };
            match attempt {
                Ok(connection) => {
                    if connected_before {
                        self.metrics.upstream_reconnects.inc();
                    }
                    connected_before = true;
                    let (end, was_set_up) = self.serve(connection, &mut shutdown).await;
                    self.connection_lost();
                    match end {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Lost(reason) => {
                            tracing::warn!(pool = %self.config.address, %reason, "lost the pool; miners stay connected while reconnecting");
                        }
                    }
                    if was_set_up {
                        backoff.reset();
                    }
                }
                Err(error) => {
                    tracing::warn!(pool = %self.config.address, %error, retry_in_ms = backoff.peek().as_millis() as u64, "cannot reach the pool")
                }
            }
            if !self.wait_out(backoff.take(), &mut shutdown).await {
                return;
            }
        }
    }

    /// TCP and the Noise handshake, the pool's authority key checked.
    async fn connect(&self) -> Result<PoolConnection, UpstreamError> {
        let connect =
            PoolConnection::connect(&self.config.address, Some(self.config.authority_public_key));
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(connection) => Ok(connection?),
            Err(_) => Err(UpstreamError::ConnectTimeout),
        }
    }

    /// Serves one connection until it ends; also says whether SetupConnection succeeded.
    async fn serve(
        &mut self,
        connection: PoolConnection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (SessionEnd, bool) {
        let span = tracing::info_span!("upstream", pool = %self.config.address);
        let (reader, writer) = connection.into_split();
        let mut session = Session::new(writer);
        let end = self
            .run_session(&mut session, reader.spawn(256), shutdown)
            .instrument(span)
            .await;
        session.close().await;
        (end, session.set_up)
    }

    /// Sleeps `delay`, still taking miners' commands (their channels queue until the pool is
    /// back); false if the translator is stopping.
    async fn wait_out(&mut self, delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return true,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command_disconnected(command),
                    None => return false,
                },
                () = stopped(shutdown) => return false,
            }
        }
    }

    /// The connection is gone: every miner's channel with it. Miners keep their registration.
    fn connection_lost(&mut self) {
        self.metrics.upstream_connected.set(0);
        self.metrics.channels_open.set(0);
        self.miners.retain(|_, miner| {
            miner.channel_id = None;
            miner.events.send(Event::Lost).is_ok()
        });
    }

    fn on_command_disconnected(&mut self, command: Command) {
        match command {
            Command::Open(registration) => {
                let _ = registration.events.send(Event::Queued);
                self.miners.insert(registration.miner, registration.into());
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
                        reason: ShareRejection::UpstreamUnavailable,
                    });
                }
            }
            Command::Close { miner } => {
                self.miners.remove(&miner);
            }
        }
    }
}
