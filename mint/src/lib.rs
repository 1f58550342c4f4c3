//! The hashpool mint: a cdk mint for unit `hash` that consumes the pool's quote stream and serves
//! the cashu HTTP API.
//!
//! [`MintServer::start`] runs everything in-process (the binary and the tests use it): the cdk
//! mint on its store, the stream consumer, and the HTTP API.

pub mod backend;
pub mod config;
pub mod consumer;
pub mod http;
pub mod lightning;
pub mod limits;
pub mod lookup;
pub mod metrics;
pub mod quotes;
pub mod seed;
pub mod serve;
mod sqlite_cache;
pub mod trim;

use std::net::SocketAddr;
use std::sync::Arc;

use cdk::cdk_database::{self, MintKeysDatabase};
use cdk::mint::{MintBuilder, MintMeltLimits, UnitConfig};
use cdk::nuts::nut00::KnownMethod;
use cdk::nuts::nut17::{SupportedMethods, WsCommand};
use cdk::nuts::nut19::Settings as Nut19Settings;
use cdk::nuts::{CurrencyUnit, MintInfo, PaymentMethod};
use cdk::Mint;
use cdk_common::database::{DynKVStore, DynMintDatabase};
use cdk_ldk_node::CdkLdkNode;
use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::MintConfig;
pub use metrics::MintMetrics;
pub use quotes::QuoteBook;

/// Denominations: every power of two up to 2^63, so any u64 amount of work can be minted.
const DENOMINATION_BITS: u32 = 64;

/// Denominations of the `sat` keyset: 2^0 to 2^40 sat, far above any one payout share.
const SAT_DENOMINATION_BITS: u32 = 41;

