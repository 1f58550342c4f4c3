//! Hands accepted shares' quote messages to Redis without ever making mining wait.
//!
//! Share handlers call [`QuoteSender::publish`], which never blocks: the message goes into a
//! bounded queue, and a full queue is an overflow that is counted and logged as an error. The
//! publisher task drains the queue in order and appends each batch to the stream in one
//! MULTI/EXEC transaction together with a per-pool marker holding the batch's sequence number.
//! While Redis is unreachable the queue is the buffer: the task keeps retrying the same batch.
//! When a failure leaves it unknown whether the transaction ran (the connection dropped after
//! EXEC was sent), the marker answers, so a batch is never appended twice. On shutdown whatever
//! is unsent goes to a journal file that the next start publishes first.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ehash::{QuoteMessage, Release, UpdateQuote};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::AsyncCommands;
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::durable::replace_durably;

/// Messages appended per transaction.
const MAX_BATCH: usize = 512;
const RETRY_START: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct PublisherSettings {
    pub redis_url: String,
    pub stream: String,
    /// Names this pool's sequence marker, `<stream>:publisher:<pool_id>`.
    pub pool_id: String,
    /// Messages held while Redis is away; beyond this, publishing counts an overflow.
    pub capacity: usize,
    pub journal_path: PathBuf,
}

