//! Load generator for the pool: many concurrent Sv2 standard channels over Noise, each
//! submitting valid shares as fast as the pool answers them. Reports shares/s accepted and the
//! share-response latency (submit -> SubmitShares.Success) percentiles, and, given the pool's
//! pid and HTTP address, the pool's CPU, RSS and quote messages published meanwhile.

use std::time::{Duration, Instant};

use clap::Parser;
use hashpool_mining_device::{
    JobTracker, PoolArgs, PoolConnection, CPU_MINER, REQUIRES_STANDARD_JOBS,
};
use stratum_apps::stratum_core::bitcoin::{CompactTarget, Target};
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    pool: PoolArgs,
    #[arg(
        long,
        default_value = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
    )]
    identity: String,
    /// Concurrent channels, one connection each.
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Seconds of measured load (after every channel has work).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The pool's pid, to report its CPU time and RSS.
    #[arg(long)]
    pool_pid: Option<u32>,
    /// The pool's HTTP address, to report quote messages published.
    #[arg(long)]
    pool_http: Option<String>,
}

#[derive(Default)]
struct ChannelResult {
    accepted: u64,
    rejected: u64,
    latencies_us: Vec<u64>,
}

impl ChannelResult {
    fn add(&mut self, other: ChannelResult) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.latencies_us.extend(other.latencies_us);
    }

    /// The latency below which fraction `p` of the shares were answered, in ms.
    fn percentile_ms(&self, p: f64) -> f64 {
        let latencies = &self.latencies_us;
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// The pool's CPU time and quote messages published when the load started.
struct PoolBefore {
    cpu_seconds: Option<f64>,
    published: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ready = open_channels(&args).await?;
    let before = PoolBefore {
        cpu_seconds: args.pool_pid.map(cpu_seconds),
        published: published(&args.pool_http).await,
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(connection, tracker)| tokio::spawn(load_channel(connection, tracker, deadline)))
        .collect();
    let mut total = ChannelResult::default();
    for task in tasks {
        total.add(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    print_report(&args, &total, elapsed, before).await;
    Ok(())
}

/// One connection and standard channel per `--channels`, each with work to do.
async fn open_channels(args: &Args) -> anyhow::Result<Vec<(PoolConnection, JobTracker)>> {
    let mut ready = Vec::with_capacity(args.channels);
    for index in 0..args.channels {
        let mut connection = args.pool.connect().await?;
        connection.setup(REQUIRES_STANDARD_JOBS, &CPU_MINER).await?;
        let opened = connection
            .open_standard(1, &format!("{}.load{index}", args.identity), 0.01)
            .await??;
        let mut tracker = JobTracker::new(
            opened.channel_id,
            Target::from_le_bytes(opened.target.to_array()),
        );
        while tracker.work().is_none() {
            if let AnyMessageOwned::Mining(message) = connection.recv().await? {
                tracker.on_message(&message);
            }
        }
        ready.push((connection, tracker));
    }
    Ok(ready)
}

/// One Markdown table row, as in the benchmarks document.
async fn print_report(args: &Args, total: &ChannelResult, elapsed: f64, before: PoolBefore) {
    let cpu = match (args.pool_pid, before.cpu_seconds) {
        (Some(pid), Some(before)) => {
            format!("{:.0}%", (cpu_seconds(pid) - before) / elapsed * 100.0)
        }
        _ => "-".into(),
    };
    let rss = args
        .pool_pid
        .map(rss_mib)
        .map_or("-".into(), |mib| format!("{mib:.0} MiB"));
    let published = match (before.published, published(&args.pool_http).await) {
        (Some(before), Some(after)) => format!("{:.0}", (after - before) as f64 / elapsed),
        _ => "-".into(),
    };
    println!("| channels | shares/s accepted | quote msgs/s published | rejected | latency p50 | latency p99 | pool CPU | pool RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.0} | {} | {} | {:.2} ms | {:.2} ms | {} | {} |",
        args.channels,
        total.accepted as f64 / elapsed,
        published,
        total.rejected,
        total.percentile_ms(0.50),
        total.percentile_ms(0.99),
        cpu,
        rss
    );
}

/// Submits shares one at a time, each a nonce that meets the channel target but not the
/// network's (a block would change the tip and stale every channel's job).
async fn load_channel(
    mut connection: PoolConnection,
    mut tracker: JobTracker,
    deadline: Instant,
) -> anyhow::Result<ChannelResult> {
    let mut result = ChannelResult::default();
    let mut sequence = 0u32;
    let mut nonce: u32 = rand::random();
    while Instant::now() < deadline {
        let work = tracker.work().expect("work before load").clone();
        let network = Target::from_compact(CompactTarget::from_consensus(work.nbits));
        loop {
            nonce = nonce.wrapping_add(1);
            if work.meets_target(nonce) && !network.is_met_by(work.header(nonce).block_hash()) {
                break;
            }
        }
        let sent = Instant::now();
        connection
            .send_mining(MiningOwned::SubmitSharesStandard(
                work.share(sequence, nonce),
            ))
            .await?;
        sequence = sequence.wrapping_add(1);
        loop {
            let AnyMessageOwned::Mining(message) = connection.recv().await? else {
                continue;
            };
            match message {
                MiningOwned::SubmitSharesSuccess(_) => result.accepted += 1,
                MiningOwned::SubmitSharesError(_) => result.rejected += 1,
                other => {
                    tracker.on_message(&other);
                    continue;
                }
            }
            result.latencies_us.push(sent.elapsed().as_micros() as u64);
            break;
        }
    }
    Ok(result)
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the comm field).
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn published(http: &Option<String>) -> Option<u64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = http.as_ref()?;
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).await.ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("hashpool_pool_quotes_published_total "))
        .and_then(|value| value.trim().parse().ok())
}
