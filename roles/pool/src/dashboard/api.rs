//! `/api/v1`: the dashboard's read-only JSON API, and its OpenAPI document at
//! `/api/v1/openapi.json`. Nothing here lets anyone mint: it shows work and quote counts per
//! public key, as public-pool shows them per address.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ehash::{LockingPubkey, ReleasePolicy};
use serde::Serialize;
use stratum_apps::stratum_core::bitcoin::{CompactTarget, Target};
use tokio::sync::watch;
use utoipa::{OpenApi, ToSchema};

use super::book::{Activity, KeyActivity, Now, Tally};
use super::series::BUCKET_SECS;
use super::{Dashboard, FoundBlock};
use crate::metrics::PoolMetrics;
use crate::payout::{EpochStatus, PayoutDesk};
use crate::publisher::PublisherMetrics;
use crate::work::Work;

/// How long the API waits for Redis to describe the mint's consumer group.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// What the API reads: the dashboard, the pool's counters and the current work.
#[derive(Clone)]
pub struct ApiContext {
    pub dashboard: Arc<Dashboard>,
    pub metrics: Arc<PoolMetrics>,
    pub quotes: Arc<PublisherMetrics>,
    pub work: watch::Receiver<Option<Work>>,
    pub redis: redis::Client,
    pub stream: String,
    pub release_policy: ReleasePolicy,
    pub connect: Connect,
    pub payout: Option<Arc<PayoutDesk>>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "hashpool pool API",
        description = "Read-only statistics of a hashpool pool: the pool, and each miner's public key and workers."
    ),
    paths(pool, pool_hashrate, miner, miner_hashrate),
    components(schemas(ApiError))
)]
struct ApiDoc;

/// The OpenAPI document of this API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn router(context: ApiContext) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(openapi()) }))
        .route("/api/v1/pool", get(pool))
        .route("/api/v1/pool/hashrate", get(pool_hashrate))
        .route("/api/v1/miners/{pubkey}", get(miner))
        .route("/api/v1/miners/{pubkey}/hashrate", get(miner_hashrate))
        .with_state(context)
        .merge(super::web::router())
}

/// An error: a code a program can match and a sentence for people.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiError {
    /// `bad-pubkey` (400) or `unknown-miner` (404).
    pub error: &'static str,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.error {
            "unknown-miner" => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, Json(self)).into_response()
    }
}

/// Hashes per second over the last 10 minutes, hour and day (or since the first share, when
/// that is sooner).
#[derive(Debug, Serialize, ToSchema)]
pub struct Hashrates {
    pub m10: f64,
    pub h1: f64,
    pub h24: f64,
}

impl Hashrates {
    fn of(activity: &Activity, now: Now) -> Self {
        Self {
            m10: activity.hashrate_10m(now),
            h1: activity.hashrate_over(3600, now.unix),
            h24: activity.hashrate_over(24 * 3600, now.unix),
        }
    }
}

