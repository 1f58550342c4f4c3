//! Reads the pool's quote stream in consumer group `mint` and applies each message to the store.
//!
//! Delivery is at least once and every action is idempotent, so the rules are simple: an entry is
//! acknowledged only after its effect is committed; entries another consumer left pending (it
//! died) are claimed after `claim_idle_ms`; a message that can never be applied goes to the
//! dead-letter stream with its reason and is acknowledged; store trouble, or an update that
//! overtook its create, leaves the entry pending and it is tried again. Entries every group has
//! acknowledged are trimmed from the stream (see [`crate::trim`]).
//!
//! What one read returns is applied in as few store transactions as it can be: each run of
//! creates and ehash updates as one batch ([`QuoteBook::apply_batch`]), an epoch release on its
//! own. A batch that cannot commit is applied again one message at a time. Behind (a full read),
//! the consumer reads what waits while the store writes, and applies it next, together.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ehash::QuoteMessage;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimOptions, StreamId, StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use thiserror::Error;
use tokio::sync::watch;

use crate::config::ConsumerConfig;
use crate::metrics::MintMetrics;
use crate::quotes::{Applied, Batchable, Created, QuoteBook, QuoteBookError};

/// How long an update may wait for its create before it is dead-lettered.
const UPDATE_WAIT_LIMIT: Duration = Duration::from_secs(600);

/// How often entries left pending by a failed attempt are tried again.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Pause after a Redis error before the next attempt, doubling up to the cap.
const REDIS_BACKOFF_START: Duration = Duration::from_millis(100);
const REDIS_BACKOFF_CAP: Duration = Duration::from_secs(5);

/// While a backlog's batch is written, up to this many reads' worth of what waits behind it is
/// read, to go to the store as the next batch. A transaction's cost is mostly the index pages it
/// rewrites (cdk's quote indexes are keyed by random ids), and those grow slower than its
/// quotes: behind, the mint writes fewer, larger transactions; caught up, each read is applied
/// as it comes.
const BACKLOG_READS: usize = 8;

/// When the consumer does what, between rounds.
struct Schedule {
    /// Whether the consumer group is known to exist (Redis may lose it).
    group_ready: bool,
    /// Our own pending entries (what this consumer read before a crash or restart) are read
    /// first, once.
    read_own_pending_done: bool,
    next_claim: Instant,
    next_retry: Instant,
}

impl Schedule {
    /// Whether entries left pending for a retry are due to be tried again.
    fn retry_due(&self, waiting: &HashMap<String, Instant>) -> bool {
        !waiting.is_empty() && Instant::now() >= self.next_retry
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            group_ready: false,
            read_own_pending_done: false,
            next_claim: Instant::now(),
            next_retry: Instant::now(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConsumerError {
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
}

/// What became of one stream entry.
enum Outcome {
    /// Applied (or already applied): acknowledge.
    Done,
    /// Can never be applied: dead-letter with this reason, then acknowledge.
    Reject(String),
    /// Not now: leave pending and try again.
    Retry(QuoteBookError),
}

pub struct QuoteConsumer {
    config: ConsumerConfig,
    consumer_name: String,
    dead_letter_stream: String,
    redis: ConnectionManager,
    /// Reads the stream, on a handle of `redis`.
    reader: StreamReader,
    book: QuoteBook,
    metrics: Arc<MintMetrics>,
    /// Entries left pending for a retry, by stream id, with when they were first tried.
    waiting: HashMap<String, Instant>,
}

impl QuoteConsumer {
    pub async fn connect(
        config: ConsumerConfig,
        book: QuoteBook,
        metrics: Arc<MintMetrics>,
    ) -> Result<Self, ConsumerError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| ConsumerError::Url {
                url: config.url.clone(),
                source,
            })?;
        // XREADGROUP blocks server-side for block_ms: the response timeout must outlast it.
        let manager_config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(
                Duration::from_millis(config.block_ms) + Duration::from_secs(5),
            ))
            .set_connection_timeout(Some(Duration::from_secs(2)));
        let redis = loop {
            match ConnectionManager::new_with_config(client.clone(), manager_config.clone()).await {
                Ok(redis) => break redis,
                Err(error) => {
                    tracing::warn!(%error, url = %config.url, "Redis is unreachable; retrying");
                    tokio::time::sleep(REDIS_BACKOFF_CAP).await;
                }
            }
        };
        let consumer_name = config
            .consumer_name
            .clone()
            .unwrap_or_else(default_consumer_name);
        let reader = StreamReader {
            redis: redis.clone(),
            stream: config.stream.clone(),
            group: config.group.clone(),
            consumer_name: consumer_name.clone(),
            batch_size: config.batch_size,
        };
        Ok(Self {
            dead_letter_stream: ehash::dead_letter_stream(&config.stream),
            consumer_name,
            config,
            redis,
            reader,
            book,
            metrics,
            waiting: HashMap::new(),
        })
    }

