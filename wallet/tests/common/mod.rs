//! Shared by the wallet's tests: the machine's Redis, the `mint` binary as a real process (so it
//! can be killed -9 and restarted on its store and port), the `wallet` binary, and checks that
//! read the mint's and the wallet's stores directly. The tests play the pool by appending quote
//! messages to a stream of their own.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;
use std::time::Duration;

use cdk::cdk_database::{MintQuotesDatabase, WalletDatabase};
use cdk::nuts::State;
use ehash::{CreateQuote, EpochRelease, LockingPubkey, QuoteMessage, ReleasePolicy, UpdateQuote};
use hashpool_testkit::{free_port, wait_for_within, workspace_binary, Process};
use tempfile::TempDir;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A mint process on its own stream, store and port, and one wallet directory.
pub struct Stack {
    pub dir: TempDir,
    pub stream: String,
    pub mint_url: String,
    pub mint: Process,
    redis: redis::aio::MultiplexedConnection,
    pub locking: LockingPubkey,
}

impl Stack {
    /// Starts the mint and creates the wallet (not yet run against the mint).
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, "").await
    }

    /// The same, with extra top-level lines for the mint's config file.
    pub async fn start_with(test: &str, extra_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stream = format!("{}quotes", hashpool_testkit::unique_redis_prefix(test));
        let port = free_port();
        let config = dir.path().join("mint.toml");
        std::fs::write(
            &config,
            format!(
                r#"listen_address = "127.0.0.1:{port}"
log_dir = "{logs}"
seed_file = "{seed}"
{extra_config}

[database]
sqlite_path = "{store}"

[redis]
url = "{REDIS_URL}"
stream = "{stream}"
consumer_name = "{test}-mint"
batch_size = 512
block_ms = 100
claim_idle_ms = 300
"#,
                logs = dir.path().join("logs").display(),
                seed = dir.path().join("seed").display(),
                store = dir.path().join("mint.sqlite").display(),
            ),
        )
        .unwrap();
        let mint = Process::spawn(
            "mint",
            &workspace_binary("mint"),
            &["--config".to_owned(), config.display().to_string()],
            &dir.path().join("mint.out"),
        )
        .unwrap();
        let redis = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let mut stack = Self {
            stream,
            mint_url: format!("http://127.0.0.1:{port}"),
            mint,
            redis,
            locking: LockingPubkey::from_str(
                "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            )
            .unwrap(),
            dir,
        };
        stack.wait_for_mint().await;
        let pubkey = stack.wallet_ok(&["init", "--if-missing"]);
        stack.locking = LockingPubkey::from_str(pubkey.trim()).unwrap();
        stack
    }

    pub fn wallet_dir(&self) -> PathBuf {
        self.dir.path().join("wallet")
    }

    pub fn mint_store(&self) -> PathBuf {
        self.dir.path().join("mint.sqlite")
    }

    /// Waits until the mint answers `/health`.
    pub async fn wait_for_mint(&mut self) {
        let url = format!("{}/health", self.mint_url);
        let mint = &mut self.mint;
        wait_for_within("the mint's /health", Duration::from_secs(60), async || {
            assert!(mint.is_running(), "the mint exited:\n{}", mint.output());
            cdk_http_client::HttpClient::new()
                .fetch::<serde_json::Value>(&url)
                .await
                .is_ok()
        })
        .await;
    }

    /// `kill -9` the mint.
    pub fn kill_mint(&mut self) {
        self.mint.kill();
    }

    /// Starts the mint again on the same store, stream and port.
    pub async fn restart_mint(&mut self) {
        self.mint.start().unwrap();
        self.wait_for_mint().await;
    }

    /// The pool's part: a `create` per amount for this wallet's key, then PAID updates (in
    /// messages of up to 500 quotes, as the pool releases a template's shares), pipelined.
    /// Returns the quotes' sum.
    pub async fn pay_quotes(&mut self, amounts: &[u64]) -> u64 {
        let creates: Vec<CreateQuote> = amounts
            .iter()
            .map(|amount| {
                CreateQuote::for_share(hashpool_testkit::accepted_share(self.locking, *amount, 102))
            })
            .collect();
        for chunk in creates.chunks(1000) {
            let mut pipe = redis::pipe();
            for create in chunk {
                pipe.xadd(
                    &self.stream,
                    "*",
                    &[(
                        ehash::STREAM_FIELD,
                        QuoteMessage::Create(create.clone()).to_json(),
                    )],
                )
                .ignore();
            }
            for ids in chunk.chunks(500) {
                let update = UpdateQuote::paid(ids.iter().map(|create| create.quote_id).collect());
                pipe.xadd(
                    &self.stream,
                    "*",
                    &[(ehash::STREAM_FIELD, QuoteMessage::Update(update).to_json())],
                )
                .ignore();
            }
            let () = pipe.query_async(&mut self.redis).await.unwrap();
        }
        amounts.iter().sum()
    }

    /// The pool's part under payout epochs: a `sat` create per work in `epoch`, then the
    /// epoch's release of `payout` sats naming its totals.
    pub async fn pay_epoch(&mut self, epoch: u64, works: &[u64], payout: u64) {
        let mut pipe = redis::pipe();
        for &work in works {
            let create = CreateQuote::for_share_under(
                ReleasePolicy::PayoutEpoch,
                hashpool_testkit::accepted_share(self.locking, work, epoch),
            );
            pipe.xadd(
                &self.stream,
                "*",
                &[(ehash::STREAM_FIELD, QuoteMessage::Create(create).to_json())],
            )
            .ignore();
        }
        let release = UpdateQuote::epoch_paid(EpochRelease {
            epoch,
            payout,
            total_work: works.iter().sum(),
            quotes: works.len() as u64,
            payment_id: format!("payment-{epoch}"),
        });
        pipe.xadd(
            &self.stream,
            "*",
            &[(ehash::STREAM_FIELD, QuoteMessage::Update(release).to_json())],
        )
        .ignore();
        let () = pipe.query_async(&mut self.redis).await.unwrap();
    }

    /// Waits until the mint has consumed and acknowledged every entry of the stream.
    pub async fn wait_stream_applied(&mut self, timeout: Duration) {
        let (stream, redis) = (&self.stream, &mut self.redis);
        wait_for_within("the mint to apply the stream", timeout, async || {
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query_async(redis)
                .await
                .unwrap();
            group_field(&groups, "lag") == Some(0) && group_field(&groups, "pending") == Some(0)
        })
        .await;
    }

    pub fn wallet_command(&self, args: &[&str]) -> std::process::Command {
        self.wallet_command_via(&self.mint_url, args)
    }

    /// The wallet talking to the mint at `mint_url` (a proxy in front of it).
    pub fn wallet_command_via(&self, mint_url: &str, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(workspace_binary("wallet"));
        command
            .arg("--dir")
            .arg(self.wallet_dir())
            .arg("--mint")
            .arg(mint_url)
            .args(args);
        command
    }

    /// Runs the wallet to completion.
    pub fn wallet(&self, args: &[&str]) -> Output {
        self.wallet_command(args).output().expect("the wallet runs")
    }

    /// Runs the wallet against the mint at `mint_url` (a proxy in front of it) off the runtime's
    /// threads, so an in-process proxy keeps serving it.
    pub async fn wallet_via(&self, mint_url: &str, args: &[&str]) -> Output {
        let mut command = self.wallet_command_via(mint_url, args);
        tokio::task::spawn_blocking(move || command.output().expect("the wallet runs"))
            .await
            .unwrap()
    }

    /// Runs the wallet and returns its stdout; panics with its stderr if it failed.
    pub fn wallet_ok(&self, args: &[&str]) -> String {
        let output = self.wallet(args);
        assert!(
            output.status.success(),
            "wallet {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts the wallet as a process whose output goes to `name`.log in the test's directory.
    pub fn spawn_wallet(&self, name: &str, args: &[&str]) -> Process {
        let mut all = vec![
            "--dir".to_owned(),
            self.wallet_dir().display().to_string(),
            "--mint".to_owned(),
            self.mint_url.clone(),
        ];
        all.extend(args.iter().map(|arg| arg.to_string()));
        Process::spawn(
            name,
            &workspace_binary("wallet"),
            &all,
            &self.dir.path().join(format!("{name}.log")),
        )
        .unwrap()
    }

    /// The mint's `/metrics` counter `name` (with its labels, if any).
    pub async fn mint_metric(&self, name: &str) -> u64 {
        let text = cdk_http_client::HttpClient::new()
            .get(&format!("{}/metrics", self.mint_url))
            .send()
            .await
            .map(|response| response.body_lossy())
            .unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

fn group_field(groups: &redis::Value, field: &str) -> Option<i64> {
    let redis::Value::Array(groups) = groups else {
        return None;
    };
    let redis::Value::Array(fields) = groups.first()? else {
        return None;
    };
    fields.chunks(2).find_map(|pair| match pair {
        [redis::Value::BulkString(name), redis::Value::Int(value)] if name == field.as_bytes() => {
            Some(*value)
        }
        _ => None,
    })
}

/// What the mint's store says about a key's quotes.
#[derive(Debug, PartialEq, Eq)]
pub struct MintSide {
    pub quotes: usize,
    pub paid: u64,
    pub issued: u64,
    /// Quotes whose issued amount is not exactly their paid amount.
    pub not_fully_issued: usize,
}

/// Reads the mint's SQLite store (the mint may be running: SQLite takes concurrent readers).
pub async fn mint_side(store: &Path, locking: &LockingPubkey) -> MintSide {
    let db = cdk_sqlite::MintSqliteDatabase::new(store.to_path_buf())
        .await
        .unwrap();
    let pubkey = locking.to_string();
    let quotes: Vec<_> = db
        .get_mint_quotes()
        .await
        .unwrap()
        .into_iter()
        .filter(|quote| quote.pubkey.map(|key| key.to_hex()) == Some(pubkey.clone()))
        .collect();
    MintSide {
        quotes: quotes.len(),
        paid: quotes.iter().map(|q| q.amount_paid().value()).sum(),
        issued: quotes.iter().map(|q| q.amount_issued().value()).sum(),
        not_fully_issued: quotes
            .iter()
            .filter(|q| q.amount_issued() != q.amount_paid())
            .count(),
    }
}

/// What the wallet's store holds.
#[derive(Debug, PartialEq, Eq)]
pub struct WalletSide {
    pub unspent: u64,
    pub proofs: usize,
    /// Distinct proofs (by Y): fewer than `proofs` would mean one was stored twice.
    pub distinct: usize,
    pub incomplete_sagas: usize,
    pub reserved_quotes: usize,
}

/// Reads the wallet's SQLite store (the wallet must not be running).
pub async fn wallet_side(dir: &Path) -> WalletSide {
    let db = cdk_sqlite::wallet::WalletSqliteDatabase::new(dir.join("wallet.sqlite"))
        .await
        .unwrap();
    let proofs = db
        .get_proofs(None, None, Some(vec![State::Unspent]), None)
        .await
        .unwrap();
    let ys: std::collections::HashSet<_> = proofs.iter().map(|proof| proof.y).collect();
    WalletSide {
        unspent: proofs
            .iter()
            .map(|proof| u64::from(proof.proof.amount))
            .sum(),
        proofs: proofs.len(),
        distinct: ys.len(),
        incomplete_sagas: db.get_incomplete_sagas().await.unwrap().len(),
        reserved_quotes: db
            .get_mint_quotes()
            .await
            .unwrap()
            .iter()
            .filter(|quote| quote.used_by_operation.is_some())
            .count(),
    }
}

/// The end state every test wants: the mint issued exactly what was paid, once per quote; the
/// wallet holds exactly that as distinct unspent proofs; nothing is reserved or mid-recovery.
pub async fn assert_settled(stack: &Stack, quotes: usize, total: u64) {
    let mint = mint_side(&stack.mint_store(), &stack.locking).await;
    assert_eq!(
        mint,
        MintSide {
            quotes,
            paid: total,
            issued: total,
            not_fully_issued: 0
        },
        "the mint's store"
    );
    let wallet = wallet_side(&stack.wallet_dir()).await;
    assert_eq!(wallet.unspent, total, "the wallet's proofs: {wallet:?}");
    assert_eq!(wallet.distinct, wallet.proofs, "no proof twice: {wallet:?}");
    assert_eq!(wallet.incomplete_sagas, 0, "{wallet:?}");
    assert_eq!(wallet.reserved_quotes, 0, "{wallet:?}");
}

/// Waits until `process`'s output contains `text`.
pub async fn wait_for_output(process: &mut Process, text: &str, timeout: Duration) {
    wait_for_within(format!("{text:?} in the output"), timeout, async || {
        let output = process.output();
        assert!(
            output.contains(text) || process.is_running(),
            "exited before printing {text:?}:\n{output}"
        );
        output.contains(text)
    })
    .await;
}

/// Amounts of realistic shares: a few difficulty levels (one or two outputs each).
pub fn share_amounts(count: usize) -> Vec<u64> {
    const LEVELS: [u64; 4] = [256, 512, 768, 1024];
    (0..count).map(|i| LEVELS[i % LEVELS.len()]).collect()
}

/// A TCP proxy in front of the mint that can cut connections, as a network failure does: while
/// `cut_over` is non-zero, a connection whose client has sent more than that many bytes is
/// closed on both sides (the rest of the request never reaches the mint, no answer reaches the
/// client). Zero passes everything through.
pub struct CuttingProxy {
    pub url: String,
    pub cut_over: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    pub async fn start(upstream: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cut_over = Arc::new(AtomicUsize::new(0));
        let limit = cut_over.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let limit = limit.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let upward = async {
                        let mut sent = 0usize;
                        let mut buffer = vec![0u8; 16 * 1024];
                        loop {
                            let read = match client_read.read(&mut buffer).await {
                                Ok(0) | Err(_) => return,
                                Ok(read) => read,
                            };
                            sent += read;
                            let cut = limit.load(Ordering::SeqCst);
                            if cut > 0 && sent > cut {
                                return; // dropping both halves closes both connections
                            }
                            if server_write.write_all(&buffer[..read]).await.is_err() {
                                return;
                            }
                        }
                    };
                    let downward = tokio::io::copy(&mut server_read, &mut client_write);
                    tokio::select! {
                        _ = upward => {}
                        _ = downward => {}
                    }
                });
            }
        });
        Self {
            url,
            cut_over,
            task,
        }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
