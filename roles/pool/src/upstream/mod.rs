//! Proxy mode: the pool mines on an upstream pool's jobs instead of its own templates.
//!
//! One task keeps a connection to the first upstream that works (reconnecting with backoff, then
//! moving on to the next in the list), turns its jobs into [`Work`] for the downstream channels,
//! and submits upstream the shares the channels forward. Downstream miners never notice the
//! upstream going away, except that shares on a dead upstream's jobs are refused as stale and
//! credited nothing: they can earn nothing upstream either.

mod blocks;
mod channel;
mod job;
mod sv1;
mod sv2;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hashpool_service::{stopped, Backoff};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use blocks::{UpstreamBlockMatcher, UpstreamBlockWatch};
pub use job::{bip34_height, JobError, UpstreamJob};

use crate::config::{ProxyConfig, UpstreamConfig};
use crate::dashboard::Dashboard;
use crate::metrics::PoolMetrics;
use crate::work::Work;

/// Shares waiting for the upstream task; beyond this, forwards are dropped (and counted) rather
/// than ever holding up a miner.
const FORWARD_QUEUE: usize = 4096;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("upstream url {0:?}: expected stratum+tcp://host:port (Sv1) or stratum2+tcp://host:port (Sv2)")]
    Url(String),
    #[error("connection: {0}")]
    Io(String),
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error(transparent)]
    Client(#[from] hashpool_sv2_client::ClientError),
    #[error("the upstream refused the channel: {0}")]
    Refused(String),
    #[error(
        "the upstream gives {given} extranonce bytes to roll; this pool's channels need {needed} \
         ([proxy] extranonce_len)"
    )]
    ExtranonceTooSmall { given: usize, needed: usize },
    #[error("the upstream's message broke the channel: {0}")]
    Protocol(String),
    #[error("the upstream closed the channel")]
    ChannelClosed,
}

/// A credited share that also meets the upstream's target, on its way upstream.
#[derive(Debug, Clone)]
pub struct ForwardedShare {
    pub session: u64,
    pub upstream_job_id: u32,
    /// The upstream extranonce: padding, the channel's prefix, what the miner rolled.
    pub extranonce: Vec<u8>,
    pub version: u32,
    pub ntime: u32,
    pub nonce: u32,
    /// The locking key of the miner who found it, for its upstream accept/reject counts.
    pub miner: String,
}

/// Which relayed jobs the upstream can still take shares on: those of the session that is up now
/// (0: none), from its `first_generation` on (an Sv1 `mining.set_extranonce` retires the jobs
/// before it, whose coinbases carried the old extranonce1).
#[derive(Debug, Default)]
struct LiveWork {
    session: AtomicU64,
    first_generation: AtomicU64,
}

impl LiveWork {
    fn start(&self, session: u64) {
        self.first_generation.store(0, Ordering::Release);
        self.session.store(session, Ordering::Release);
    }

    fn end(&self) {
        self.session.store(0, Ordering::Release);
    }

    fn retire_before(&self, generation: u64) {
        self.first_generation.store(generation, Ordering::Release);
    }

    fn takes(&self, job: &UpstreamJob) -> bool {
        self.session.load(Ordering::Acquire) == job.session
            && job.generation >= self.first_generation.load(Ordering::Acquire)
    }
}

/// What downstream connections need of the upstream: whether a job's session is the live one,
/// and where to forward shares.
#[derive(Debug, Clone)]
pub struct UpstreamHandle {
    live: Arc<LiveWork>,
    forwards: mpsc::Sender<ForwardedShare>,
    metrics: Arc<PoolMetrics>,
}

impl UpstreamHandle {
    /// Whether the upstream can still take shares on `job`: it came on the connection that is up
    /// now, and no new extranonce retired it.
    pub fn is_live(&self, job: &UpstreamJob) -> bool {
        self.live.takes(job)
    }

    pub fn forward(&self, share: ForwardedShare) {
        if self.forwards.try_send(share).is_err() {
            self.metrics.upstream.dropped.inc();
        }
    }
}

