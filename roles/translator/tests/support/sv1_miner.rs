//! A small but real Sv1 miner for tests: JSON-RPC over TCP, written from the Sv1 conventions
//! (not with the translator's library), that builds each coinbase from coinb1 + extranonce1 +
//! extranonce2 + coinb2, folds the merkle branch, hashes real block headers and searches nonces
//! until a hash meets the difficulty it was told.

use std::time::Duration;

use serde_json::{json, Value};
use stratum_core::bitcoin::block::{Header, Version};
use stratum_core::bitcoin::hashes::{sha256d, Hash};
use stratum_core::bitcoin::{BlockHash, CompactTarget, Target, TxMerkleNode};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const READ_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    pub prev_hash: BlockHash,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branch: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    pub clean: bool,
}

/// A JSON-RPC error as `(code, message)`.
pub type RpcError = (i64, String);

pub struct Sv1Miner {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    next_id: u64,
    pub user: String,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    pub version_mask: Option<u32>,
    /// Every difficulty received, latest last.
    pub difficulties: Vec<f64>,
    pub job: Option<Job>,
    pub notifies: usize,
    extranonce2: u64,
}

impl Sv1Miner {
    pub async fn connect(address: std::net::SocketAddr) -> Self {
        let stream = TcpStream::connect(address)
            .await
            .expect("the translator listens");
        let (reader, writer) = stream.into_split();
        Self {
            reader: BufReader::new(reader),
            writer,
            next_id: 1,
            user: String::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            version_mask: None,
            difficulties: Vec::new(),
            job: None,
            notifies: 0,
            extranonce2: rand::random::<u32>() as u64,
        }
    }

    /// configure (version rolling), subscribe, authorize: what a Bitaxe does on connect.
    pub async fn handshake(address: std::net::SocketAddr, user: &str) -> Self {
        let mut miner = Self::connect(address).await;
        miner.configure().await;
        miner.subscribe().await;
        miner.authorize(user).await.expect("authorized");
        miner
    }

    pub async fn send_raw(&mut self, line: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(line).await
    }

    /// Sends a request; returns its id.
    pub async fn send(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let line = json!({"id": id, "method": method, "params": params}).to_string() + "\n";
        self.writer
            .write_all(line.as_bytes())
            .await
            .expect("the translator takes the request");
        id
    }

    /// The next message; notifications update the miner's state on the way. `None` on EOF.
    pub async fn next_message(&mut self) -> Option<Value> {
        let mut line = String::new();
        let read = tokio::time::timeout(READ_TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("the translator answers in time")
            .ok()?;
        if read == 0 {
            return None;
        }
        let message: Value = serde_json::from_str(&line).expect("the translator sends JSON");
        if std::env::var_os("SV1_TRACE").is_some() {
            eprintln!("<- {}", line.trim_end());
        }
        match message["method"].as_str() {
            Some("mining.set_difficulty") => {
                self.difficulties
                    .push(message["params"][0].as_f64().expect("a number"));
            }
            Some("mining.notify") => {
                self.job = Some(parse_notify(&message["params"]));
                self.notifies += 1;
            }
            _ => {}
        }
        Some(message)
    }

    /// Sends a request and reads until its response: `Ok(result)` or `Err((code, message))`.
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.send(method, params).await;
        self.response(id).await
    }

    pub async fn response(&mut self, id: u64) -> Result<Value, RpcError> {
        loop {
            let message = self
                .next_message()
                .await
                .expect("the connection stays open");
            if message["id"].as_u64() != Some(id) || message.get("method").is_some() {
                continue;
            }
            return match &message["error"] {
                Value::Null => Ok(message["result"].clone()),
                error => Err((
                    error[0].as_i64().expect("an error code"),
                    error[1].as_str().unwrap_or_default().to_owned(),
                )),
            };
        }
    }

    pub async fn configure(&mut self) {
        let result = self
            .call(
                "mining.configure",
                json!([["version-rolling"], {"version-rolling.mask": "ffffffff", "version-rolling.min-bit-count": 2}]),
            )
            .await
            .expect("configure answered");
        assert_eq!(result["version-rolling"], json!(true), "{result}");
        let mask = result["version-rolling.mask"].as_str().expect("a mask");
        self.version_mask = Some(u32::from_str_radix(mask, 16).expect("hex mask"));
    }

    pub async fn subscribe(&mut self) {
        let result = self
            .call("mining.subscribe", json!(["test-miner/1.0"]))
            .await
            .expect("subscribe answered");
        self.extranonce1 = hex::decode(result[1].as_str().expect("extranonce1")).unwrap();
        self.extranonce2_size = result[2].as_u64().expect("extranonce2_size") as usize;
    }