    pub fn consumer_name(&self) -> &str {
        &self.consumer_name
    }

    /// Consumes until `shutdown` turns true. Redis outages are waited out, never fatal.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        tracing::info!(
            stream = %self.config.stream,
            group = %self.config.group,
            consumer = %self.consumer_name,
            "consuming quote messages"
        );
        let mut backoff = REDIS_BACKOFF_START;
        let mut schedule = Schedule::default();
        while !*shutdown.borrow() {
            let step = self.step(&mut schedule);
            let result = tokio::select! {
                result = step => result,
                _ = shutdown.changed() => break,
            };
            match result {
                Ok(()) => backoff = REDIS_BACKOFF_START,
                Err(error) => {
                    self.metrics.redis_errors.inc();
                    tracing::warn!(%error, retry_in = ?backoff, "Redis error while consuming");
                    if error.code() == Some("NOGROUP") {
                        schedule.group_ready = false;
                    }
                    // What was read and not yet acknowledged (a read ahead, a batch whose
                    // acknowledgement failed) is still ours: it is read again first.
                    schedule.read_own_pending_done = false;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => break,
                    }
                    backoff = (backoff * 2).min(REDIS_BACKOFF_CAP);
                }
            }
        }
        tracing::info!(consumer = %self.consumer_name, "quote consumer stopped");
    }

    /// One round: the group made, abandoned entries claimed when due, our own pending entries
    /// (first, or when some wait for a retry), then whatever is new.
    async fn step(&mut self, schedule: &mut Schedule) -> redis::RedisResult<()> {
        if !schedule.group_ready {
            self.ensure_group().await?;
            schedule.group_ready = true;
        }
        if Instant::now() >= schedule.next_claim {
            self.claim_abandoned().await?;
            self.measure_lag().await?;
            let trimmed =
                crate::trim::trim_acknowledged(&mut self.redis, &self.config.stream).await?;
            self.metrics.stream_trimmed.inc_by(trimmed);
            schedule.next_claim = Instant::now()
                + Duration::from_millis(self.config.claim_idle_ms / 2).max(RETRY_INTERVAL);
        }
        if !schedule.read_own_pending_done || schedule.retry_due(&self.waiting) {
            self.read_own_pending().await?;
            schedule.read_own_pending_done = true;
            schedule.next_retry = Instant::now() + RETRY_INTERVAL;
        }
        let block = if self.waiting.is_empty() {
            self.config.block_ms
        } else {
            (RETRY_INTERVAL.as_millis() as u64).min(self.config.block_ms)
        };
        let entries = self.read(">", Some(block)).await?;
        let mut read = Read::decode(entries);
        // A full read means a backlog: while it is applied, what waits behind it is read and
        // decoded, and applied next as one batch (see `BACKLOG_READS`). The read-ahead does not
        // wait for entries (a blocked read would hold up the acknowledgements sharing its
        // connection), and stops when claims or retries are due.
        while read.entries.len() >= self.config.batch_size
            && Instant::now() < schedule.next_claim
            && !schedule.retry_due(&self.waiting)
        {
            let mut reader = self.reader.clone();
            let read_ahead =
                async move { reader.read_backlog(BACKLOG_READS).await.map(Read::decode) };
            let (applied, next) = tokio::join!(self.apply_read(read), read_ahead);
            applied?;
            read = next?;
        }
        self.apply_read(read).await
    }

    async fn ensure_group(&mut self) -> redis::RedisResult<()> {
        // From id 0: messages the pool sent before any mint ever ran are consumed too.
        let created: redis::RedisResult<()> = self
            .redis
            .xgroup_create_mkstream(&self.config.stream, &self.config.group, "0")
            .await;
        match created {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Records how far the group is behind the stream, and how much is read but unacknowledged.
    async fn measure_lag(&mut self) -> redis::RedisResult<()> {
        let groups: redis::streams::StreamInfoGroupsReply =
            self.redis.xinfo_groups(&self.config.stream).await?;
        if let Some(group) = groups
            .groups
            .iter()
            .find(|group| group.name == self.config.group)
        {
            self.metrics.stream_lag.set(group.lag.unwrap_or(0) as u64);
            self.metrics.stream_pending.set(group.pending as u64);
        }
        Ok(())
    }

    /// Takes over entries that another consumer read but never acknowledged.
    async fn claim_abandoned(&mut self) -> redis::RedisResult<()> {
        let mut start = "0-0".to_owned();
        loop {
            let reply: redis::streams::StreamAutoClaimReply = self
                .redis
                .xautoclaim_options(
                    &self.config.stream,
                    &self.config.group,
                    &self.consumer_name,
                    self.config.claim_idle_ms,
                    &start,
                    StreamAutoClaimOptions::default().count(self.config.batch_size),
                )
                .await?;
            if !reply.claimed.is_empty() {
                tracing::info!(
                    count = reply.claimed.len(),
                    "claimed entries left pending by another consumer"
                );
                self.metrics.claimed.inc_by(reply.claimed.len() as u64);
                self.process(reply.claimed).await?;
            }
            if reply.next_stream_id == "0-0" {
                return Ok(());
            }
            start = reply.next_stream_id;
        }
    }

    async fn read(
        &mut self,
        from: &str,
        block_ms: Option<u64>,
    ) -> redis::RedisResult<Vec<StreamId>> {
        self.reader.read(from, block_ms).await
    }

    /// Applies the entries delivered to this consumer and not acknowledged, from the oldest, a
    /// read at a time: after a restart or a Redis error, and when some wait for a retry.
    async fn read_own_pending(&mut self) -> redis::RedisResult<()> {
        let mut after = "0".to_owned();
        loop {
            let entries = self.read(&after, None).await?;
            let full = entries.len() >= self.config.batch_size;
            let Some(last) = entries.last() else {
                return Ok(());
            };
            after = last.id.clone();
            self.process(entries).await?;
            if !full {
                return Ok(());
            }
        }
    }

    async fn process(&mut self, entries: Vec<StreamId>) -> redis::RedisResult<()> {
        self.apply_read(Read::decode(entries)).await
    }

    /// Applies what a read returned, then acknowledges, dead-letters or leaves pending each entry.
    async fn apply_read(&mut self, read: Read) -> redis::RedisResult<()> {
        let Read { entries, messages } = read;
        let outcomes = self.apply_all(&messages).await;
        let mut done = Vec::with_capacity(entries.len());
        for (entry, outcome) in entries.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Done => {
                    self.waiting.remove(&entry.id);
                    done.push(entry.id);
                }
                Outcome::Reject(reason) => {
                    self.dead_letter(&entry, &reason).await?;
                    self.waiting.remove(&entry.id);
                }
                Outcome::Retry(error) => {
                    let first_try = *self
                        .waiting
                        .entry(entry.id.clone())
                        .or_insert_with(Instant::now);
                    if error.awaits_creates() && first_try.elapsed() > UPDATE_WAIT_LIMIT {
                        let reason =
                            format!("{error} after waiting {UPDATE_WAIT_LIMIT:?} for its create");
                        self.dead_letter(&entry, &reason).await?;
                        self.waiting.remove(&entry.id);
                    } else {
                        self.metrics.retries.inc();
                        tracing::debug!(entry = %entry.id, %error, "left pending to retry");
                    }
                }
            }
        }
        if !done.is_empty() {
            let _: usize = self
                .redis
                .xack(&self.config.stream, &self.config.group, &done)
                .await?;
        }
        Ok(())
    }

    /// What became of each message, in order. Runs of creates and ehash updates go to the store
    /// as one transaction each; an epoch release is applied on its own, after what precedes it.
    async fn apply_all(&self, messages: &[Result<QuoteMessage, String>]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = messages.iter().map(|_| None).collect();
        let mut run: Vec<(usize, &QuoteMessage, Batchable<'_>)> = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let message = match message {
                Ok(message) => message,
                Err(reason) => {
                    outcomes[index] = Some(Outcome::Reject(reason.clone()));
                    continue;
                }
            };
            self.metrics.messages.inc();
            match Batchable::of(message) {
                Some(batchable) => run.push((index, message, batchable)),
                None => {
                    self.apply_run(&mut run, &mut outcomes).await;
                    outcomes[index] = Some(self.apply_one(message).await);
                }
            }
        }
        self.apply_run(&mut run, &mut outcomes).await;
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every message has an outcome"))
            .collect()
    }

    /// Applies `run` in one store transaction, or one message at a time if that fails (another
    /// worker stored one of its quotes meanwhile, or the store is in trouble), and empties it.
    async fn apply_run(
        &self,
        run: &mut Vec<(usize, &QuoteMessage, Batchable<'_>)>,
        outcomes: &mut [Option<Outcome>],
    ) {
        if run.is_empty() {
            return;
        }
        let messages: Vec<Batchable<'_>> = run.iter().map(|&(_, _, batchable)| batchable).collect();
        match self.book.apply_batch(&messages).await {
            Ok(results) => {
                self.metrics.batches.inc();
                for (&(index, _, _), result) in run.iter().zip(results) {
                    outcomes[index] = Some(self.outcome(result));
                }
            }
            Err(error) => {
                self.metrics.batch_fallbacks.inc();
                tracing::debug!(%error, messages = run.len(), "batch not committed; applying its messages one at a time");
                for &(index, message, _) in run.iter() {
                    outcomes[index] = Some(self.apply_one(message).await);
                }
            }
        }
        run.clear();
    }

    /// Applies one message on its own: an epoch release, or a message of a batch that failed.
    async fn apply_one(&self, message: &QuoteMessage) -> Outcome {
        let result = match message {
            QuoteMessage::Create(create) => self.book.create(create).await.map(Applied::Created),
            QuoteMessage::Update(update) => self.book.release(update).await.map(Applied::Paid),
        };
        self.outcome(result)
    }

    /// Counts what was applied, and says what to do with the entry.
    fn outcome(&self, result: Result<Applied, QuoteBookError>) -> Outcome {
        match result {
            Ok(Applied::Created(Created::New)) => {
                self.metrics.quotes_created.inc();
            }
            Ok(Applied::Created(Created::AlreadyStored)) => {
                self.metrics.quotes_redelivered.inc();
            }
            Ok(Applied::Paid(newly_paid)) => {
                self.metrics.updates_applied.inc();
                self.metrics.quotes_paid.inc_by(newly_paid as u64);
            }
            Err(error) if error.is_transient() => return Outcome::Retry(error),
            Err(error) => return Outcome::Reject(error.to_string()),
        };
        Outcome::Done
    }

    /// Parks an entry with the reason it was refused, and acknowledges it, atomically.
    async fn dead_letter(&mut self, entry: &StreamId, reason: &str) -> redis::RedisResult<()> {
        let original = entry.get::<String>(ehash::STREAM_FIELD).unwrap_or_default();
        tracing::warn!(entry = %entry.id, %reason, "quote message dead-lettered");
        redis::pipe()
            .atomic()
            .xadd(
                &self.dead_letter_stream,
                "*",
                &[
                    (ehash::STREAM_FIELD, original.as_str()),
                    ("reason", reason),
                    ("source_id", entry.id.as_str()),
                    ("consumer", self.consumer_name.as_str()),
                ],
            )
            .ignore()
            .xack(&self.config.stream, &self.config.group, &[&entry.id])
            .ignore()
            .query_async::<()>(&mut self.redis)
            .await?;
        self.metrics.dead_letters.inc();
        Ok(())
    }
}

