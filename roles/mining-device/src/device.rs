//! One CPU mining device: a standard channel, `threads` hashing threads, shares to the pool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stratum_apps::key_utils::Secp256k1PublicKey;
use stratum_apps::stratum_core::bitcoin::Target;
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::{mpsc, watch};

use crate::{
    rolled_version, ConnectionError, JobTracker, PoolConnection, Work, REQUIRES_FIXED_VERSION,
    REQUIRES_STANDARD_JOBS,
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
    Connection(#[from] ConnectionError),
    #[error("the pool refused the channel: {0}")]
    Refused(String),
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
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), DeviceError> {
    let mut connection = PoolConnection::connect(&config.pool_address, config.authority).await?;
    let pool_flags = connection.setup(REQUIRES_STANDARD_JOBS).await?;
    let version_rolling = pool_flags & REQUIRES_FIXED_VERSION == 0;
    let opened = connection
        .open_standard(1, &config.identity, config.nominal_hashrate)
        .await?
        .map_err(DeviceError::Refused)?;
    tracing::info!(channel_id = opened.channel_id, identity = %config.identity, "channel open; mining");
    let mut tracker = JobTracker::new(
        opened.channel_id,
        Target::from_le_bytes(opened.target.to_array()),
    );
    let (mut reader, mut writer) = connection.into_split();

    let (messages_tx, mut messages) = mpsc::channel(64);
    let reader_task = tokio::spawn(async move {
        loop {
            let message = reader.recv().await;
            let failed = message.is_err();
            if messages_tx.send(message).await.is_err() || failed {
                return;
            }
        }
    });

    let shared = Arc::new(SharedWork::default());
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let (found_tx, mut found) = mpsc::channel::<(u64, Work, u32)>(256);
    let threads = config.threads.max(1);
    let hashers: Vec<_> = (0..threads)
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

    let mut generation = 0u64;
    let mut sequence = 0u32;
    let result = loop {
        tokio::select! {
            message = messages.recv() => {
                let message = match message {
                    Some(Ok(message)) => message,
                    Some(Err(error)) => break Err(DeviceError::Connection(error)),
                    None => break Ok(()),
                };
                let AnyMessageOwned::Mining(mining) = message else { continue };
                match &mining {
                    MiningOwned::SubmitSharesSuccess(success) => {
                        stats.accepted.fetch_add(u64::from(success.new_submits_accepted_count), Ordering::Relaxed);
                    }
                    MiningOwned::SubmitSharesError(error) => {
                        stats.rejected.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(code = %error.error_code.as_utf8_or_hex(), "share rejected");
                    }
                    _ => {}
                }
                if tracker.on_message(&mining) {
                    generation += 1;
                    *shared.work.lock().expect("work lock") = tracker.work().cloned().map(|work| (generation, work));
                }
            }
            Some((found_generation, work, nonce)) = found.recv() => {
                if found_generation != generation {
                    continue;
                }
                let share = work.share(sequence, nonce);
                sequence = sequence.wrapping_add(1);
                stats.submitted.fetch_add(1, Ordering::Relaxed);
                if let Err(error) = writer.send_mining(MiningOwned::SubmitSharesStandard(share)).await {
                    break Err(DeviceError::Connection(error));
                }
            }
            _ = hashpool_service::stopped(&mut shutdown) => break Ok(()),
        }
    };
    drop(stop);
    reader_task.abort();
    // A hasher blocked on a full queue of found shares is released by closing the queue.
    drop(found);
    for hasher in hashers {
        let _ = tokio::task::spawn_blocking(move || hasher.join()).await;
    }
    result
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
    found: &mpsc::Sender<(u64, Work, u32)>,
    stats: &DeviceStats,
) {
    let mut current: Option<(u64, Work)> = None;
    let mut cursor = 0u64;
    let mut job_version = 0;
    let mut version_step = 0u16;
    while !stop.load(Ordering::Relaxed) {
        let latest = shared.work.lock().expect("work lock").clone();
        match (&current, latest) {
            (_, None) => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            (Some((generation, _)), Some((latest_generation, _)))
                if *generation == latest_generation => {}
            (_, Some(latest)) => {
                job_version = latest.1.version;
                version_step = 0;
                current = Some(latest);
                cursor = lane.index as u64;
            }
        }
        let (generation, work) = current.as_mut().expect("set above");
        if cursor * u64::from(CHUNK) > u64::from(u32::MAX) {
            // This thread's share of the nonces is spent: new header bits, new hashes.
            if lane.version_rolling && version_step < u16::MAX {
                version_step += 1;
                work.version = rolled_version(job_version, version_step);
            } else {
                version_step = 0;
                work.version = job_version;
                work.ntime += 1;
            }
            cursor = lane.index as u64;
        }
        let start = cursor * u64::from(CHUNK);
        let end = start + u64::from(CHUNK);
        cursor += lane.threads as u64;
        // Every share in the chunk is submitted, not just the first.
        let mut from = start;
        while from < end {
            let Some(nonce) = work.search(from as u32, (end - from) as u32) else {
                break;
            };
            if found
                .blocking_send((*generation, work.clone(), nonce))
                .is_err()
            {
                return;
            }
            from = u64::from(nonce) + 1;
        }
        stats.hashes.fetch_add(u64::from(CHUNK), Ordering::Relaxed);
    }
}