#[derive(Debug, Error)]
pub enum PublisherError {
    #[error("invalid Redis URL {url}: {source}")]
    Url {
        url: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("cannot read the quote journal {path}: {source}")]
    ReadJournal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("quote journal {path} line {line} is not a quote message: {reason}")]
    CorruptJournal {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// Counters shared with `/metrics`.
#[derive(Debug, Default)]
pub struct PublisherMetrics {
    pub enqueued: AtomicU64,
    pub published: AtomicU64,
    pub overflowed: AtomicU64,
    pub redis_errors: AtomicU64,
    pub journaled: AtomicU64,
    pub redis_up: AtomicBool,
}

impl PublisherMetrics {
    pub fn buffered(&self) -> u64 {
        let enqueued = self.enqueued.load(Ordering::Relaxed);
        let done = self.published.load(Ordering::Relaxed) + self.journaled.load(Ordering::Relaxed);
        enqueued.saturating_sub(done)
    }
}

/// The share handlers' end: cheap to clone, never blocks.
#[derive(Clone)]
pub struct QuoteSender {
    queue: mpsc::Sender<QuoteMessage>,
    metrics: Arc<PublisherMetrics>,
}

impl QuoteSender {
    /// Queues a message; if the buffer is full the message is counted as overflowed and logged.
    pub fn publish(&self, message: QuoteMessage) {
        match self.queue.try_send(message) {
            Ok(()) => {
                self.metrics.enqueued.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) => {
                let total = self.metrics.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
                let message = match &error {
                    mpsc::error::TrySendError::Full(message)
                    | mpsc::error::TrySendError::Closed(message) => message,
                };
                tracing::error!(
                    kind = message.kind(),
                    overflowed_total = total,
                    "quote buffer full (Redis unreachable for too long?); quote message dropped"
                );
            }
        }
    }

    pub fn metrics(&self) -> &Arc<PublisherMetrics> {
        &self.metrics
    }

    /// A sender whose messages go to the returned receiver rather than to Redis: for harnesses
    /// that run the share path without a publisher (the fuzz targets).
    #[cfg(feature = "fuzzing")]
    pub fn to_receiver(capacity: usize) -> (Self, mpsc::Receiver<QuoteMessage>) {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let metrics = Arc::new(PublisherMetrics::default());
        (Self { queue, metrics }, receiver)
    }
}

/// The running publisher task.
pub struct QuotePublisher {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl QuotePublisher {
    /// Starts publishing; messages journaled by the previous run are sent first.
    pub fn start(settings: PublisherSettings) -> Result<(Self, QuoteSender), PublisherError> {
        let client = redis::Client::open(settings.redis_url.as_str()).map_err(|source| {
            PublisherError::Url {
                url: settings.redis_url.clone(),
                source,
            }
        })?;
        let replay = read_journal(&settings.journal_path)?;
        if !replay.is_empty() {
            tracing::info!(count = replay.len(), path = %settings.journal_path.display(), "publishing quote messages journaled at the last shutdown");
        }
        let metrics = Arc::new(PublisherMetrics::default());
        metrics
            .enqueued
            .fetch_add(replay.len() as u64, Ordering::Relaxed);
        let (queue, receiver) = mpsc::channel(settings.capacity.max(1));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let worker = Worker {
            client,
            redis: None,
            marker_key: format!("{}:publisher:{}", settings.stream, settings.pool_id),
            settings,
            receiver,
            journal_backlog: replay.len(),
            pending: replay.into(),
            sequence: 0,
            in_doubt: false,
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(worker.run(shutdown_rx));
        Ok((Self { shutdown, task }, QuoteSender { queue, metrics }))
    }

    /// Publishes what it can until the queue is empty or `grace` has passed, then journals the
    /// rest. Senders still alive after this only overflow.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace + Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            abort.abort();
            tracing::error!("quote publisher did not stop in time");
        }
    }
}

struct Worker {
    client: redis::Client,
    redis: Option<ConnectionManager>,
    settings: PublisherSettings,
    marker_key: String,
    receiver: mpsc::Receiver<QuoteMessage>,
    /// Taken from the queue, not yet known to be in the stream; always published first.
    pending: VecDeque<QuoteMessage>,
    sequence: u64,
    /// The last transaction's fate is unknown (its reply was lost): ask the marker before
    /// sending the batch again.
    in_doubt: bool,
    /// Messages from the journal not yet published; the journal is removed when this reaches 0.
    journal_backlog: usize,
    metrics: Arc<PublisherMetrics>,
}

enum Attempt {
    Published,
    /// The transaction did not run: retry the same batch.
    Failed(redis::RedisError),
}

impl Worker {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        self.sequence = self.last_sequence().await.unwrap_or(0);
        let mut backoff = RETRY_START;
        loop {
            if self.pending.is_empty() {
                tokio::select! {
                    message = self.receiver.recv() => match message {
                        Some(message) => self.pending.push_back(message),
                        None => break,
                    },
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
            }
            while self.pending.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(message) => self.pending.push_back(message),
                    Err(_) => break,
                }
            }
            match self.publish_batch().await {
                Attempt::Published => backoff = RETRY_START,
                Attempt::Failed(error) => {
                    self.metrics.redis_errors.fetch_add(1, Ordering::Relaxed);
                    if self.metrics.redis_up.swap(false, Ordering::Relaxed) {
                        tracing::error!(%error, "Redis unreachable; buffering quote messages");
                    }
                    if *shutdown.borrow() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait_for(|stop| *stop) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_CAP);
                }
            }
        }
        // Whatever could not be published: journal it for the next start.
        while let Ok(message) = self.receiver.try_recv() {
            self.pending.push_back(message);
        }
        self.write_journal();
    }

    async fn connection(&mut self) -> redis::RedisResult<&mut ConnectionManager> {
        if self.redis.is_none() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(1)))
                .set_response_timeout(Some(Duration::from_secs(2)))
                .set_number_of_retries(0);
            self.redis =
                Some(ConnectionManager::new_with_config(self.client.clone(), config).await?);
        }
        Ok(self.redis.as_mut().expect("just connected"))
    }

    async fn last_sequence(&mut self) -> redis::RedisResult<u64> {
        let key = self.marker_key.clone();
        let value: Option<u64> = self.connection().await?.get(&key).await?;
        Ok(value.unwrap_or(0))
    }

    /// Appends the head of `pending` (up to MAX_BATCH messages, updates coalesced) atomically.
    async fn publish_batch(&mut self) -> Attempt {
        let take = self.pending.len().min(MAX_BATCH);
        let sequence = self.sequence + 1;
        if self.in_doubt {
            match self.last_sequence().await {
                Ok(marker) if marker >= sequence => return self.applied(take, sequence),
                Ok(_) => self.in_doubt = false,
                Err(error) => {
                    self.redis = None;
                    return Attempt::Failed(error);
                }
            }
        }
        let batch = coalesce(self.pending.iter().take(take));
        let mut pipe = redis::pipe();
        pipe.atomic();
        for message in &batch {
            pipe.xadd(
                &self.settings.stream,
                "*",
                &[(ehash::STREAM_FIELD, message.to_json())],
            )
            .ignore();
            if let QuoteMessage::Create(create) = message {
                if create.unit == ehash::EPOCH_UNIT {
                    // The epoch's totals change with its creates, in the same transaction.
                    let totals = ehash::epoch_totals_key(&self.settings.stream, create.epoch);
                    pipe.hincr(&totals, "work", create.amount).ignore();
                    pipe.hincr(&totals, "quotes", 1).ignore();
                }
            }
        }
        pipe.set(&self.marker_key, sequence).ignore();

        let result = match self.connection().await {
            Ok(redis) => pipe.query_async::<()>(redis).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => self.applied(take, sequence),
            Err(error) => {
                if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
                    // EXEC may have run with its reply lost: the marker will tell.
                    self.in_doubt = true;
                    self.redis = None;
                }
                Attempt::Failed(error)
            }
        }
    }

    fn applied(&mut self, take: usize, sequence: u64) -> Attempt {
        self.sequence = sequence;
        self.in_doubt = false;
        self.pending.drain(..take);
        self.metrics
            .published
            .fetch_add(take as u64, Ordering::Relaxed);
        if !self.metrics.redis_up.swap(true, Ordering::Relaxed) {
            tracing::info!(stream = %self.settings.stream, "publishing quote messages to Redis");
        }
        if self.journal_backlog > 0 {
            self.journal_backlog = self.journal_backlog.saturating_sub(take);
            if self.journal_backlog == 0 {
                if let Err(error) = std::fs::remove_file(&self.settings.journal_path) {
                    tracing::warn!(%error, "cannot remove the published quote journal");
                }
            }
        }
        Attempt::Published
    }

    /// Replaces the journal with every unsent message (replayed ones included, so nothing is
    /// written twice).
    fn write_journal(&mut self) {
        let path = &self.settings.journal_path;
        if self.pending.is_empty() {
            return;
        }
        let count = self.pending.len();
        let text: String = self
            .pending
            .iter()
            .map(|message| message.to_json() + "\n")
            .collect();
        let written = replace_durably(path, text.as_bytes());
        match written {
            Ok(()) => {
                self.metrics
                    .journaled
                    .fetch_add(count as u64, Ordering::Relaxed);
                tracing::warn!(count, path = %path.display(), "unsent quote messages journaled; the next start publishes them");
            }
            Err(error) => {
                tracing::error!(count, %error, path = %path.display(), "cannot journal unsent quote messages; they are lost")
            }
        }
    }
}