#[derive(Debug, Error)]
pub enum MintError {
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    #[error("cannot create the store directory {path}: {source}")]
    StoreDir {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the page cache of the SQLite store {path}: {source}")]
    SqliteCache {
        path: std::path::PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("mint store: {0}")]
    Store(#[from] cdk_database::Error),
    #[error("mint: {0}")]
    Cdk(#[from] cdk::Error),
    #[error(transparent)]
    Limits(#[from] limits::LimitsError),
    #[error("cannot build the cashu router: {0}")]
    Router(String),
    #[error(transparent)]
    Consumer(#[from] consumer::ConsumerError),
    #[error(transparent)]
    Listen(#[from] hashpool_service::ListenError),
    #[error(transparent)]
    Lightning(#[from] lightning::LightningError),
}

type KeysStore = Arc<dyn MintKeysDatabase<Err = cdk_database::Error> + Send + Sync>;

/// The configured store, as the mint, its keys and the Lightning node each see it.
struct Stores {
    mint: DynMintDatabase,
    keys: KeysStore,
    kv: DynKVStore,
}

/// Opens the configured store: cdk's PostgreSQL store when a URL is given, else a SQLite file.
async fn open_store(config: &MintConfig) -> Result<Stores, MintError> {
    if let Some(url) = &config.database.postgres_url {
        let db = Arc::new(cdk_postgres::MintPgDatabase::new(url.as_str()).await?);
        return Ok(Stores {
            mint: db.clone(),
            keys: db.clone(),
            kv: db,
        });
    }
    let path = &config.database.sqlite_path;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| MintError::StoreDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    sqlite_cache::suggest_cache_size(path, config.database.sqlite_cache_mib).map_err(|source| {
        MintError::SqliteCache {
            path: path.clone(),
            source,
        }
    })?;
    let db = Arc::new(cdk_sqlite::MintSqliteDatabase::new(path.clone()).await?);
    Ok(Stores {
        mint: db.clone(),
        keys: db.clone(),
        kv: db,
    })
}

/// The quote book writing stream batches with the mint's own writer for the configured store,
/// or through cdk's store API (slower, as exact) when that writer cannot start.
async fn with_batch_writer(book: QuoteBook, database: &config::DatabaseConfig) -> QuoteBook {
    let error = match &database.postgres_url {
        Some(url) => match quotes::PostgresBatchWriter::connect(url).await {
            Ok(writer) => return book.with_postgres_writer(writer),
            Err(error) => error.to_string(),
        },
        None => match quotes::SqliteBatchWriter::open(&database.sqlite_path).await {
            Ok(writer) => return book.with_sqlite_writer(writer),
            Err(error) => error.to_string(),
        },
    };
    tracing::warn!(
        %error,
        "stream batches go through cdk's store API (slower) instead of the mint's own writer"
    );
    book
}

/// A started cdk mint, and its Lightning node when it has one.
pub struct BuiltMint {
    pub mint: Arc<Mint>,
    pub lightning: Option<Arc<CdkLdkNode>>,
}

/// Builds and starts the cdk mint: unit `hash` (and `sat`) with the `ehash` payment method, and
/// `sat` melts over Lightning when a node is configured.
pub async fn build_mint(config: &MintConfig) -> Result<BuiltMint, MintError> {
    let seed = seed::load_or_create_seed(&config.seed_file)?;
    let stores = open_store(config).await?;
    let mut builder = ehash_mint_builder(stores.mint, config).await?;
    let lightning = match &config.lightning {
        Some(lightning) => {
            // Started beside bitcoind (bin/up): its cookie may not be written yet.
            hashpool_service::wait_for_cookie(
                &lightning.bitcoind_cookie_file,
                hashpool_service::COOKIE_WAIT,
            )
            .await;
            let node = lightning::build_node(lightning, &seed, stores.kv)?;
            add_lightning_melts(&mut builder, &node).await?;
            Some(node)
        }
        None => None,
    };
    let mut info = advertised_info(&builder);
    let builder = builder.with_mint_info(info.clone());

    let mint = Arc::new(builder.build_with_seed(stores.keys, &seed).await?);
    // cdk keeps the first run's info in its store; ours is the source of truth on every start.
    info.pubkey = mint.mint_info().await?.pubkey;
    info.nuts.nut29.max_batch_size = Some(max_batch_size(&mint, config)? as u64);
    mint.set_mint_info(info).await?;
    mint.start().await?;
    Ok(BuiltMint { mint, lightning })
}

/// NUT-05: sats leave over Lightning, to a BOLT11 invoice or a BOLT12 offer.
async fn add_lightning_melts(
    builder: &mut MintBuilder,
    node: &Arc<CdkLdkNode>,
) -> Result<(), MintError> {
    // One processor for both methods: cdk starts it once.
    let melts: cdk_common::payment::DynMintPayment =
        Arc::new(lightning::melt_only::MeltOnly(node.clone()));
    for method in [KnownMethod::Bolt11, KnownMethod::Bolt12] {
        builder
            .add_payment_processor(
                CurrencyUnit::Sat,
                PaymentMethod::Known(method),
                MintMeltLimits::new(1, u64::MAX),
                melts.clone(),
            )
            .await?;
    }
    Ok(())
}

/// A mint builder with unit `hash` minted by the stream-fed `ehash` method.
async fn ehash_mint_builder(
    store: DynMintDatabase,
    config: &MintConfig,
) -> Result<MintBuilder, MintError> {
    let unit = CurrencyUnit::custom(ehash::UNIT);
    let method = PaymentMethod::Custom(ehash::PAYMENT_METHOD.to_owned());
    let mut builder = MintBuilder::new(store)
        .with_name(config.info.name.clone())
        .with_description(config.info.description.clone())
        .with_limits(limits::MAX_OUTPUTS, limits::MAX_OUTPUTS)
        // The size is set once the keyset (whose id is part of every output) exists.
        .with_batch_minting(None, Some(vec![ehash::PAYMENT_METHOD.to_owned()]))
        // NUT-17: wallets may subscribe to their quotes' state and to proof states (no melts).
        .with_supported_websockets(SupportedMethods::new(
            method.clone(),
            unit.clone(),
            vec![
                WsCommand::Custom(format!("{}_mint_quote", ehash::PAYMENT_METHOD)),
                WsCommand::ProofState,
            ],
        ));
    builder.configure_unit(
        unit.clone(),
        UnitConfig {
            amounts: (0..DENOMINATION_BITS).map(|bit| 1u64 << bit).collect(),
            input_fee_ppk: 0,
        },
    )?;
    builder
        .add_payment_processor(
            unit,
            method.clone(),
            MintMeltLimits::new(1, u64::MAX),
            Arc::new(backend::EhashPayments),
        )
        .await?;
    add_sat_unit(builder, method).await
}

/// Payout-epoch quotes: the same stream-fed method, in sats, each quote PAID its share of a
/// payout that landed.
async fn add_sat_unit(
    mut builder: MintBuilder,
    method: PaymentMethod,
) -> Result<MintBuilder, MintError> {
    builder.configure_unit(
        CurrencyUnit::Sat,
        UnitConfig {
            amounts: (0..SAT_DENOMINATION_BITS).map(|bit| 1u64 << bit).collect(),
            input_fee_ppk: 0,
        },
    )?;
    builder
        .add_payment_processor(
            CurrencyUnit::Sat,
            method.clone(),
            MintMeltLimits::new(1, u64::MAX),
            Arc::new(backend::EhashPayments),
        )
        .await?;
    Ok(builder.with_supported_websockets(SupportedMethods::new(
        method,
        CurrencyUnit::Sat,
        vec![
            WsCommand::Custom(format!("{}_mint_quote", ehash::PAYMENT_METHOD)),
            WsCommand::ProofState,
        ],
    )))
}

/// What the mint advertises (NUT-06): cdk's info for the builder, less what it does not serve.
fn advertised_info(builder: &MintBuilder) -> MintInfo {
    let method = PaymentMethod::Custom(ehash::PAYMENT_METHOD.to_owned());
    // The ehash method only mints: there is nothing to melt into, so no melt method (NUT-05)
    // and no melt fee return (NUT-08).
    let mut info = builder.current_mint_info();
    info.nuts
        .nut05
        .methods
        .retain(|settings| settings.method != method);
    info.nuts.nut05.disabled = info.nuts.nut05.methods.is_empty();
    // Lightning only pays melts out: sats come in only as payouts (see `lightning::melt_only`).
    info.nuts
        .nut04
        .methods
        .retain(|settings| settings.method == method);
    // Melts return unspent fee reserve as change (NUT-08).
    info.nuts.nut08.supported = !info.nuts.nut05.disabled;
    // NUT-19: cdk-axum caches swap and mint responses; say so, with the TTL the router uses.
    info.nuts.nut19 = Nut19Settings {
        ttl: Some(http::RESPONSE_CACHE_SECS),
        cached_endpoints: http::cached_endpoints(),
    };
    info
}

/// NUT-29: a miner holds one quote per share, so batches are as large as the body limit allows
/// for a worst-case request (see `limits`), never larger than what the mint accepts.
fn max_batch_size(mint: &Mint, config: &MintConfig) -> Result<usize, MintError> {
    let keyset = mint
        .get_active_keysets()
        .get(&CurrencyUnit::custom(ehash::UNIT))
        .copied()
        .ok_or_else(|| MintError::Cdk(cdk::Error::NoActiveKeyset))?;
    let max_batch = limits::BatchWireSize::measure(keyset).max_batch_size(config.max_body_bytes)?;
    tracing::info!(
        max_batch,
        max_body_bytes = config.max_body_bytes,
        "NUT-29 batch size"
    );
    Ok(max_batch)
}

/// A running mint: cdk mint, stream consumer and HTTP API.
pub struct MintServer {
    http_address: SocketAddr,
    mint: Arc<Mint>,
    /// The quote book the consumer writes through.
    book: QuoteBook,
    lightning: Option<Arc<CdkLdkNode>>,
    payouts: lightning::ledger::PayoutLedger,
    metrics: Arc<MintMetrics>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl MintServer {
    pub async fn start(config: MintConfig) -> Result<Self, MintError> {
        let BuiltMint { mint, lightning } = build_mint(&config).await?;
        let metrics = Arc::new(MintMetrics::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let payouts = lightning::ledger::PayoutLedger::new(mint.localstore());
        let mut tasks = Vec::new();

        let mut book = QuoteBook::new(mint.clone());
        if let (Some(node), Some(node_config)) = (&lightning, &config.lightning) {
            // The mint holds the sats: it releases an epoch only against a payout it received.
            book = book.with_custody(payouts.clone());
            let watcher =
                lightning::payouts::PayoutWatcher::new(node.node(), payouts.clone(), node_config)?;
            tasks.push(tokio::spawn(watcher.run(shutdown_rx.clone())));
        }
        book = with_batch_writer(book, &config.database).await;
        // Quotes are pruned by the mint's own writer; without it every quote is kept, and so no
        // create is refused for its age.
        let retention = quotes::Retention::keeping(config.retention.keep_issued_secs)
            .filter(|_| book.has_batch_writer());
        book = book.with_retention(retention);
        if retention.is_some() {
            tasks.push(tokio::spawn(quotes::run_pruner(
                book.clone(),
                config.retention.clone(),
                metrics.clone(),
                shutdown_rx.clone(),
            )));
        }
        let consumer =
            consumer::QuoteConsumer::connect(config.redis.clone(), book.clone(), metrics.clone())
                .await?;
        tasks.push(tokio::spawn(consumer.run(shutdown_rx.clone())));

        let mut app = http::router(book.clone(), metrics.clone(), config.max_body_bytes).await?;
        if let (Some(node), Some(node_config)) = (&lightning, &config.lightning) {
            app = app.merge(lightning::info::route(
                node.node(),
                payouts.clone(),
                node_config.listen_address,
            ));
        }
        let (listener, http_address) = hashpool_service::listen(config.listen_address).await?;
        tasks.push(tokio::spawn(serve::serve_http(
            listener,
            app,
            config.connections,
            std::time::Duration::from_millis(config.header_read_timeout_ms),
            shutdown_rx,
        )));
        tracing::info!(%http_address, "mint serving the cashu API");

        Ok(Self {
            http_address,
            mint,
            book,
            lightning,
            payouts,
            metrics,
            shutdown,
            tasks,
        })
    }

    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http_address)
    }

    pub fn mint(&self) -> &Arc<Mint> {
        &self.mint
    }

    /// The quote book the stream consumer writes through (and which batch writer it uses).
    pub fn quotes(&self) -> &QuoteBook {
        &self.book
    }

    /// The mint's Lightning node, when it has one.
    pub fn lightning(&self) -> Option<&Arc<CdkLdkNode>> {
        self.lightning.as_ref()
    }

    /// Payouts the node received, and the offer they are paid to.
    pub fn payouts(&self) -> &lightning::ledger::PayoutLedger {
        &self.payouts
    }

    pub fn metrics(&self) -> &Arc<MintMetrics> {
        &self.metrics
    }

    /// Stops consuming and serving, then stops the cdk mint.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        if let Err(error) = self.mint.stop().await {
            tracing::warn!(%error, "cdk mint did not stop cleanly");
        }
    }
}
