use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use hashpool_mining_device::device::{run_device_reconnecting, DeviceConfig, DeviceStats};
use hashpool_mining_device::PoolArgs;

/// A CPU Stratum V2 miner for hashpool.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    pool: PoolArgs,
    /// Who gets paid: your locking public key (compressed, hex), optionally `.worker`.
    #[arg(long)]
    identity: String,
    /// Hashing threads per device.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Hashrate announced to the pool, H/s (sets the starting difficulty).
    #[arg(long, default_value_t = 1.0e6)]
    nominal_hashrate: f32,
    /// Simulate this many devices (one connection and channel each) for load.
    #[arg(long, default_value_t = 1)]
    devices: usize,
    /// Directory for logs/mining-device.log.
    #[arg(long, default_value = "logs")]
    log_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut shutdown = hashpool_service::ShutdownSignal::install();
    let _log = hashpool_service::init_logging("mining-device", &args.log_dir)?;
    args.identity
        .parse::<ehash::MinerIdentity>()
        .context("--identity must be a compressed public key in hex, optionally .worker")?;

    let stats = Arc::new(DeviceStats::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut devices = tokio::task::JoinSet::new();
    for index in 0..args.devices {
        let identity = if args.devices > 1 && !args.identity.contains('.') {
            format!("{}.sim{index}", args.identity)
        } else {
            args.identity.clone()
        };
        let config = DeviceConfig {
            pool_address: args.pool.address.clone(),
            authority: Some(args.pool.authority_key),
            identity,
            threads: args.threads,
            nominal_hashrate: args.nominal_hashrate,
        };
        let (stats, stopped) = (stats.clone(), stopped.clone());
        devices.spawn(async move { run_device_reconnecting(config, stats, stopped).await });
    }

    let started = Instant::now();
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    loop {
        tokio::select! {
            _ = report.tick() => log_progress(&stats, started),
            finished = devices.join_next() => match finished {
                Some(Ok(Err(error))) => {
                    tracing::error!(%error, "device stopped");
                    if devices.is_empty() { anyhow::bail!("every device stopped: {error}"); }
                }
                Some(_) => if devices.is_empty() { return Ok(()) },
                None => return Ok(()),
            },
            _ = shutdown.received() => {
                let _ = stop.send(true);
                while devices.join_next().await.is_some() {}
                return Ok(());
            }
        }
    }
}

/// The devices' hashrate since `started` and their shares so far.
fn log_progress(stats: &DeviceStats, started: Instant) {
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        hashrate = format!(
            "{:.0} H/s",
            stats.hashes.load(Ordering::Relaxed) as f64 / seconds
        ),
        submitted = stats.submitted.load(Ordering::Relaxed),
        accepted = stats.accepted.load(Ordering::Relaxed),
        rejected = stats.rejected.load(Ordering::Relaxed),
        "mining"
    );
}