/// Since the pool's history began (kept across restarts, like the hashrate history).
#[derive(Debug, Serialize, ToSchema)]
pub struct Shares {
    pub accepted: u64,
    /// Rejected shares by Sv2 error code.
    pub rejected: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Network {
    /// Height of the block being mined.
    pub height: Option<u64>,
    pub difficulty: Option<f64>,
    /// At the pool's 10-minute hashrate; null while it is zero.
    pub expected_seconds_to_block: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuotePublishing {
    /// Quote messages appended to the stream.
    pub published: u64,
    /// Waiting in memory for Redis.
    pub buffered: u64,
    /// Lost because the buffer was full.
    pub dropped: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RedisHealth {
    pub up: bool,
}

/// The mint's consumer group on the quote stream, as Redis reports it: the mint's health seen
/// without calling the mint.
#[derive(Debug, Serialize, ToSchema)]
pub struct MintConsumers {
    pub group: String,
    /// Null when Redis did not answer or the group does not exist yet.
    pub consumers: Option<u64>,
    /// Messages delivered to the mint and not yet acknowledged.
    pub pending: Option<u64>,
    /// Messages not yet delivered to the mint.
    pub lag: Option<u64>,
}

/// What a miner needs to point a device at the pool.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Connect {
    /// Stratum V2 address (host:port).
    pub sv2_address: String,
    /// The pool's Noise authority public key, base58check, as Sv2 miners pin it.
    pub authority_public_key: String,
    /// Stratum V1 URL of the translator, for Bitaxes and other Sv1 devices.
    pub sv1_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PoolOverview {
    pub now: u64,
    pub started_at: u64,
    /// `ehash` or `payout-epoch`.
    pub release_policy: String,
    /// The unit quotes are paid in: `hash` or `sat`.
    pub unit: String,
    pub hashrate: Hashrates,
    /// Public keys with an open channel.
    pub miners: u64,
    /// Workers with an open channel.
    pub workers: u64,
    pub connections: u64,
    pub channels: u64,
    pub shares: Shares,
    /// Work credited since the pool's history began, in units of `hash` (2^12 expected hashes).
    pub work_credited: u64,
    /// Newest first, at most 50.
    pub blocks: Vec<FoundBlock>,
    pub network: Network,
    pub quotes: QuotePublishing,
    pub redis: RedisHealth,
    pub mint: MintConsumers,
    pub connect: Connect,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HashratePoint {
    /// Start of the 10-minute bucket, Unix seconds.
    pub time: u64,
    /// Hashes per second over the bucket (over its elapsed part for the current one).
    pub hashrate: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HashrateSeries {
    pub bucket_seconds: u64,
    /// Oldest first; buckets without work are absent.
    pub points: Vec<HashratePoint>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinerHashrate {
    pub bucket_seconds: u64,
    pub points: Vec<HashratePoint>,
    /// Each worker's series, by worker name (`""` for none).
    pub workers: BTreeMap<String, Vec<HashratePoint>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QuoteTally {
    pub count: u64,
    /// Work credited, in units of `hash`. Under payout epochs a released epoch's quotes are
    /// paid in sats, split pro-rata to this work by the mint.
    pub work: u64,
}

impl From<Tally> for QuoteTally {
    fn from(tally: Tally) -> Self {
        Self {
            count: tally.quotes,
            work: tally.work,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinerQuotes {
    /// PAID at the mint: the key's wallet can mint them (whether it already has, only the
    /// wallet and the mint know).
    pub released: QuoteTally,
    /// Waiting for their epoch's payout (payout epochs only).
    pub pending: QuoteTally,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinerEpoch {
    pub epoch: u64,
    pub quotes: u64,
    pub work: u64,
    /// `open`, `closed` (its block found, waiting for the payout) or `paid`.
    pub state: String,
    /// The whole epoch's work, all miners', once Redis has its totals.
    pub epoch_work: Option<u64>,
    /// Sats the epoch's payout released, once paid.
    pub payout: Option<u64>,
    /// This key's part of the payout, pro-rata to its work: the mint pays each quote its exact
    /// share rounded (largest remainder), so within a sat per quote of this.
    pub estimated_sats: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Worker {
    /// `""` when the miner's identity named no worker.
    pub name: String,
    pub connected: bool,
    pub channels: u32,
    pub connected_since: Option<u64>,
    pub hashrate_m10: f64,
    pub shares: u64,
    pub last_share: Option<u64>,
    pub best_share_difficulty: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MinerDetail {
    pub locking_key: String,
    pub hashrate: Hashrates,
    pub shares: u64,
    /// Work credited, in units of `hash`.
    pub work_credited: u64,
    /// `work_credited * 2^12`.
    #[schema(value_type = u64)]
    pub credited_hashes: u128,
    /// Expected hashes the accepted shares prove, from their targets.
    #[schema(value_type = u64)]
    pub proven_hashes: u128,
    pub best_share_difficulty: f64,
    pub last_share: Option<u64>,
    pub quotes: MinerQuotes,
    pub workers: Vec<Worker>,
    /// Payout epochs only: the key's work in each recent epoch, oldest first.
    pub epochs: Vec<MinerEpoch>,
}

/// Pool overview.
#[utoipa::path(get, path = "/api/v1/pool", responses((status = 200, body = PoolOverview)))]
async fn pool(State(api): State<ApiContext>) -> Json<PoolOverview> {
    let now = Now::current();
    let (hashrate, miners, workers, totals) = api.dashboard.read(|book| {
        let open: Vec<&KeyActivity> = book
            .keys
            .values()
            .filter(|key| key.open_channels() > 0)
            .collect();
        let workers = open
            .iter()
            .flat_map(|key| key.workers.values())
            .filter(|worker| worker.open_channels > 0)
            .count();
        (
            Hashrates::of(&book.pool, now),
            open.len() as u64,
            workers as u64,
            book.pool.totals.clone(),
        )
    });
    let network = network(&api.work.borrow(), hashrate.m10);
    Json(PoolOverview {
        now: now.unix,
        started_at: api.dashboard.started_at(),
        release_policy: policy_name(api.release_policy).to_owned(),
        unit: api.release_policy.quote_unit().to_owned(),
        hashrate,
        miners,
        workers,
        connections: api.metrics.connections.get(),
        channels: api.metrics.channels.get(),
        shares: Shares {
            accepted: totals.shares,
            rejected: totals.rejected,
        },
        work_credited: totals.work,
        blocks: api.dashboard.blocks(),
        network,
        quotes: QuotePublishing {
            published: api.quotes.published.load(Ordering::Relaxed),
            buffered: api.quotes.buffered(),
            dropped: api.quotes.overflowed.load(Ordering::Relaxed),
        },
        redis: RedisHealth {
            up: api.quotes.redis_up.load(Ordering::Relaxed),
        },
        mint: mint_consumers(&api).await,
        connect: api.connect.clone(),
    })
}

fn policy_name(policy: ReleasePolicy) -> &'static str {
    match policy {
        ReleasePolicy::Ehash => "ehash",
        ReleasePolicy::PayoutEpoch => "payout-epoch",
    }
}

fn network(work: &Option<Work>, pool_hashrate: f64) -> Network {
    let Some(work) = work else {
        return Network {
            height: None,
            difficulty: None,
            expected_seconds_to_block: None,
        };
    };
    let bits = match work {
        Work::Solo(template) => template.bits,
        Work::Upstream(job) => job.nbits,
    };
    let difficulty = Target::from_compact(CompactTarget::from_consensus(bits)).difficulty_float();
    // A difficulty-1 block takes 2^32 hashes on average.
    let expected = (pool_hashrate > 0.0).then(|| difficulty * 4_294_967_296.0 / pool_hashrate);
    Network {
        height: Some(work.height()),
        difficulty: Some(difficulty),
        expected_seconds_to_block: expected,
    }
}

async fn mint_consumers(api: &ApiContext) -> MintConsumers {
    let group = ehash::MINT_CONSUMER_GROUP.to_owned();
    let info = tokio::time::timeout(REDIS_TIMEOUT, async {
        let mut redis = api.redis.get_multiplexed_async_connection().await?;
        redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&api.stream)
            .query_async::<redis::streams::StreamInfoGroupsReply>(&mut redis)
            .await
    })
    .await;
    let found = match info {
        Ok(Ok(reply)) => reply.groups.into_iter().find(|found| found.name == group),
        _ => None,
    };
    MintConsumers {
        consumers: found.as_ref().map(|found| found.consumers as u64),
        pending: found.as_ref().map(|found| found.pending as u64),
        lag: found
            .as_ref()
            .and_then(|found| found.lag)
            .map(|lag| lag as u64),
        group,
    }
}

fn points(activity: &Activity, now: u64) -> Vec<HashratePoint> {
    activity
        .bucket_rates(now)
        .into_iter()
        .map(|(time, hashrate)| HashratePoint { time, hashrate })
        .collect()
}

/// The pool's hashrate in 10-minute buckets over the last day.
#[utoipa::path(get, path = "/api/v1/pool/hashrate", responses((status = 200, body = HashrateSeries)))]
async fn pool_hashrate(State(api): State<ApiContext>) -> Json<HashrateSeries> {
    let now = hashpool_service::unix_now();
    Json(HashrateSeries {
        bucket_seconds: BUCKET_SECS,
        points: api.dashboard.read(|book| points(&book.pool, now)),
    })
}

/// The key a path names, in its canonical form.
fn locking_key(pubkey: &str) -> Result<String, ApiError> {
    pubkey
        .parse::<LockingPubkey>()
        .map(|key| key.to_string())
        .map_err(|error| ApiError {
            error: "bad-pubkey",
            detail: format!("{pubkey:?} is not a compressed secp256k1 public key in hex: {error}"),
        })
}

fn unknown(key: &str) -> ApiError {
    ApiError {
        error: "unknown-miner",
        detail: format!("no share from {key} in the last week"),
    }
}

/// A miner: its workers, work, quotes and (under payout epochs) epochs.
#[utoipa::path(
    get,
    path = "/api/v1/miners/{pubkey}",
    params(("pubkey" = String, Path, description = "The miner's locking public key, 66 hex characters")),
    responses(
        (status = 200, body = MinerDetail),
        (status = 400, body = ApiError, description = "Not a public key"),
        (status = 404, body = ApiError, description = "No share or channel from this key in the last week")
    )
)]
async fn miner(
    State(api): State<ApiContext>,
    Path(pubkey): Path<String>,
) -> Result<Json<MinerDetail>, ApiError> {
    let key = locking_key(&pubkey)?;
    let epoch_statuses = match api.release_policy {
        ReleasePolicy::Ehash => None,
        ReleasePolicy::PayoutEpoch => Some(epoch_statuses(&api, &key).await),
    };
    let now = Now::current();
    let detail = api.dashboard.read(|book| {
        let entry = book.keys.get(&key)?;
        let totals = &entry.activity.totals;
        let workers = entry
            .workers
            .iter()
            .map(|(name, worker)| Worker {
                name: name.clone(),
                connected: worker.open_channels > 0,
                channels: worker.open_channels,
                connected_since: worker.connected_since,
                hashrate_m10: worker.activity.hashrate_10m(now),
                shares: worker.activity.totals.shares,
                last_share: worker.activity.totals.last_share,
                best_share_difficulty: worker.activity.totals.best_difficulty,
            })
            .collect();
        let (quotes, epochs) = match &epoch_statuses {
            None => (
                MinerQuotes {
                    released: QuoteTally {
                        count: totals.shares,
                        work: totals.work,
                    },
                    pending: QuoteTally { count: 0, work: 0 },
                },
                Vec::new(),
            ),
            Some(statuses) => epoch_quotes(entry, statuses),
        };
        Some(MinerDetail {
            locking_key: key.clone(),
            hashrate: Hashrates::of(&entry.activity, now),
            shares: totals.shares,
            work_credited: totals.work,
            credited_hashes: u128::from(totals.work) << ehash::HASHES_PER_UNIT_LOG2,
            proven_hashes: totals.proven_hashes,
            best_share_difficulty: totals.best_difficulty,
            last_share: totals.last_share,
            quotes,
            workers,
            epochs,
        })
    });
    detail.map(Json).ok_or_else(|| unknown(&key))
}

/// The payout desk's view of the epochs `key` has work in; empty when no payout callback is
/// configured (then nothing is ever released) or Redis does not answer (then each epoch shows
/// as open, its quotes as pending).
async fn epoch_statuses(api: &ApiContext, key: &str) -> BTreeMap<u64, EpochStatus> {
    let Some(desk) = &api.payout else {
        return BTreeMap::new();
    };
    let epochs: Vec<u64> = api.dashboard.read(|book| {
        book.keys
            .get(key)
            .map(|entry| entry.epochs.keys().copied().collect())
            .unwrap_or_default()
    });
    let statuses = tokio::time::timeout(REDIS_TIMEOUT, desk.statuses(&epochs)).await;
    match statuses {
        Ok(Ok(statuses)) => statuses,
        Ok(Err(error)) => {
            tracing::debug!(%error, "cannot read the epochs' payouts for the dashboard");
            BTreeMap::new()
        }
        Err(_) => BTreeMap::new(),
    }
}

/// Splits a key's epochs into released (paid) and pending quotes, each epoch with its payout
/// and the key's part of it.
fn epoch_quotes(
    entry: &KeyActivity,
    statuses: &BTreeMap<u64, EpochStatus>,
) -> (MinerQuotes, Vec<MinerEpoch>) {
    let mut released = Tally::default();
    let mut pending = Tally::default();
    let epochs = entry
        .epochs
        .iter()
        .map(|(&epoch, tally)| {
            let status = statuses.get(&epoch);
            let paid = status.and_then(|status| status.paid_by.as_ref()).is_some();
            let state = match status {
                _ if paid => "paid",
                Some(status) if status.closed => "closed",
                _ => "open",
            };
            let sum = if paid { &mut released } else { &mut pending };
            sum.quotes += tally.quotes;
            sum.work += tally.work;
            let payout = status.and_then(|status| status.payout);
            let epoch_work = status.and_then(|status| status.work);
            MinerEpoch {
                epoch,
                quotes: tally.quotes,
                work: tally.work,
                state: state.to_owned(),
                epoch_work,
                payout,
                estimated_sats: match (payout, epoch_work) {
                    (Some(payout), Some(total)) if total > 0 => Some(
                        (u128::from(payout) * u128::from(tally.work) / u128::from(total)) as u64,
                    ),
                    _ => None,
                },
            }
        })
        .collect();
    (
        MinerQuotes {
            released: released.into(),
            pending: pending.into(),
        },
        epochs,
    )
}

/// A miner's hashrate in 10-minute buckets over the last day, and each worker's.
#[utoipa::path(
    get,
    path = "/api/v1/miners/{pubkey}/hashrate",
    params(("pubkey" = String, Path, description = "The miner's locking public key, 66 hex characters")),
    responses(
        (status = 200, body = MinerHashrate),
        (status = 400, body = ApiError, description = "Not a public key"),
        (status = 404, body = ApiError, description = "No share or channel from this key in the last week")
    )
)]
async fn miner_hashrate(
    State(api): State<ApiContext>,
    Path(pubkey): Path<String>,
) -> Result<Json<MinerHashrate>, ApiError> {
    let key = locking_key(&pubkey)?;
    let now = hashpool_service::unix_now();
    let series = api.dashboard.read(|book| {
        let entry = book.keys.get(&key)?;
        Some(MinerHashrate {
            bucket_seconds: BUCKET_SECS,
            points: points(&entry.activity, now),
            workers: entry
                .workers
                .iter()
                .map(|(name, worker)| (name.clone(), points(&worker.activity, now)))
                .collect(),
        })
    });
    series.map(Json).ok_or_else(|| unknown(&key))
}
