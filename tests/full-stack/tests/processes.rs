//! The whole path on the real binaries: `pool`, `mint`, `mining-device` and two `wallet`s as
//! processes, with the pinned bitcoind and the machine's Redis (a stream of this test's own). The
//! mint is killed with SIGKILL while the miner mines and started again; in the end the wallet has
//! minted exactly the work the pool credited, one quote per accepted share, a token moves between
//! wallets with its proofs spent at the mint, and bitcoind accepted the pool's blocks.

use std::collections::HashSet;

use bitcoincore_rpc::RpcApi;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ehash::{QuoteState, QuoteSummary};
use hashpool_mint::config::{ConsumerConfig, DatabaseConfig};
use hashpool_mint::MintConfig;
use hashpool_pool::config::{BitcoindConfig, DifficultyConfig, RedisConfig, VardiffConfig};
use hashpool_pool::PoolConfig;
use hashpool_testkit::{
    eventually, eventually_within, free_port, regtest_address, unique_redis_prefix,
    workspace_binary, Bitcoind, Process,
};
use serde_json::Value;

/// Shares the miner gets accepted in each phase: mint up, mint killed, mint back.
const SHARES_PER_PHASE: u64 = 8;

struct Stack {
    dir: tempfile::TempDir,
    mint_url: String,
    pool_http: String,
}

impl Stack {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self, process: &str) -> PathBuf {
        self.path(&format!("{process}.out"))
    }

    /// Runs the wallet CLI on the wallet in `<dir>/<name>`; returns stdout, panics with stderr.
    fn wallet(&self, name: &str, args: &[&str]) -> String {
        self.try_wallet(name, args)
            .unwrap_or_else(|stderr| panic!("wallet {args:?} failed: {stderr}"))
    }

    /// Runs the wallet CLI; its stdout when it succeeds, its stderr when it fails.
    fn try_wallet(&self, name: &str, args: &[&str]) -> Result<String, String> {
        let output = Command::new(workspace_binary("wallet"))
            .arg("--dir")
            .arg(self.path(name))
            .arg("--mint")
            .arg(&self.mint_url)
            .args(args)
            .output()
            .expect("the wallet runs");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }

    fn quotes(&self, name: &str) -> Vec<QuoteSummary> {
        serde_json::from_str(&self.wallet(name, &["quotes", "--json"])).unwrap()
    }

    fn balance(&self, name: &str) -> u64 {
        let line = self.wallet(name, &["balance"]);
        line.trim_end_matches(" hash")
            .parse()
            .unwrap_or_else(|_| panic!("balance line: {line}"))
    }

    /// The pool's `/stats`, waiting for the pool to listen if it is starting.
    async fn pool_stats(&self) -> Value {
        let url = format!("{}/stats", self.pool_http);
        eventually("the pool's /stats", async || {
            cdk_http_client::HttpClient::new()
                .fetch::<Value>(&url)
                .await
                .ok()
        })
        .await
    }

    /// Mines until the pool has accepted `count` shares in all.
    async fn mine_until_accepted(&self, count: u64, miner: &mut Process) -> Value {
        let what = format!("the pool to accept {count} shares");
        eventually_within(what, Duration::from_secs(120), async || {
            let stats = self.pool_stats().await;
            assert!(miner.is_running(), "the miner exited:\n{}", miner.output());
            (stats["shares_accepted"].as_u64().unwrap() >= count).then_some(stats)
        })
        .await
    }
}

