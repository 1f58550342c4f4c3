//! The pool process in-process: template feed, quote publisher, Sv2 listener, HTTP stats.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ehash::{ReleasePolicy, ShareWork};
use hashpool_service::{
    accept_until_stopped, listen, read_secret, ListenError, OnStop, SecretFileError,
};
use stratum_apps::stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::blocks::BlockSubmitter;
use crate::chain::{self, ChainError, TemplateFeed, TemplateStore};
use crate::config::{AuthorityConfig, PoolConfig, ProxyConfig, RedisConfig};
use crate::dashboard::api::Connect;
use crate::dashboard::history::HistoryStore;
use crate::dashboard::{ApiContext, Dashboard};
use crate::downstream::{CloseReason, Downstream, PoolContext};
use crate::epochs::{EpochBook, EpochError};
use crate::metrics::{PoolMetrics, PoolStats};
use crate::payout::PayoutDesk;
use crate::publisher::{PublisherError, PublisherSettings, QuotePublisher};
use crate::upstream::{Upstream, UpstreamBlockMatcher, UpstreamBlockWatch, UpstreamHandle};
use crate::work::Work;

/// Extranonce bytes in every coinbase: a 2-byte channel index, then 8 the miner rolls (what
/// cgminer-style Sv1 firmware handles through the translator).
const EXTRANONCE_LEN: u8 = 10;
const MAX_CHANNELS: u32 = 65_536;
/// How long the pool waits at start for the dashboard's history.
const HISTORY_LOAD_TIMEOUT: Duration = Duration::from_secs(3);
/// How long unsent quote messages may take to reach Redis on shutdown before being journaled.
const PUBLISH_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, Error)]
pub enum PoolError {
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Publisher(#[from] PublisherError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Epochs(#[from] EpochError),
    #[error(transparent)]
    CallbackSecret(#[from] SecretFileError),
    #[error(
        "payout.callback_secret_file {0} does not exist; create it (mode 0600) with the secret"
    )]
    NoCallbackSecret(std::path::PathBuf),
    #[error("redis.url: {0}")]
    RedisUrl(String),
    #[error("extranonce allocator: {0}")]
    Extranonce(String),
}

pub struct Pool {
    sv2_address: SocketAddr,
    http_address: SocketAddr,
    context: Arc<PoolContext>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    publisher: QuotePublisher,
    _feed: Option<TemplateFeed>,
    _upstream_blocks: Option<UpstreamBlockWatch>,
}

