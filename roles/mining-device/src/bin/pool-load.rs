//! Load generator for the pool: many concurrent Sv2 standard channels over Noise, each
//! submitting valid shares as fast as the pool answers them. Reports shares/s accepted and the
//! share-response latency (submit -> SubmitShares.Success) percentiles, and, given the pool's
//! pid and HTTP address, the pool's CPU, RSS and quote messages published meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use ehash::ShareWork;
use hashpool_mining_device::{
    JobTracker, PoolArgs, PoolConnection, Work, CPU_MINER, REQUIRES_STANDARD_JOBS,
};
use stratum_apps::stratum_core::bitcoin::{CompactTarget, Target};
use stratum_apps::stratum_core::parsers_sv2::{AnyMessageOwned, MiningOwned};
use tokio::sync::Semaphore;

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
    /// Every this many seconds, the first channel submits a share that is also a block, so the
    /// tip moves through the pool the way it does in production (the soak benchmark). Unset: no
    /// share is ever a block.
    #[arg(long)]
    block_every: Option<u64>,
    /// Hashrate (H/s) each channel states when it opens. A pool sets the first target from it:
    /// hashpool never below its least share work (2^12 hashes), other pools maybe far below.
    #[arg(long, default_value_t = 0.01)]
    hashrate: f32,
}

#[derive(Default)]
struct ChannelResult {
    accepted: u64,
    rejected: u64,
    blocks: u64,
    latencies_us: Vec<u64>,
}

impl ChannelResult {
    fn add(&mut self, other: ChannelResult) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.blocks += other.blocks;
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
    let hashers = Arc::new(Semaphore::new(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ));
    let tasks: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(index, (connection, tracker))| {
            let load = ChannelLoad {
                deadline,
                block_every: args
                    .block_every
                    .filter(|_| index == 0)
                    .map(Duration::from_secs),
                hashers: hashers.clone(),
            };
            tokio::spawn(load.run(connection, tracker))
        })
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
            .open_standard(1, &format!("{}.load{index}", args.identity), args.hashrate)
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
    let pool_cpu_seconds = args
        .pool_pid
        .map(cpu_seconds)
        .zip(before.cpu_seconds)
        .map(|(after, before)| after - before);
    let cpu = pool_cpu_seconds.map_or("-".into(), |busy| format!("{:.0}%", busy / elapsed * 100.0));
    // The pool's cost per share, whoever else shares the machine: what bounds its capacity.
    let cpu_per_share = pool_cpu_seconds
        .filter(|_| total.accepted > 0)
        .map_or("-".into(), |busy| {
            format!("{:.0} µs", busy * 1e6 / total.accepted as f64)
        });
    let rss = args
        .pool_pid
        .map(rss_mib)
        .map_or("-".into(), |mib| format!("{mib:.0} MiB"));
    let published = match (before.published, published(&args.pool_http).await) {
        (Some(before), Some(after)) => format!("{:.0}", (after - before) as f64 / elapsed),
        _ => "-".into(),
    };
    println!("| channels | shares/s accepted | quote msgs/s published | rejected | blocks | latency p50 | latency p99 | pool CPU | pool CPU per share | pool RSS |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.0} | {} | {} | {} | {:.2} ms | {:.2} ms | {} | {} | {} |",
        args.channels,
        total.accepted as f64 / elapsed,
        published,
        total.rejected,
        total.blocks,
        total.percentile_ms(0.50),
        total.percentile_ms(0.99),
        cpu,
        cpu_per_share,
        rss
    );
}

/// How one channel loads the pool.
struct ChannelLoad {
    deadline: Instant,
    /// How often this channel submits a block; `None`: never.
    block_every: Option<Duration>,
    /// Hashing runs on blocking threads, at most one per core, so the runtime's threads are
    /// free to read the pool's answers when they arrive: the latency measured is the pool's,
    /// not the time the answer waited behind another channel's hashing.
    hashers: Arc<Semaphore>,
}

impl ChannelLoad {
    /// Submits shares one at a time, each a nonce that meets the channel target but not the
    /// network's (a block would change the tip and stale every channel's job), except the
    /// blocks asked for by `block_every`.
    async fn run(
        self,
        mut connection: PoolConnection,
        mut tracker: JobTracker,
    ) -> anyhow::Result<ChannelResult> {
        let mut result = ChannelResult::default();
        let mut sequence = 0u32;
        let mut nonce: u32 = rand::random();
        let mut next_block = self.block_every.map(|every| Instant::now() + every);
        while Instant::now() < self.deadline {
            let work = tracker.work().expect("work before load").clone();
            let block_due = next_block.is_some_and(|due| Instant::now() >= due);
            let found = self.find(work.clone(), nonce, block_due).await?;
            let Some(found) = found else {
                nonce = nonce.wrapping_add(u32::MAX / 2);
                continue;
            };
            nonce = found;
            if block_due {
                result.blocks += 1;
                next_block = next_block
                    .zip(self.block_every)
                    .map(|(due, every)| due + every);
            }
            let sent = Instant::now();
            connection
                .send_mining(MiningOwned::SubmitSharesStandard(
                    work.share(sequence, found),
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

    /// The next nonce after `from` that makes a share which is a block when `block`, and a share
    /// which is not a block otherwise. `None` when half the nonce space holds none.
    ///
    /// Every share proves at least hashpool's least share work (2^12 hashes), whatever target the
    /// pool set: so pools compared side by side are sent the same work per share.
    async fn find(&self, work: Work, from: u32, block: bool) -> anyhow::Result<Option<u32>> {
        let _permit = self.hashers.clone().acquire_owned().await?;
        let found = tokio::task::spawn_blocking(move || {
            let network = Target::from_compact(CompactTarget::from_consensus(work.nbits));
            let least_work = ShareWork::MIN.target();
            work.search_for(from.wrapping_add(1), u32::MAX / 2, |hash| {
                work.target.is_met_by(hash)
                    && least_work.is_met_by(hash)
                    && network.is_met_by(hash) == block
            })
        })
        .await?;
        Ok(found)
    }
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
