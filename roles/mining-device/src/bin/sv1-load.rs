//! Load generator for the translator: Sv1 miners (JSON lines over TCP, as a Bitaxe speaks, without
//! version rolling), each submitting valid shares one at a time as fast as the translator answers
//! them. Reports shares/s accepted and the share-response latency (`mining.submit` -> its
//! response) percentiles, as `pool-load` does for the pool. No share is a block: the tip stays
//! put, so no share is stale by the load's own doing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use hashpool_mining_device::Work;
use serde_json::{json, Value};
use stratum_apps::stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_apps::stratum_core::bitcoin::{BlockHash, CompactTarget, Target};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    /// The translator's Sv1 address.
    #[arg(long, default_value = "127.0.0.1:34255")]
    translator: String,
    /// The miners' public key; each miner authorizes as `<identity>.sv1load<n>`.
    #[arg(
        long,
        default_value = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5"
    )]
    identity: String,
    /// Concurrent miners, one connection each.
    #[arg(long, default_value_t = 4)]
    miners: usize,
    /// Seconds of measured load (after every miner has work).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
}

/// A wait for the translator longer than this is a failure, not a latency.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct MinerResult {
    accepted: u64,
    rejected: u64,
    latencies_us: Vec<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut miners = Vec::with_capacity(args.miners);
    for index in 0..args.miners {
        let mut miner = Sv1Miner::connect(&args.translator).await?;
        miner
            .handshake(&format!("{}.sv1load{index}", args.identity))
            .await?;
        miners.push(miner);
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    // Hashing runs on blocking threads, at most one per core, so answers are read when they
    // arrive: the latency measured is the translator's, not another miner's hashing.
    let hashers = Arc::new(Semaphore::new(
        std::thread::available_parallelism().map_or(2, |n| n.get()),
    ));
    let tasks: Vec<_> = miners
        .into_iter()
        .map(|miner| tokio::spawn(miner.run(deadline, hashers.clone())))
        .collect();
    let mut total = MinerResult::default();
    for task in tasks {
        let result = task.await??;
        total.accepted += result.accepted;
        total.rejected += result.rejected;
        total.latencies_us.extend(result.latencies_us);
    }
    let elapsed = started.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let percentile_ms = |p: f64| {
        let latencies = &total.latencies_us;
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(index).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!("| miners | shares/s accepted | rejected | latency p50 | latency p99 |");
    println!("|---|---|---|---|---|");
    println!(
        "| {} | {:.0} | {} | {:.2} ms | {:.2} ms |",
        args.miners,
        total.accepted as f64 / elapsed,
        total.rejected,
        percentile_ms(0.50),
        percentile_ms(0.99)
    );
    Ok(())
}

/// A job from `mining.notify`.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    prev_hash: BlockHash,
    coinb1: Vec<u8>,
    coinb2: Vec<u8>,
    branch: Vec<[u8; 32]>,
    version: u32,
    nbits: u32,
    ntime: u32,
}

struct Sv1Miner {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    user: String,
    extranonce1: Vec<u8>,
    extranonce2_size: usize,
    extranonce2: u64,
    difficulty: Option<f64>,
    job: Option<Job>,
}

impl Sv1Miner {
    async fn connect(address: &str) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(address)
            .await
            .with_context(|| format!("connecting to the translator at {address}"))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        Ok(Self {
            reader: BufReader::new(reader),
            writer,
            next_id: 1,
            user: String::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            extranonce2: 0,
            difficulty: None,
            job: None,
        })
    }

    /// subscribe, authorize, then read until there is a job and a difficulty.
    async fn handshake(&mut self, user: &str) -> anyhow::Result<()> {
        let subscribed = self
            .call("mining.subscribe", json!(["sv1-load/1.0"]))
            .await?
            .map_err(|error| anyhow!("subscribe refused: {error}"))?;
        self.extranonce1 = hex::decode(subscribed[1].as_str().unwrap_or_default())?;
        self.extranonce2_size = subscribed[2].as_u64().unwrap_or(0) as usize;
        if !(1..=8).contains(&self.extranonce2_size) {
            bail!("extranonce2 size {} is not 1 to 8", self.extranonce2_size);
        }
        self.call("mining.authorize", json!([user, "x"]))
            .await?
            .map_err(|error| anyhow!("authorize refused: {error}"))?;
        self.user = user.to_owned();
        while self.job.is_none() || self.difficulty.is_none() {
            self.next_message().await?;
        }
        Ok(())
    }

    /// Mines and submits shares one at a time until `deadline`.
    async fn run(
        mut self,
        deadline: Instant,
        hashers: Arc<Semaphore>,
    ) -> anyhow::Result<MinerResult> {
        let mut result = MinerResult::default();
        while Instant::now() < deadline {
            let job = self.job.clone().context("a job")?;
            let difficulty = self.difficulty.context("a difficulty")?;
            self.extranonce2 = self.extranonce2.wrapping_add(1);
            let extranonce2 = self.extranonce2.to_be_bytes()[8 - self.extranonce2_size..].to_vec();
            let work = self.work(&job, &extranonce2, difficulty);
            let found = {
                let _permit = hashers.clone().acquire_owned().await?;
                tokio::task::spawn_blocking(move || find_share(&work)).await?
            };
            let Some(nonce) = found else { continue };
            let sent = Instant::now();
            let answer = self
                .call(
                    "mining.submit",
                    json!([
                        self.user,
                        job.id,
                        hex::encode(&extranonce2),
                        format!("{:08x}", job.ntime),
                        format!("{nonce:08x}"),
                    ]),
                )
                .await?;
            result.latencies_us.push(sent.elapsed().as_micros() as u64);
            match answer {
                Ok(Value::Bool(true)) => result.accepted += 1,
                _ => result.rejected += 1,
            }
        }
        Ok(result)
    }

    /// The header to hash for `job` with this extranonce2, at the share target for `difficulty`.
    fn work(&self, job: &Job, extranonce2: &[u8], difficulty: f64) -> Work {
        let coinbase = [
            job.coinb1.as_slice(),
            &self.extranonce1,
            extranonce2,
            &job.coinb2,
        ]
        .concat();
        let mut root = sha256d::Hash::hash(&coinbase).to_byte_array();
        for node in &job.branch {
            root = sha256d::Hash::hash(&[root, *node].concat()).to_byte_array();
        }
        Work {
            channel_id: 0,
            job_id: 0,
            version: job.version,
            merkle_root: root,
            prev_hash: job.prev_hash,
            ntime: job.ntime,
            nbits: job.nbits,
            target: share_target(difficulty),
        }
    }

    /// Sends a request and reads until its response (notifications are applied on the way):
    /// `Ok(result)` or `Err(error)` as the translator answered.
    async fn call(&mut self, method: &str, params: Value) -> anyhow::Result<Result<Value, Value>> {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string() + "\n";
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let message = self.next_message().await?;
            if message.get("method").is_some() || message["id"].as_u64() != Some(id) {
                continue;
            }
            return Ok(match &message["error"] {
                Value::Null => Ok(message["result"].clone()),
                error => Err(error.clone()),
            });
        }
    }

    /// The next message; `mining.notify` and `mining.set_difficulty` update the miner.
    async fn next_message(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        let read = tokio::time::timeout(ANSWER_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .context("the translator did not answer in time")??;
        if read == 0 {
            bail!("the translator closed the connection");
        }
        let message: Value = serde_json::from_str(&line)?;
        match message["method"].as_str() {
            Some("mining.set_difficulty") => self.difficulty = message["params"][0].as_f64(),
            Some("mining.notify") => self.job = Some(parse_notify(&message["params"])?),
            _ => {}
        }
        Ok(message)
    }
}