/// Where the channels' work comes from, and what goes with it: solo, the template feed and
/// block submission; proxy, the upstream task and (under payout epochs) the upstream-block watch.
struct WorkSource {
    work: watch::Receiver<Option<Work>>,
    template_store: TemplateStore,
    feed: Option<TemplateFeed>,
    blocks: Option<BlockSubmitter>,
    upstream: Option<UpstreamHandle>,
    upstream_blocks: Option<UpstreamBlockWatch>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pool {
    pub async fn start(config: PoolConfig) -> Result<Self, PoolError> {
        let (publisher, quotes) = QuotePublisher::start(publisher_settings(&config.redis))?;
        let (extranonce_len, max_channels) = match &config.proxy {
            Some(proxy) => (proxy.extranonce_len, proxy.max_channels),
            None => (EXTRANONCE_LEN, MAX_CHANNELS),
        };
        let allocator = ExtranonceAllocator::new(Vec::new(), extranonce_len, max_channels)
            .map_err(|error| PoolError::Extranonce(format!("{error:?}")))?;
        let metrics = Arc::new(PoolMetrics::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let epochs = epoch_book(&config)?;
        let redis = redis::Client::open(config.redis.url.as_str())
            .map_err(|error| PoolError::RedisUrl(error.to_string()))?;
        let (dashboard, history) = dashboard(&config.redis, redis.clone()).await;
        let source = match &config.proxy {
            Some(proxy) => {
                proxy_source(&config, proxy, &metrics, &dashboard, &epochs, &shutdown_rx).await?
            }
            None => solo_source(&config, &metrics, &dashboard, &epochs, &shutdown_rx).await?,
        };
        let context = Arc::new(PoolContext {
            release_policy: config.release_policy,
            shares_per_minute: config.vardiff.shares_per_minute,
            initial_hashrate: config.vardiff.initial_hashrate,
            minimum_share_work: minimum_share_work(&config),
            work: source.work,
            template_store: source.template_store,
            quotes,
            metrics: metrics.clone(),
            allocator: Mutex::new(allocator),
            next_channel_id: AtomicU32::new(1),
            next_job_id: AtomicU32::new(1),
            blocks: source.blocks,
            upstream: source.upstream,
            epochs,
            dashboard: dashboard.clone(),
            setup_timeout: Duration::from_millis(config.setup_timeout_ms),
        });
        let mut tasks = source.tasks;
        if let Some(history) = history {
            let every = Duration::from_millis(config.dashboard.history_flush_ms.max(100));
            let shutdown = shutdown_rx.clone();
            let dashboard = dashboard.clone();
            tasks.push(tokio::spawn(async move {
                dashboard.keep_flushed(history, every, shutdown).await
            }));
        }

        let payout_desk = payout_desk(&config, &context)?;
        let (listener, sv2_address) = listen(config.listen_address).await?;
        let (http_listener, http_address) = listen(config.http_address).await?;

        let api = ApiContext {
            dashboard,
            metrics: metrics.clone(),
            quotes: context.quotes.metrics().clone(),
            work: context.work.clone(),
            redis,
            stream: config.redis.stream.clone(),
            release_policy: config.release_policy,
            connect: connect_instructions(&config, sv2_address),
            payout: payout_desk.clone(),
        };
        let accept = tokio::spawn(accept_loop(
            listener,
            context.clone(),
            config,
            shutdown_rx.clone(),
        ));
        let http = tokio::spawn(crate::http::serve(
            http_listener,
            metrics,
            context.quotes.metrics().clone(),
            payout_desk,
            api,
            shutdown_rx,
        ));
        tracing::info!(%sv2_address, %http_address, "pool listening");
        tasks.extend([accept, http]);
        Ok(Self {
            sv2_address,
            http_address,
            context,
            shutdown,
            tasks,
            publisher,
            _feed: source.feed,
            _upstream_blocks: source.upstream_blocks,
        })
    }

    pub fn sv2_address(&self) -> SocketAddr {
        self.sv2_address
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// The payout epochs, under the payout-epoch policy.
    pub fn epochs(&self) -> Option<&Arc<EpochBook>> {
        self.context.epochs.as_ref()
    }

    pub fn metrics(&self) -> &Arc<PoolMetrics> {
        &self.context.metrics
    }

    pub fn quote_metrics(&self) -> &Arc<crate::publisher::PublisherMetrics> {
        self.context.quotes.metrics()
    }

    /// What `/stats` serves now.
    pub fn stats(&self) -> PoolStats {
        self.context
            .metrics
            .stats(self.quote_metrics(), &self.context.dashboard)
    }

    /// Stops accepting, closes connections, publishes or journals pending quote messages.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.publisher.shutdown(PUBLISH_GRACE).await;
    }
}

/// Solo: templates from bitcoind, found blocks submitted to it.
async fn solo_source(
    config: &PoolConfig,
    metrics: &Arc<PoolMetrics>,
    dashboard: &Arc<Dashboard>,
    epochs: &Option<Arc<EpochBook>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<WorkSource, PoolError> {
    let rpc = Arc::new(chain::BitcoindRpc::connect(&config.bitcoind).await?);
    let payout = chain::payout_script(&config.bitcoind.coinbase_address)?;
    let store = TemplateStore::default();
    let (feed, templates) = TemplateFeed::start(
        rpc.clone(),
        payout,
        Duration::from_millis(config.bitcoind.template_poll_ms),
        Duration::from_millis(config.bitcoind.template_refresh_ms),
        store.clone(),
    );
    let (blocks, submitter) = BlockSubmitter::start(
        rpc,
        metrics.clone(),
        dashboard.clone(),
        epochs.clone(),
        shutdown.clone(),
    );
    Ok(WorkSource {
        work: templates,
        template_store: store,
        feed: Some(feed),
        blocks: Some(blocks),
        upstream: None,
        upstream_blocks: None,
        tasks: vec![submitter],
    })
}

/// Proxy: the upstream pool's jobs; its blocks are the upstream's to submit.
async fn proxy_source(
    config: &PoolConfig,
    proxy: &ProxyConfig,
    metrics: &Arc<PoolMetrics>,
    dashboard: &Arc<Dashboard>,
    epochs: &Option<Arc<EpochBook>>,
    shutdown: &watch::Receiver<bool>,
) -> Result<WorkSource, PoolError> {
    let upstream_blocks = match epochs {
        Some(epochs) => Some(watch_upstream_blocks(config, proxy, epochs).await?),
        None => None,
    };
    let (task, handle, work) = Upstream::start(
        proxy.clone(),
        metrics.clone(),
        dashboard.clone(),
        shutdown.clone(),
    );
    tracing::info!(
        upstreams = proxy.upstreams.len(),
        "proxy mode: mining on upstream jobs"
    );
    Ok(WorkSource {
        work,
        template_store: TemplateStore::default(),
        feed: None,
        blocks: None,
        upstream: Some(handle),
        upstream_blocks,
        tasks: vec![task],
    })
}

/// Proxy mode, payout epochs: the upstream's blocks on the chain close epochs.
async fn watch_upstream_blocks(
    config: &PoolConfig,
    proxy: &ProxyConfig,
    epochs: &Arc<EpochBook>,
) -> Result<UpstreamBlockWatch, PoolError> {
    let rpc = Arc::new(chain::BitcoindRpc::connect(&config.bitcoind).await?);
    let matcher = UpstreamBlockMatcher {
        coinbase_tags: proxy
            .blocks
            .coinbase_tags
            .iter()
            .map(|tag| tag.as_bytes().to_vec())
            .collect(),
        payout_scripts: proxy
            .blocks
            .payout_addresses
            .iter()
            .map(|address| chain::payout_script(address))
            .collect::<Result<_, _>>()?,
    };
    epochs.note_shares(open_epoch_has_shares(&config.redis, epochs.current()).await);
    Ok(UpstreamBlockWatch::start(
        rpc,
        matcher,
        epochs.clone(),
        Duration::from_millis(proxy.blocks.poll_ms),
    ))
}

/// Whether the open epoch holds a create, from its totals beside the stream. `false` when Redis
/// cannot say: an empty epoch closed by mistake could never be paid, while a full one left open
/// only waits for the next block (and the next share credited marks it anyway).
async fn open_epoch_has_shares(redis: &RedisConfig, epoch: u64) -> bool {
    let key = ehash::epoch_totals_key(&redis.stream, epoch);
    let quotes = async {
        let client = redis::Client::open(redis.url.as_str())?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("HGET")
            .arg(&key)
            .arg("quotes")
            .query_async::<Option<u64>>(&mut connection)
            .await
    };
    match tokio::time::timeout(Duration::from_secs(5), quotes).await {
        Ok(Ok(quotes)) => quotes.unwrap_or(0) > 0,
        Ok(Err(error)) => {
            tracing::warn!(%error, epoch, "cannot read the open epoch's totals; counting it empty until a share");
            false
        }
        Err(_) => {
            tracing::warn!(
                epoch,
                "Redis did not answer for the open epoch's totals; counting it empty until a share"
            );
            false
        }
    }
}

/// The dashboard as its history in Redis left it. When Redis does not answer at start the
/// dashboard starts empty and keeps no history this run: writing an empty book's totals over the
/// stored ones would lose them, and mining must not wait for Redis.
async fn dashboard(
    redis: &RedisConfig,
    client: redis::Client,
) -> (Arc<Dashboard>, Option<HistoryStore>) {
    let store = HistoryStore::new(client, &redis.stream, &pool_id(redis));
    let loaded = tokio::time::timeout(
        HISTORY_LOAD_TIMEOUT,
        store.load(hashpool_service::unix_now()),
    )
    .await;
    let failure = match loaded {
        Ok(Ok((book, blocks))) => {
            return (Arc::new(Dashboard::restored(book, blocks)), Some(store))
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("Redis did not answer within {HISTORY_LOAD_TIMEOUT:?}"),
    };
    tracing::warn!(%failure, "cannot read the dashboard history; none is kept this run");
    (
        Arc::new(Dashboard::restored(Default::default(), Vec::new())),
        None,
    )
}

/// What the dashboard tells miners to connect to.
fn connect_instructions(config: &PoolConfig, listening: SocketAddr) -> Connect {
    let sv2_address = config.dashboard.sv2_address.clone().unwrap_or_else(|| {
        if listening.ip().is_unspecified() {
            format!("127.0.0.1:{}", listening.port())
        } else {
            listening.to_string()
        }
    });
    Connect {
        sv2_address,
        authority_public_key: config.authority.public_key.to_string(),
        sv1_url: config.dashboard.sv1_url.clone(),
    }
}

fn pool_id(redis: &RedisConfig) -> String {
    redis.publisher_id.clone().unwrap_or_else(default_pool_id)
}

fn publisher_settings(redis: &RedisConfig) -> PublisherSettings {
    PublisherSettings {
        redis_url: redis.url.clone(),
        stream: redis.stream.clone(),
        pool_id: pool_id(redis),
        capacity: redis.buffer_capacity,
        journal_path: redis.journal_path.clone(),
    }
}

/// The payout epochs, kept under the payout-epoch policy only.
fn epoch_book(config: &PoolConfig) -> Result<Option<Arc<EpochBook>>, EpochError> {
    match config.release_policy {
        ReleasePolicy::PayoutEpoch => {
            Ok(Some(Arc::new(EpochBook::open(&config.payout.epochs_file)?)))
        }
        ReleasePolicy::Ehash => Ok(None),
    }
}

/// The payout callback's desk, when epochs are kept and a callback secret is configured.
fn payout_desk(
    config: &PoolConfig,
    context: &PoolContext,
) -> Result<Option<Arc<PayoutDesk>>, PoolError> {
    let (Some(epochs), Some(path)) = (&context.epochs, &config.payout.callback_secret_file) else {
        return Ok(None);
    };
    let secret = read_secret(path)?.ok_or_else(|| PoolError::NoCallbackSecret(path.clone()))?;
    let redis = redis::Client::open(config.redis.url.as_str())
        .map_err(|error| PoolError::RedisUrl(error.to_string()))?;
    tracing::info!(address = %config.http_address, "payout callbacks accepted on POST /payout");
    Ok(Some(Arc::new(PayoutDesk::new(
        secret.into_bytes(),
        epochs.clone(),
        redis,
        config.redis.stream.clone(),
        context.quotes.metrics().clone(),
    ))))
}

/// The configured minimum share, logged once: every target the pool sets is a power of two no
/// easier than it.
fn minimum_share_work(config: &PoolConfig) -> ShareWork {
    let minimum = config.minimum_share_work();
    tracing::info!(
        minimum_difficulty = minimum.difficulty(),
        minimum_hashes = minimum.expected_hashes(),
        "every share target is a power of two no easier than the minimum"
    );
    minimum
}

async fn accept_loop(
    listener: TcpListener,
    context: Arc<PoolContext>,
    config: PoolConfig,
    shutdown: watch::Receiver<bool>,
) {
    let connection_shutdown = shutdown.clone();
    let limits = config.connections;
    accept_until_stopped(
        listener,
        shutdown,
        OnStop::Abort,
        limits,
        move |tcp, peer| {
            serve_miner(
                tcp,
                peer,
                context.clone(),
                config.authority.clone(),
                connection_shutdown.clone(),
            )
        },
    )
    .await
}

/// One miner's TCP connection.
async fn serve_miner(
    tcp: TcpStream,
    peer: SocketAddr,
    context: Arc<PoolContext>,
    authority: AuthorityConfig,
    shutdown: watch::Receiver<bool>,
) {
    let (reader, writer) = tcp.into_split();
    serve_connection(
        reader,
        writer,
        peer.to_string(),
        context,
        &authority,
        shutdown,
    )
    .await;
}

/// One miner's connection on any byte stream: the Noise handshake, then Sv2 until it closes.
/// Returns why it closed, or `None` when the handshake failed.
pub(crate) async fn serve_connection(
    reader: impl AsyncRead + Send + Unpin + 'static,
    writer: impl AsyncWrite + Send + Unpin + 'static,
    peer: String,
    context: Arc<PoolContext>,
    authority: &AuthorityConfig,
    shutdown: watch::Receiver<bool>,
) -> Option<CloseReason> {
    let noise = crate::noise::accept(
        reader,
        writer,
        authority.public_key,
        authority.secret_key,
        Duration::from_secs(authority.cert_validity_secs),
        crate::downstream::MAX_PAYLOAD,
    )
    .await;
    let (reader, writer) = match noise {
        Ok(halves) => halves,
        Err(error) => {
            tracing::warn!(%peer, %error, "connection closed: Noise handshake failed");
            return None;
        }
    };
    context.metrics.connections.inc();
    context.metrics.connections_total.inc();
    let reason = Downstream::new(context.clone(), peer.clone(), writer)
        .run(reader, shutdown)
        .await;
    context.metrics.connections.dec();
    match &reason {
        CloseReason::PeerClosed | CloseReason::Shutdown => {
            tracing::info!(%peer, %reason, "connection closed")
        }
        _ => tracing::warn!(%peer, %reason, "connection closed"),
    }
    Some(reason)
}

fn default_pool_id() -> String {
    format!("pool-{}", hashpool_service::hostname())
}
