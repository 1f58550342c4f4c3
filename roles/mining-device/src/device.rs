//! One CPU mining device: a standard channel, `threads` hashing threads, shares to the pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratum_apps::key_utils::Secp256k1PublicKey;
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::mining_sv2::SubmitSharesStandard;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use crate::{
    rolled_version, ChannelRefused, ClientError, JobTracker, PoolConnection, Work, CPU_MINER,
    REQUIRES_FIXED_VERSION, REQUIRES_STANDARD_JOBS,
};

/// Nonces a thread hashes before it looks for new work.
const CHUNK: u32 = 1 << 16;

#[derive(Debug, Clone)]
pub struct DeviceConfig {
    pub pool_address: String,
    pub authority: Option<Secp256k1PublicKey>,
    /// `pubkey[.worker]`: the key that will own this device's ecash.
    pub identity: String,
    pub threads: usize,
    /// Hashrate announced when opening the channel (sets the starting difficulty).
    pub nominal_hashrate: f32,
}

#[derive(Debug, Default)]
pub struct DeviceStats {
    pub hashes: AtomicU64,
    pub submitted: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Connection(#[from] ClientError),
    #[error(transparent)]
    Refused(#[from] ChannelRefused),
}

/// The work every hashing thread reads, and a generation that changes with it.
#[derive(Default)]
struct SharedWork {
    work: Mutex<Option<(u64, Work)>>,
}

/// First wait before reconnecting; it doubles up to [`MAX_RECONNECT_DELAY`].
const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(500);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
/// A session that lasted this long was healthy: the next outage starts the backoff afresh.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Mines until `shutdown`, reconnecting with backoff whenever the pool cannot be reached or the
/// connection drops (a pool that is starting, restarting or briefly away). A refused channel is
/// final: mining again with the same identity would be refused again.
pub async fn run_device_reconnecting(
    config: DeviceConfig,
    stats: Arc<DeviceStats>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DeviceError> {
    let mut delay = FIRST_RECONNECT_DELAY;
    loop {
        let started = std::time::Instant::now();
        // Whatever the device is waiting on (a handshake, a pool that stopped reading), shutdown
        // ends it: dropping the session stops its hashing threads (see `StopOnDrop`).
        let session = tokio::select! {
            session = run_device(config.clone(), stats.clone(), shutdown.clone()) => session,
            _ = hashpool_service::stopped(&mut shutdown) => return Ok(()),
        };
        match session {
            Ok(()) => return Ok(()),
            Err(refused @ DeviceError::Refused(_)) => return Err(refused),
            Err(DeviceError::Connection(error)) => {
                if started.elapsed() >= HEALTHY_SESSION {
                    delay = FIRST_RECONNECT_DELAY;
                }
                tracing::warn!(%error, pool = %config.pool_address, retry_in = ?delay, "pool unreachable");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = hashpool_service::stopped(&mut shutdown) => return Ok(()),
        }
        delay = (delay * 2).min(MAX_RECONNECT_DELAY);
    }
}

/// Mines until `shutdown` or until the connection fails.
pub async fn run_device(
    config: DeviceConfig,
    stats: Arc<DeviceStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DeviceError> {
    let (connection, tracker, version_rolling) = open_channel(&config).await?;
    let span =
        tracing::info_span!("channel", id = tracker.channel_id(), identity = %config.identity);
    let hashers = Hashers::start(config.threads.max(1), version_rolling, &stats);
    mine(connection, tracker, hashers, &stats, shutdown)
        .instrument(span)
        .await
}

/// Hands the pool's work to the hashing threads and their shares to the pool.
async fn mine(
    connection: PoolConnection,
    mut tracker: JobTracker,
    mut hashers: Hashers,
    stats: &DeviceStats,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DeviceError> {
    tracing::info!("channel open; mining");
    let (reader, mut writer) = connection.into_split();
    let mut messages = reader.spawn(64);
    let result = loop {
        tokio::select! {
            message = messages.recv() => match message {
                Ok(AnyMessageOwned::Mining(mining)) => {
                    count_answer(stats, &mining);
                    if tracker.on_message(&mining) {
                        hashers.set_work(tracker.work());
                    }
                }
                Ok(_) => {}
                Err(error) => break Err(DeviceError::Connection(error)),
            },
            Some(found) = hashers.found.recv() => {
                let Some(share) = hashers.share(found) else { continue };
                stats.submitted.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = writer.send_mining(MiningOwned::SubmitSharesStandard(share)).await {
                    break Err(DeviceError::Connection(error));
                }
            }
            _ = hashpool_service::stopped(&mut shutdown) => break Ok(()),
        }
    };
    drop(messages);
    hashers.stop().await;
    result
}

/// Connects, sets up and opens the device's standard channel; says whether the pool lets the
/// device roll versions.
async fn open_channel(
    config: &DeviceConfig,
) -> Result<(PoolConnection, JobTracker, bool), DeviceError> {
    let mut connection = PoolConnection::connect(&config.pool_address, config.authority).await?;
    let pool_flags = connection.setup(REQUIRES_STANDARD_JOBS, &CPU_MINER).await?;
    let version_rolling = pool_flags & REQUIRES_FIXED_VERSION == 0;
    let opened = connection
        .open_standard(1, &config.identity, config.nominal_hashrate)
        .await??;
    let tracker = JobTracker::new(
        opened.channel_id,
        Target::from_le_bytes(opened.target.to_array()),
    );
    Ok((connection, tracker, version_rolling))
}

/// The pool's answers to shares, in the device's counters.
fn count_answer(stats: &DeviceStats, message: &MiningOwned) {
    match message {
        MiningOwned::SubmitSharesSuccess(success) => {
            stats.accepted.fetch_add(
                u64::from(success.new_submits_accepted_count),
                Ordering::Relaxed,
            );
        }
        MiningOwned::SubmitSharesError(error) => {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(code = %error.error_code.as_utf8_or_hex(), "share rejected");
        }
        _ => {}
    }
}

/// A nonce a hashing thread found, on the work of `generation`.
struct Found {
    generation: u64,
    work: Work,
    nonce: u32,
}

/// The hashing threads of one session and the work they share.
struct Hashers {
    shared: Arc<SharedWork>,
    /// Counts work changes, so shares found on replaced work are dropped.
    generation: u64,
    sequence: u32,
    found: mpsc::Receiver<Found>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: StopOnDrop,
}

impl Hashers {
    fn start(threads: usize, version_rolling: bool, stats: &Arc<DeviceStats>) -> Self {
        let shared = Arc::new(SharedWork::default());
        let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
        let (found_tx, found) = mpsc::channel::<Found>(256);
        let threads = (0..threads)
            .map(|index| {
                let (shared, stop, found_tx, stats) = (
                    shared.clone(),
                    stop.0.clone(),
                    found_tx.clone(),
                    stats.clone(),
                );
                let lane = Lane {
                    index,
                    threads,
                    version_rolling,
                };
                std::thread::spawn(move || hash_loop(lane, &shared, &stop, &found_tx, &stats))
            })
            .collect();
        Self {
            shared,
            generation: 0,
            sequence: 0,
            found,
            threads,
            stop,
        }
    }

    fn set_work(&mut self, work: Option<&Work>) {
        self.generation += 1;
        *self.shared.work.lock().expect("work lock") =
            work.cloned().map(|work| (self.generation, work));
    }

    /// The share for a found nonce, unless its work has been replaced since.
    fn share(&mut self, found: Found) -> Option<SubmitSharesStandard> {
        if found.generation != self.generation {
            return None;
        }
        let share = found.work.share(self.sequence, found.nonce);
        self.sequence = self.sequence.wrapping_add(1);
        Some(share)
    }

    async fn stop(self) {
        let Self {
            threads,
            found,
            stop,
            ..
        } = self;
        drop(stop);
        // A hasher blocked on a full queue of found shares is released by closing the queue.
        drop(found);
        for thread in threads {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Tells the hashing threads to stop when the session ends, however it ends (returned, or
/// dropped at shutdown while waiting on the pool).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One hashing thread's part of the search.
#[derive(Debug, Clone, Copy)]
struct Lane {
    index: usize,
    threads: usize,
    /// Whether the pool accepts rolled versions (BIP320).
    version_rolling: bool,
}

/// Hashes the current work: thread `index` of `threads` takes every `threads`-th chunk of the
/// nonce space; when its part is spent it rolls the version (BIP320), and only once those
/// combinations are spent too (or the pool wants a fixed version) moves ntime on.
fn hash_loop(
    lane: Lane,
    shared: &SharedWork,
    stop: &AtomicBool,
    found: &mpsc::Sender<Found>,
    stats: &DeviceStats,
) {
    let mut current: Option<LaneWork> = None;
    while !stop.load(Ordering::Relaxed) {
        let latest = shared.work.lock().expect("work lock").clone();
        let Some((generation, work)) = latest else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if current.as_ref().map(|current| current.generation) != Some(generation) {
            current = Some(LaneWork::new(generation, work, lane));
        }
        let current = current.as_mut().expect("set above");
        let (start, end) = current.next_chunk(lane);
        if !current.submit_shares(start, end, found) {
            return;
        }
        stats.hashes.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
    }
}

/// One thread's place in the search of one piece of work.
struct LaneWork {
    generation: u64,
    work: Work,
    job_version: u32,
    version_step: u16,
    /// The next chunk of the nonce space this thread hashes.
    cursor: u64,
}

impl LaneWork {
    fn new(generation: u64, work: Work, lane: Lane) -> Self {
        Self {
            generation,
            job_version: work.version,
            work,
            version_step: 0,
            cursor: lane.index as u64,
        }
    }

    /// The next nonces to hash, `start..end`; new header bits first if this thread's share of
    /// the nonces is spent.
    fn next_chunk(&mut self, lane: Lane) -> (u64, u64) {
        if self.cursor * u64::from(CHUNK) > u64::from(u32::MAX) {
            if lane.version_rolling && self.version_step < u16::MAX {
                self.version_step += 1;
                self.work.version = rolled_version(self.job_version, self.version_step);
            } else {
                self.version_step = 0;
                self.work.version = self.job_version;
                self.work.ntime += 1;
            }
            self.cursor = lane.index as u64;
        }
        let start = self.cursor * u64::from(CHUNK);
        self.cursor += lane.threads as u64;
        (start, start + u64::from(CHUNK))
    }

    /// Hashes `start..end` and sends every share in it, not just the first; false once the
    /// session no longer takes shares.
    fn submit_shares(&self, start: u64, end: u64, found: &mpsc::Sender<Found>) -> bool {
        let mut from = start;
        while from < end {
            let Some(nonce) = self.work.search(from as u32, (end - from) as u32) else {
                break;
            };
            let share = Found {
                generation: self.generation,
                work: self.work.clone(),
                nonce,
            };
            if found.blocking_send(share).is_err() {
                return false;
            }
            from = u64::from(nonce) + 1;
        }
        true
    }
}