/// What a session shares with the task that runs it.
struct Shared {
    live: Arc<LiveWork>,
    work: watch::Sender<Option<Work>>,
    next_work_id: AtomicU64,
    metrics: Arc<PoolMetrics>,
    /// Where each miner's upstream answers are counted.
    dashboard: Arc<Dashboard>,
    /// `T`: the extranonce bytes each downstream channel takes.
    channel_extranonce_len: usize,
}

impl Shared {
    /// The upstream's answer to a share `miner` (its locking key) found: the miner's line first,
    /// so whoever sees the pool's counter move finds the miner's already counted.
    fn upstream_answer(&self, miner: &str, accepted: bool) {
        self.dashboard.upstream_answer(miner, accepted);
        let counter = if accepted {
            &self.metrics.upstream.accepted
        } else {
            &self.metrics.upstream.rejected
        };
        counter.inc();
    }
}

/// The task that keeps the pool connected upstream.
pub struct Upstream {
    config: ProxyConfig,
    shared: Shared,
    forwards: mpsc::Receiver<ForwardedShare>,
}

impl Upstream {
    /// The upstream task, the handle downstream connections use, and the work it publishes.
    pub fn start(
        config: ProxyConfig,
        metrics: Arc<PoolMetrics>,
        dashboard: Arc<Dashboard>,
        shutdown: watch::Receiver<bool>,
    ) -> (
        JoinHandle<()>,
        UpstreamHandle,
        watch::Receiver<Option<Work>>,
    ) {
        let (work, work_rx) = watch::channel(None);
        let (forward_tx, forwards) = mpsc::channel(FORWARD_QUEUE);
        let live = Arc::new(LiveWork::default());
        let handle = UpstreamHandle {
            live: live.clone(),
            forwards: forward_tx,
            metrics: metrics.clone(),
        };
        let upstream = Self {
            shared: Shared {
                live,
                work,
                next_work_id: AtomicU64::new(1),
                metrics,
                dashboard,
                channel_extranonce_len: usize::from(config.extranonce_len),
            },
            config,
            forwards,
        };
        (tokio::spawn(upstream.run(shutdown)), handle, work_rx)
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(
            Duration::from_millis(self.config.reconnect_delay_ms),
            Duration::from_millis(self.config.max_reconnect_delay_ms),
        );
        let mut index = 0;
        let mut failures = 0;
        let mut session = 0;
        loop {
            let Some(upstream) = self.config.upstreams.get(index).cloned() else {
                tracing::error!("proxy mode without an upstream: [[proxy.upstreams]] is empty");
                return;
            };
            session += 1;
            let span = tracing::info_span!("upstream", url = %upstream.url, session);
            let end = tracing::Instrument::instrument(
                self.serve(&upstream, session, &mut shutdown),
                span,
            )
            .await;
            self.shared.live.end();
            self.shared.metrics.upstream.connected.set(0);
            let gave_work = match end {
                SessionEnd::Shutdown => return,
                SessionEnd::Lost { gave_work, reason } => {
                    self.shared.metrics.upstream.failure(reason.kind());
                    tracing::warn!(url = %upstream.url, session, %reason, "upstream lost; miners stay connected");
                    gave_work
                }
            };
            if gave_work {
                failures = 0;
                backoff.reset();
            } else {
                failures += 1;
                if failures >= self.config.attempts_per_upstream.max(1) {
                    index = (index + 1) % self.config.upstreams.len();
                    failures = 0;
                    backoff.reset();
                    tracing::warn!(next = %self.config.upstreams[index].url, "moving to the next upstream");
                }
            }
            self.drop_queued_forwards();
            tokio::select! {
                () = tokio::time::sleep(backoff.take()) => {}
                () = stopped(&mut shutdown) => return,
            }
        }
    }

    async fn serve(
        &mut self,
        upstream: &UpstreamConfig,
        session: u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let connected = tokio::select! {
            connected = Session::connect(upstream, session, &self.shared) => connected,
            () = stopped(shutdown) => return SessionEnd::Shutdown,
        };
        match connected {
            Ok(session) => {
                self.shared.metrics.upstream.sessions.inc();
                self.shared.metrics.upstream.connected.set(1);
                match session {
                    Session::Sv1(session) => {
                        serve(*session, &self.shared, &mut self.forwards, shutdown).await
                    }
                    Session::Sv2(session) => {
                        serve(*session, &self.shared, &mut self.forwards, shutdown).await
                    }
                }
            }
            Err(reason) => SessionEnd::Lost {
                gave_work: false,
                reason,
            },
        }
    }