/// The target of a share at Sv1 `difficulty` (difficulty 1: Bitcoin's, 0xffff << 208), as a
/// float rounded down a little, so that a share that meets it meets the exact target too.
fn share_target(difficulty: f64) -> Target {
    let value = 65535.0 * 2f64.powi(208) / difficulty * (1.0 - 1e-9);
    // The float's top 64 bits, placed at their exponent in a 256-bit little-endian number.
    let exponent = value.log2().floor() as i32;
    let shift = (exponent - 63).max(0);
    let mantissa = (value / 2f64.powi(shift)) as u64;
    let mut bytes = [0u8; 32];
    for bit in 0..64 {
        if mantissa >> bit & 1 == 1 {
            let at = bit + shift as usize;
            if at < 256 {
                bytes[at / 8] |= 1 << (at % 8);
            }
        }
    }
    Target::from_le_bytes(bytes)
}

/// A nonce whose hash meets the share target but not the network's; `None` if none in 2^31.
fn find_share(work: &Work) -> Option<u32> {
    let network = Target::from_compact(CompactTarget::from_consensus(work.nbits));
    work.search_for(rand::random(), u32::MAX / 2, |hash| {
        work.target.is_met_by(hash) && !network.is_met_by(hash)
    })
}

fn parse_notify(params: &Value) -> anyhow::Result<Job> {
    let text = |index: usize| {
        params[index]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("mining.notify parameter {index}"))
    };
    let word =
        |index: usize| -> anyhow::Result<u32> { Ok(u32::from_str_radix(&text(index)?, 16)?) };
    // Sv1 sends the previous block hash as eight 4-byte words, each byte-swapped.
    let mut prev_hash = hex::decode(text(1)?)?;
    for chunk in prev_hash.chunks_mut(4) {
        chunk.reverse();
    }
    let branch = params[4]
        .as_array()
        .context("mining.notify merkle branch")?
        .iter()
        .map(|node| -> anyhow::Result<[u8; 32]> {
            hex::decode(node.as_str().unwrap_or_default())?
                .try_into()
                .map_err(|_| anyhow!("a merkle node of 32 bytes"))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Job {
        id: text(0)?,
        prev_hash: BlockHash::from_byte_array(
            prev_hash
                .try_into()
                .map_err(|_| anyhow!("a prev hash of 32 bytes"))?,
        ),
        coinb1: hex::decode(text(2)?)?,
        coinb2: hex::decode(text(3)?)?,
        branch,
        version: word(5)?,
        nbits: word(6)?,
        ntime: word(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_target_is_the_difficulty_ones_over_the_difficulty() {
        // Difficulty 1: 0xffff << 208, less the rounding margin.
        let one = share_target(1.0);
        assert!(one < Target::MAX_ATTAINABLE_MAINNET);
        assert!((one.difficulty_float() - 1.0).abs() < 1e-6);
        for difficulty in [1.0 / 1024.0, 9.5367431640625e-7, 0.5, 1e6] {
            let target = share_target(difficulty);
            let measured = target.difficulty_float();
            assert!(
                measured >= difficulty && (measured - difficulty) / difficulty < 1e-6,
                "{difficulty}: {measured}"
            );
        }
    }
}
