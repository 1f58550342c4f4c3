//! The payout desk: an authenticated callback says a payout landed, and the pool releases the
//! closed epoch it pays with one `update` naming the epoch's totals (the mint splits it).
//!
//! Each payment releases one epoch and each epoch is released once: the check of both and the
//! update itself are one Redis script, so two callbacks racing cannot both release, and a
//! replayed callback changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::http::StatusCode;
use ehash::callback::{self, CallbackAuthError, PayoutNotice};
use ehash::{EpochRelease, QuoteMessage, UpdateQuote};
use redis::AsyncCommands;
use thiserror::Error;

use crate::epochs::EpochBook;
use crate::publisher::PublisherMetrics;

#[derive(Debug, Error)]
pub enum PayoutError {
    #[error("not authenticated: {0}")]
    Auth(#[from] CallbackAuthError),
    #[error("the body is not a payout notice: {0}")]
    BadBody(#[source] serde_json::Error),
    #[error("epoch {0} is still open: its block has not been found")]
    EpochOpen(u64),
    #[error("there is no epoch {0}")]
    UnknownEpoch(u64),
    #[error("no closed epoch is waiting for a payout")]
    NothingToPay,
    #[error("epoch {epoch} was already paid by payment {by}")]
    EpochPaid { epoch: u64, by: String },
    #[error("payment {payment_id} already paid epoch {epoch}")]
    PaymentUsed { payment_id: String, epoch: String },
    #[error("epoch {0} credited no work")]
    EmptyEpoch(u64),
    #[error("a payout of {0} msat is less than one sat")]
    TooSmall(u64),
    #[error("quote messages are still being published; try again")]
    StillPublishing,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

impl PayoutError {
    pub fn status(&self) -> StatusCode {
        match self {
            PayoutError::Auth(_) => StatusCode::UNAUTHORIZED,
            PayoutError::BadBody(_) | PayoutError::TooSmall(_) => StatusCode::BAD_REQUEST,
            PayoutError::UnknownEpoch(_) => StatusCode::NOT_FOUND,
            PayoutError::EpochOpen(_)
            | PayoutError::NothingToPay
            | PayoutError::EpochPaid { .. }
            | PayoutError::PaymentUsed { .. }
            | PayoutError::EmptyEpoch(_) => StatusCode::CONFLICT,
            PayoutError::StillPublishing | PayoutError::Redis(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable name of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            PayoutError::Auth(_) => "unauthenticated",
            PayoutError::BadBody(_) => "bad-body",
            PayoutError::EpochOpen(_) => "epoch-open",
            PayoutError::UnknownEpoch(_) => "unknown-epoch",
            PayoutError::NothingToPay => "nothing-to-pay",
            PayoutError::EpochPaid { .. } => "epoch-paid",
            PayoutError::PaymentUsed { .. } => "payment-used",
            PayoutError::EmptyEpoch(_) => "empty-epoch",
            PayoutError::TooSmall(_) => "too-small",
            PayoutError::StillPublishing => "still-publishing",
            PayoutError::Redis(_) => "redis-unavailable",
        }
    }
}

/// What a callback did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Released {
    pub epoch: u64,
    /// Sats released (the payout, rounded down to whole sats).
    pub payout: u64,
    /// False when this payment had already released this epoch (a replay).
    pub new: bool,
}

/// The epochs as `GET /epochs` shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EpochsReport {
    pub open: u64,
    pub closed: Vec<ClosedEpochReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClosedEpochReport {
    pub epoch: u64,
    pub block_hash: String,
    pub height: Option<u64>,
    /// The payment that released it; absent while it waits for its payout.
    pub paid_by: Option<String>,
}

/// An epoch as the dashboard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochStatus {
    /// Its block was found (it takes no more shares).
    pub closed: bool,
    /// Work credited in it, in `hash` units, from its totals.
    pub work: Option<u64>,
    /// The payment that released it.
    pub paid_by: Option<String>,
    /// The sats that payment released (the payout rounded down to whole sats).
    pub payout: Option<u64>,
}

/// Checks payment and epoch, then appends the release (and notes the payout beside the epoch's
/// totals): all or nothing.
const RELEASE_SCRIPT: &str = r"
local used = redis.call('GET', KEYS[1])
if used then return {'payment-used', used} end
local paid_by = redis.call('GET', KEYS[2])
if paid_by then return {'epoch-paid', paid_by} end
if redis.call('HGET', KEYS[3], 'work') ~= ARGV[3] or redis.call('HGET', KEYS[3], 'quotes') ~= ARGV[4] then
  return {'totals-changed', ''}
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[3], 'payout', ARGV[7])
redis.call('XADD', KEYS[4], '*', ARGV[5], ARGV[6])
return {'released', ''}
";

pub struct PayoutDesk {
    secret: Vec<u8>,
    epochs: Arc<EpochBook>,
    redis: redis::Client,
    stream: String,
    publisher: Arc<PublisherMetrics>,
}

impl PayoutDesk {
    pub fn new(
        secret: Vec<u8>,
        epochs: Arc<EpochBook>,
        redis: redis::Client,
        stream: String,
        publisher: Arc<PublisherMetrics>,
    ) -> Self {
        Self {
            secret,
            epochs,
            redis,
            stream,
            publisher,
        }
    }