fn write_toml(path: &Path, config: &impl serde::Serialize) -> String {
    std::fs::write(path, toml::to_string(config).unwrap()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_become_ecash_across_real_processes_and_a_mint_crash() {
    let node = Bitcoind::start().unwrap();
    node.mine(101).unwrap();
    let start_height = node.rpc().get_block_count().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("{}quotes", unique_redis_prefix("processes"));
    let (pool_port, pool_http_port, mint_port) = (free_port(), free_port(), free_port());
    let stack = Stack {
        mint_url: format!("http://127.0.0.1:{mint_port}"),
        pool_http: format!("http://127.0.0.1:{pool_http_port}"),
        dir,
    };

    let pool_config = write_toml(
        &stack.path("pool.toml"),
        &PoolConfig {
            listen_address: format!("127.0.0.1:{pool_port}").parse().unwrap(),
            http_address: format!("127.0.0.1:{pool_http_port}").parse().unwrap(),
            log_dir: stack.path("logs"),
            bitcoind: BitcoindConfig {
                rpc_url: node.rpc_url(),
                cookie_file: Some(node.cookie_file()),
                coinbase_address: regtest_address().to_string(),
                template_poll_ms: 100,
                ..BitcoindConfig::default()
            },
            redis: RedisConfig {
                stream: stream.clone(),
                journal_path: stack.path("pool-journal.jsonl"),
                publisher_id: Some("processes".into()),
                ..RedisConfig::default()
            },
            vardiff: VardiffConfig {
                shares_per_minute: 120.0,
                ..VardiffConfig::default()
            },
            // The least share the unit expresses: many shares quickly from a debug-built miner.
            difficulty: DifficultyConfig {
                minimum: Some(ehash::ShareWork::MIN.difficulty()),
            },
            ..PoolConfig::default()
        },
    );
    let mint_config = write_toml(
        &stack.path("mint.toml"),
        &MintConfig {
            listen_address: format!("127.0.0.1:{mint_port}").parse().unwrap(),
            log_dir: stack.path("logs"),
            seed_file: stack.path("mint/seed"),
            database: DatabaseConfig {
                sqlite_path: stack.path("mint/mint.sqlite"),
                ..DatabaseConfig::default()
            },
            redis: ConsumerConfig {
                stream,
                block_ms: 100,
                // The restarted mint claims what the killed one read but never acknowledged.
                claim_idle_ms: 500,
                ..ConsumerConfig::default()
            },
            ..MintConfig::default()
        },
    );

    let alice = stack.wallet("alice", &["init"]);
    let bob = stack.wallet("bob", &["init"]);
    assert_ne!(alice, bob);
    assert_eq!(stack.wallet("alice", &["pubkey"]), alice);

    let mut pool = Process::spawn(
        "pool",
        &workspace_binary("pool"),
        &["--config".into(), pool_config],
        &stack.log("pool"),
    )
    .unwrap();
    let mut mint = Process::spawn(
        "mint",
        &workspace_binary("mint"),
        &["--config".into(), mint_config],
        &stack.log("mint"),
    )
    .unwrap();
    let mut miner = Process::spawn(
        "mining-device",
        &workspace_binary("mining-device"),
        &[
            "--pool".into(),
            format!("127.0.0.1:{pool_port}"),
            "--identity".into(),
            format!("{alice}.cpu0"),
            "--nominal-hashrate".into(),
            "100000".into(),
            "--log-dir".into(),
            stack.path("logs").display().to_string(),
        ],
        &stack.log("mining-device"),
    )
    .unwrap();

    // Phase 1: the mint is up. Phase 2: it is dead (SIGKILL) while shares keep coming.
    // Phase 3: it is back and catches up from the stream.
    stack
        .mine_until_accepted(SHARES_PER_PHASE, &mut miner)
        .await;
    mint.kill();
    let while_dead = stack
        .mine_until_accepted(2 * SHARES_PER_PHASE, &mut miner)
        .await;
    mint.start().unwrap();
    stack
        .mine_until_accepted(3 * SHARES_PER_PHASE, &mut miner)
        .await;
    let stopped = miner.interrupt(Duration::from_secs(5));
    assert!(
        stopped.is_some_and(|status| status.success()),
        "the miner exits on Ctrl-C while mining:\n{}",
        miner.output()
    );

    // The pool answers every share the miner sent before it sees the connection close; then
    // every quote is published.
    let stats = eventually("the pool to see the miner leave and publish", async || {
        let stats = stack.pool_stats().await;
        (stats["connections"] == 0 && stats["quotes_buffered"] == 0).then_some(stats)
    })
    .await;
    let accepted = stats["shares_accepted"].as_u64().unwrap();
    let credited = stats["work_credited"].as_u64().unwrap();
    assert_eq!(stats["quotes_dropped"], 0);
    eprintln!(
        "pool: {accepted} shares accepted ({} while the mint was dead), {credited} work credited, {} blocks",
        while_dead["shares_accepted"], stats["blocks_found"]
    );

    // Every accepted share: exactly one quote at the mint, locked to alice, PAID, once the mint
    // has caught up.
    let what = format!("the mint to hold {accepted} PAID quotes");
    let quotes = eventually_within(what, Duration::from_secs(60), async || {
        let rows = stack.quotes("alice");
        (rows.len() as u64 == accepted && rows.iter().all(|row| row.state == QuoteState::Paid))
            .then_some(rows)
    })
    .await;
    let ids: HashSet<&str> = quotes.iter().map(|row| row.quote.as_str()).collect();
    assert_eq!(ids.len() as u64, accepted, "no quote twice");
    let quoted: u64 = quotes.iter().map(|row| row.amount).sum();
    assert_eq!(quoted, credited, "the quotes add up to the credited work");

    // Alice mints it all: exactly the credited work.
    let report = stack.wallet("alice", &["mint"]);
    assert!(
        report.starts_with(&format!("minted {credited} hash from {accepted} quotes")),
        "{report}"
    );
    assert_eq!(stack.balance("alice"), credited);
    assert!(stack
        .quotes("alice")
        .iter()
        .all(|row| row.state == QuoteState::Issued && row.amount_issued == row.amount));
    let again = stack.wallet("alice", &["mint"]);
    assert!(again.starts_with("minted 0 hash from 0 quotes"), "{again}");

    // Alice pays bob; the token's proofs are spent at the mint, so it cannot be received twice.
    let payment = credited / 3;
    let token = stack.wallet("alice", &["send", &payment.to_string()]);
    assert!(token.starts_with("cashuB"), "a V4 token: {token}");
    let received = stack.wallet("bob", &["receive", &token]);
    assert!(
        received.starts_with(&format!("received {payment} hash")),
        "{received}"
    );
    assert_eq!(stack.balance("bob"), payment);
    assert_eq!(stack.balance("alice"), credited - payment);
    let replay = stack.try_wallet("bob", &["receive", &token]).unwrap_err();
    assert!(replay.to_lowercase().contains("spent"), "{replay}");
    assert_eq!(stack.balance("bob"), payment);

    // Alice's twelve words alone bring back her key and her unspent ecash (NUT-09).
    let phrase = std::fs::read_to_string(stack.path("alice/mnemonic")).unwrap();
    let restored = stack.wallet("alice-restored", &["init", "--phrase", phrase.trim()]);
    assert_eq!(restored, alice, "the same locking key");
    assert_eq!(stack.balance("alice-restored"), credited - payment);

    // The pool's blocks reached bitcoind, paying the pool's coinbase address.
    // Nothing else mines on this node: the chain grew by exactly the blocks the pool found.
    let found = eventually("bitcoind to hold exactly the pool's blocks", async || {
        let found = stack.pool_stats().await["blocks_found"].as_u64().unwrap();
        let grown = node.rpc().get_block_count().unwrap() - start_height;
        (found == grown).then_some(found)
    })
    .await;
    assert!(found > 0, "the pool found blocks");
    let tip = node.rpc().get_best_block_hash().unwrap();
    let block = node.rpc().get_block(&tip).unwrap();
    assert_eq!(
        block.txdata[0].output[0].script_pubkey,
        regtest_address().script_pubkey()
    );

    assert!(pool.is_running(), "the pool stayed up:\n{}", pool.output());
    assert!(mint.is_running(), "the mint stayed up:\n{}", mint.output());
    mint.terminate(Duration::from_secs(10));
    let stopped = pool.terminate(Duration::from_secs(5));
    assert!(
        stopped.is_some_and(|status| status.success()),
        "the pool exits on SIGTERM within 5 s:\n{}",
        pool.output()
    );
}