    /// Forwards of a session that ended can no longer be submitted anywhere.
    fn drop_queued_forwards(&mut self) {
        while self.forwards.try_recv().is_ok() {
            self.shared.metrics.upstream.dropped.inc();
        }
    }
}

/// What differs between a connected Sv1 and Sv2 upstream; [`serve`] runs either.
trait Protocol {
    type Incoming;

    /// The upstream's next message. Cancellation safe: a task of its own reads the connection.
    async fn next_incoming(&mut self) -> Result<Self::Incoming, UpstreamError>;

    fn on_incoming(
        &mut self,
        incoming: Self::Incoming,
        shared: &Shared,
    ) -> Result<(), UpstreamError>;

    /// Submits a forwarded share, if the upstream channel takes it.
    async fn submit(&mut self, share: ForwardedShare, shared: &Shared)
        -> Result<(), UpstreamError>;

    /// Closes our side of the connection.
    async fn close(&mut self);

    fn gave_work(&self) -> bool;
}

/// Serves a connected upstream until it goes away or the pool stops: its messages, and the
/// shares forwarded to it.
async fn serve<P: Protocol>(
    mut session: P,
    shared: &Shared,
    forwards: &mut mpsc::Receiver<ForwardedShare>,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    let result = loop {
        let step = tokio::select! {
            incoming = session.next_incoming() => match incoming {
                Ok(incoming) => session.on_incoming(incoming, shared),
                Err(reason) => Err(reason),
            },
            Some(share) = forwards.recv() => session.submit(share, shared).await,
            () = stopped(shutdown) => break None,
        };
        if let Err(reason) = step {
            break Some(reason);
        }
    };
    session.close().await;
    SessionEnd::after(result, session.gave_work())
}

/// A connected upstream, by protocol.
enum Session {
    Sv1(Box<sv1::Sv1Session>),
    Sv2(Box<sv2::Sv2Session>),
}

impl Session {
    async fn connect(
        upstream: &UpstreamConfig,
        session: u64,
        shared: &Shared,
    ) -> Result<Self, UpstreamError> {
        if let Some(address) = upstream.url.strip_prefix(sv2::URL_SCHEME) {
            return Ok(Session::Sv2(Box::new(
                sv2::Sv2Session::connect(address, upstream, session, shared).await?,
            )));
        }
        if let Some(address) = upstream.url.strip_prefix(sv1::URL_SCHEME) {
            return Ok(Session::Sv1(Box::new(
                sv1::Sv1Session::connect(address, upstream, session, shared).await?,
            )));
        }
        Err(UpstreamError::Url(upstream.url.clone()))
    }
}

/// Why a session ended, and whether it got as far as giving the channels work.
enum SessionEnd {
    Shutdown,
    Lost {
        gave_work: bool,
        reason: UpstreamError,
    },
}

impl SessionEnd {
    /// A served session's end: `None` when the pool stopped it.
    fn after(reason: Option<UpstreamError>, gave_work: bool) -> Self {
        match reason {
            None => SessionEnd::Shutdown,
            Some(reason) => SessionEnd::Lost { gave_work, reason },
        }
    }
}

impl UpstreamError {
    /// The `reason` label of `hashpool_pool_upstream_failures_total`.
    fn kind(&self) -> &'static str {
        match self {
            UpstreamError::Url(_) => "config",
            UpstreamError::ConnectTimeout(_) => "timeout",
            UpstreamError::Client(hashpool_sv2_client::ClientError::Decode { .. })
            | UpstreamError::Client(hashpool_sv2_client::ClientError::Unexpected(_))
            | UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Client(_) | UpstreamError::Io(_) => "connection",
            UpstreamError::Refused(_) | UpstreamError::ExtranonceTooSmall { .. } => "refused",
            UpstreamError::ChannelClosed => "closed",
        }
    }
}