    /// Handles one callback: its two headers and body, at Unix time `now`.
    pub async fn release(
        &self,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &[u8],
        now: u64,
    ) -> Result<Released, PayoutError> {
        callback::verify(&self.secret, timestamp, signature, body, now)?;
        let notice: PayoutNotice = serde_json::from_slice(body).map_err(PayoutError::BadBody)?;
        let payout = notice.amount_msat / 1000;
        if payout == 0 {
            return Err(PayoutError::TooSmall(notice.amount_msat));
        }
        let mut redis = self.redis.get_multiplexed_async_connection().await?;
        let epoch = match notice.epoch {
            Some(epoch) => self.closed_epoch(epoch)?,
            None => match self.released_by(&mut redis, &notice.payment_id).await? {
                // A retry of a payment that released its epoch already (its answer was lost):
                // the same answer, not the next unpaid epoch.
                Some(epoch) => {
                    return Ok(Released {
                        epoch,
                        payout,
                        new: false,
                    })
                }
                None => self.oldest_unpaid(&mut redis).await?,
            },
        };
        // Every create of a closed epoch was queued before it closed: once nothing waits to be
        // published, all of them are in Redis with the epoch's totals.
        if self.publisher.buffered() > 0 {
            return Err(PayoutError::StillPublishing);
        }
        let release = self
            .epoch_release(&mut redis, epoch, payout, notice.payment_id)
            .await?;
        self.append(&mut redis, release).await
    }

    /// The release of `epoch` for `payout`, with the totals its creates added up to.
    async fn epoch_release(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        epoch: u64,
        payout: u64,
        payment_id: String,
    ) -> Result<EpochRelease, PayoutError> {
        let totals: HashMap<String, u64> = redis
            .hgetall(ehash::epoch_totals_key(&self.stream, epoch))
            .await?;
        let (total_work, quotes) = (
            totals.get("work").copied().unwrap_or(0),
            totals.get("quotes").copied().unwrap_or(0),
        );
        if total_work == 0 || quotes == 0 {
            return Err(PayoutError::EmptyEpoch(epoch));
        }
        Ok(EpochRelease {
            epoch,
            payout,
            total_work,
            quotes,
            payment_id,
        })
    }