    pub async fn authorize(&mut self, user: &str) -> Result<Value, RpcError> {
        let result = self.call("mining.authorize", json!([user, "x"])).await?;
        self.user = user.to_owned();
        Ok(result)
    }

    /// Reads messages until there is a job and a difficulty to mine it at.
    pub async fn wait_for_work(&mut self) {
        while self.job.is_none() || self.difficulties.is_empty() {
            self.next_message()
                .await
                .expect("the connection stays open");
        }
    }

    /// Reads messages until `condition` holds.
    pub async fn wait_until(&mut self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !condition(self) {
            tokio::time::timeout_at(deadline, self.next_message())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
                .expect("the connection stays open");
        }
    }

    /// Mines a share on the current job at the current difficulty: the submit parameters.
    pub fn mine(&mut self) -> Value {
        let job = self.job.clone().expect("a job");
        let difficulty = *self.difficulties.last().expect("a difficulty");
        loop {
            self.extranonce2 = self.extranonce2.wrapping_add(1);
            let extranonce2 =
                self.extranonce2.to_be_bytes()[8 - self.extranonce2_size.min(8)..].to_vec();
            let mut coinbase = job.coinb1.clone();
            coinbase.extend_from_slice(&self.extranonce1);
            coinbase.extend_from_slice(&extranonce2);
            coinbase.extend_from_slice(&job.coinb2);
            let mut root = sha256d::Hash::hash(&coinbase).to_byte_array();
            for node in &job.branch {
                root = sha256d::Hash::hash(&[root, *node].concat()).to_byte_array();
            }
            let mask = self.version_mask.unwrap_or(0);
            let version_bits = rand::random::<u32>() & mask;
            let mut header = Header {
                version: Version::from_consensus(((job.version & !mask) | version_bits) as i32),
                prev_blockhash: job.prev_hash,
                merkle_root: TxMerkleNode::from_byte_array(root),
                time: job.ntime,
                bits: CompactTarget::from_consensus(job.nbits),
                nonce: rand::random(),
            };
            for _ in 0..1_000_000 {
                let hash = header.block_hash();
                if Target::from_le_bytes(hash.to_byte_array()).difficulty_float() >= difficulty {
                    let mut params = vec![
                        json!(self.user),
                        json!(job.id),
                        json!(hex::encode(&extranonce2)),
                        json!(format!("{:08x}", header.time)),
                        json!(format!("{:08x}", header.nonce)),
                    ];
                    if self.version_mask.is_some() {
                        params.push(json!(format!("{version_bits:08x}")));
                    }
                    return Value::Array(params);
                }
                header.nonce = header.nonce.wrapping_add(1);
            }
        }
    }

    /// Mines and submits one share; the translator's answer.
    pub async fn submit_share(&mut self) -> Result<Value, RpcError> {
        let params = self.mine();
        self.call("mining.submit", params).await
    }

    /// Mines until `count` shares are accepted; shares made stale by a new block (regtest finds
    /// one with nearly every share) or an upstream reconnect are mined again.
    pub async fn mine_accepted(&mut self, count: usize) {
        let (mut accepted, mut rejected) = (0, Vec::new());
        while accepted < count {
            self.wait_for_work().await;
            match self.submit_share().await {
                Ok(result) => {
                    assert_eq!(result, json!(true));
                    accepted += 1;
                }
                Err(error) => rejected.push(error),
            }
            assert!(
                rejected.len() < 5 * count + 20,
                "too many rejections: {rejected:?}"
            );
        }
    }
}

fn parse_notify(params: &Value) -> Job {
    let text = |index: usize| params[index].as_str().expect("a string").to_owned();
    let word = |index: usize| u32::from_str_radix(&text(index), 16).expect("a hex word");
    // Sv1 sends the previous block hash as eight 4-byte words, each byte-swapped.
    let mut prev_hash = hex::decode(text(1)).expect("hex prev hash");
    for chunk in prev_hash.chunks_mut(4) {
        chunk.reverse();
    }
    Job {
        id: text(0),
        prev_hash: BlockHash::from_byte_array(prev_hash.try_into().expect("32 bytes")),
        coinb1: hex::decode(text(2)).expect("hex coinb1"),
        coinb2: hex::decode(text(3)).expect("hex coinb2"),
        branch: params[4]
            .as_array()
            .expect("a branch")
            .iter()
            .map(|node| {
                hex::decode(node.as_str().expect("hex"))
                    .expect("hex")
                    .try_into()
                    .expect("32 bytes")
            })
            .collect(),
        version: word(5),
        nbits: word(6),
        ntime: word(7),
        clean: params[8].as_bool().expect("clean_jobs"),
    }
}