/// Reads the stream as this consumer of its group, on a handle of the consumer's connection.
#[derive(Clone)]
struct StreamReader {
    redis: ConnectionManager,
    stream: String,
    group: String,
    consumer_name: String,
    batch_size: usize,
}

impl StreamReader {
    /// What waits, never delivered: up to `reads` reads' worth, without waiting for more.
    async fn read_backlog(&mut self, reads: usize) -> redis::RedisResult<Vec<StreamId>> {
        let mut entries = Vec::new();
        for _ in 0..reads {
            let read = self.read(">", None).await?;
            let full = read.len() >= self.batch_size;
            entries.extend(read);
            if !full {
                break;
            }
        }
        Ok(entries)
    }

    /// Up to a batch of entries after `from` (`>`: never delivered; `0`: ours, pending),
    /// waiting up to `block_ms` for some when there are none.
    async fn read(
        &mut self,
        from: &str,
        block_ms: Option<u64>,
    ) -> redis::RedisResult<Vec<StreamId>> {
        let mut options = StreamReadOptions::default()
            .group(&self.group, &self.consumer_name)
            .count(self.batch_size);
        if let Some(block_ms) = block_ms {
            options = options.block(block_ms as usize);
        }
        let reply: Option<StreamReadReply> = self
            .redis
            .xread_options(&[&self.stream], &[from], &options)
            .await?;
        Ok(reply
            .into_iter()
            .flat_map(|reply| reply.keys)
            .flat_map(|key| key.ids)
            .collect())
    }
}

/// Entries read, with the quote message each carries (or why it has none).
struct Read {
    entries: Vec<StreamId>,
    messages: Vec<Result<QuoteMessage, String>>,
}

impl Read {
    fn decode(entries: Vec<StreamId>) -> Self {
        let messages = entries.iter().map(decode).collect();
        Self { entries, messages }
    }
}

/// The quote message an entry carries, or why it has none.
fn decode(entry: &StreamId) -> Result<QuoteMessage, String> {
    let Some(json) = entry.get::<String>(ehash::STREAM_FIELD) else {
        // Emptied by XDEL/XTRIM, or not written by a pool.
        return Err(format!("entry has no \"{}\" field", ehash::STREAM_FIELD));
    };
    QuoteMessage::from_json(&json).map_err(|error| error.to_string())
}

/// `mint-<hostname>`: stable across restarts, so a restarted mint reads its own pending entries
/// at once instead of waiting for them to be claimed as abandoned.
fn default_consumer_name() -> String {
    format!("mint-{}", hashpool_service::hostname())
}