/// The batch as it goes on the stream: every ehash update in it merged into one message after
/// the batch's other messages. One update per batch instead of one per share halves the entries
/// the stream holds and the mint reads. Moving an ehash update later is always safe (it only
/// ever follows its creates); creates and epoch releases keep their order, since an epoch's
/// release must follow the epoch's creates.
fn coalesce<'a>(messages: impl Iterator<Item = &'a QuoteMessage>) -> Vec<QuoteMessage> {
    let mut out: Vec<QuoteMessage> = Vec::new();
    let mut released: Vec<uuid::Uuid> = Vec::new();
    for message in messages {
        match message {
            QuoteMessage::Update(UpdateQuote {
                release: Release::Quotes(ids),
            }) => released.extend(ids.iter().copied()),
            other => out.push(other.clone()),
        }
    }
    if !released.is_empty() {
        out.push(QuoteMessage::Update(UpdateQuote::paid(released)));
    }
    out
}

/// Reads the journal; its messages are published before any new one, and the file is removed
/// once they all are.
fn read_journal(path: &Path) -> Result<Vec<QuoteMessage>, PublisherError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(PublisherError::ReadJournal {
                path: path.to_owned(),
                source,
            })
        }
    };
    let messages = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            QuoteMessage::from_json(line).map_err(|error| PublisherError::CorruptJournal {
                path: path.to_owned(),
                line: index + 1,
                reason: error.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn update(ids: &[u128]) -> QuoteMessage {
        QuoteMessage::Update(UpdateQuote::paid(
            ids.iter().map(|&id| Uuid::from_u128(id)).collect(),
        ))
    }

    #[test]
    fn a_batch_carries_one_ehash_update_after_its_other_messages() {
        let create = QuoteMessage::Create(ehash::CreateQuote::for_share(ehash::AcceptedShare {
            share_hash: bitcoin::hashes::Hash::all_zeros(),
            locking_pubkey: "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                .parse()
                .unwrap(),
            credited_work: 1,
            channel_id: 1,
            job_id: 1,
            template_id: 1,
            epoch: 1,
            accepted_at: 1,
        }));
        let epoch = QuoteMessage::Update(UpdateQuote::epoch_paid(ehash::EpochRelease {
            epoch: 1,
            payout: 1_000,
            total_work: 1,
            quotes: 1,
            payment_id: "payment".into(),
        }));
        let batch = [
            update(&[1]),
            update(&[2, 3]),
            create.clone(),
            epoch.clone(),
            update(&[4]),
        ];
        let merged = coalesce(batch.iter());
        assert_eq!(merged, vec![create, epoch, update(&[1, 2, 3, 4])]);
    }
}