    /// Appends `release` to the stream unless its payment or its epoch was used already, or its
    /// totals changed since they were read: all in one script.
    async fn append(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        release: EpochRelease,
    ) -> Result<Released, PayoutError> {
        let (epoch, payout, work, quotes) = (
            release.epoch,
            release.payout,
            release.total_work,
            release.quotes,
        );
        let payment_id = release.payment_id.clone();
        let update = QuoteMessage::Update(UpdateQuote::epoch_paid(release));
        // A callback is rare: EVAL with the script's text, no script cache to manage.
        let outcome: Vec<String> = redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(4)
            .arg(self.payment_key(&payment_id))
            .arg(self.paid_by_key(epoch))
            .arg(ehash::epoch_totals_key(&self.stream, epoch))
            .arg(&self.stream)
            .arg(&payment_id)
            .arg(epoch)
            .arg(work)
            .arg(quotes)
            .arg(ehash::STREAM_FIELD)
            .arg(update.to_json())
            .arg(payout)
            .query_async(redis)
            .await?;
        let detail = outcome.get(1).cloned().unwrap_or_default();
        let released = |new| Released { epoch, payout, new };
        match outcome.first().map(String::as_str) {
            Some("released") => {
                tracing::info!(epoch, payout, work, quotes, %payment_id, "payout epoch released");
                Ok(released(true))
            }
            Some("payment-used") if detail == epoch.to_string() => Ok(released(false)),
            Some("payment-used") => Err(PayoutError::PaymentUsed {
                payment_id,
                epoch: detail,
            }),
            Some("epoch-paid") => Err(PayoutError::EpochPaid { epoch, by: detail }),
            _ => Err(PayoutError::StillPublishing),
        }
    }

    fn closed_epoch(&self, epoch: u64) -> Result<u64, PayoutError> {
        if epoch == self.epochs.current() {
            return Err(PayoutError::EpochOpen(epoch));
        }
        if self
            .epochs
            .closed()
            .iter()
            .any(|closed| closed.epoch == epoch)
        {
            Ok(epoch)
        } else {
            Err(PayoutError::UnknownEpoch(epoch))
        }
    }

    async fn oldest_unpaid(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
    ) -> Result<u64, PayoutError> {
        for closed in self.epochs.closed() {
            let paid: bool = redis.exists(self.paid_by_key(closed.epoch)).await?;
            if !paid {
                return Ok(closed.epoch);
            }
        }
        Err(PayoutError::NothingToPay)
    }

    /// The open epoch and every closed one with the payment that paid it, if any.
    pub async fn epochs(&self) -> Result<EpochsReport, PayoutError> {
        let mut redis = self.redis.get_multiplexed_async_connection().await?;
        let mut closed = Vec::new();
        for epoch in self.epochs.closed() {
            let paid_by: Option<String> = redis.get(self.paid_by_key(epoch.epoch)).await?;
            closed.push(ClosedEpochReport {
                epoch: epoch.epoch,
                block_hash: epoch.block_hash.to_string(),
                height: epoch.height,
                paid_by,
            });
        }
        Ok(EpochsReport {
            open: self.epochs.current(),
            closed,
        })
    }

    /// What the dashboard shows of each of `epochs`: closed or open, and for a closed one its
    /// work, and the payment and payout (sats) that released it. Two reads per epoch, pipelined.
    pub async fn statuses(
        &self,
        epochs: &[u64],
    ) -> Result<BTreeMap<u64, EpochStatus>, PayoutError> {
        let closed: BTreeSet<u64> = self.epochs.closed().iter().map(|c| c.epoch).collect();
        let mut redis = self.redis.get_multiplexed_async_connection().await?;
        let mut pipe = redis::pipe();
        for &epoch in epochs {
            pipe.get(self.paid_by_key(epoch))
                .hgetall(ehash::epoch_totals_key(&self.stream, epoch));
        }
        let replies: Vec<(Option<String>, HashMap<String, u64>)> =
            pipe.query_async(&mut redis).await?;
        Ok(epochs
            .iter()
            .zip(replies)
            .map(|(&epoch, (paid_by, totals))| {
                let status = EpochStatus {
                    closed: closed.contains(&epoch),
                    work: totals.get("work").copied(),
                    payout: totals.get("payout").copied(),
                    paid_by,
                };
                (epoch, status)
            })
            .collect())
    }

    /// The epoch `payment_id` released, if it released one.
    async fn released_by(
        &self,
        redis: &mut redis::aio::MultiplexedConnection,
        payment_id: &str,
    ) -> Result<Option<u64>, PayoutError> {
        let epoch: Option<u64> = redis.get(self.payment_key(payment_id)).await?;
        Ok(epoch)
    }

    fn payment_key(&self, payment_id: &str) -> String {
        format!("{}:payout-payment:{payment_id}", self.stream)
    }

    fn paid_by_key(&self, epoch: u64) -> String {
        format!("{}:epoch:{epoch}:paid-by", self.stream)
    }
}
