//! Two `mint` processes as workers of one consumer group on one PostgreSQL store (the PostgreSQL
//! at 127.0.0.1:5432, database `test`, a schema of this test's own), fed by the real Redis.
//! One worker is killed with SIGKILL mid-run: the other claims what it left pending, and in the
//! end every quote is stored once and PAID once. Both serve the cashu API: a wallet mints
//! through each.

mod common;

use std::time::Duration;

use cdk::amount::SplitTarget;
use cdk::mint::QuoteId;
use cdk::nuts::{CurrencyUnit, MintQuoteState};
use cdk_common::database::MintQuotesDatabase;
use common::{adopt_quote, miner_key, share, REDIS_URL};
use ehash::{CreateQuote, QuoteMessage, UpdateQuote};
use hashpool_mint::config::{ConsumerConfig, DatabaseConfig};
use hashpool_mint::MintConfig;
use hashpool_testkit::{free_port, wait_for, Process};
use redis::AsyncCommands;

const QUOTES: usize = 12_000;
/// What the pool puts in one publish batch: its creates, then one update releasing them.
const POOL_BATCH: usize = 256;

struct Worker {
    process: Process,
    url: String,
}

impl Worker {
    fn start(name: &str, dir: &std::path::Path, stream: &str, postgres_url: &str) -> Self {
        let port = free_port();
        let mint = MintConfig::ephemeral(&dir.join(name), stream.to_owned());
        let config = MintConfig {
            listen_address: format!("127.0.0.1:{port}").parse().unwrap(),
            // One seed for both: the same keysets, so either signs what the other's wallet holds.
            seed_file: dir.join("seed"),
            database: DatabaseConfig {
                postgres_url: Some(postgres_url.to_owned()),
                ..mint.database
            },
            redis: ConsumerConfig {
                consumer_name: Some(name.to_owned()),
                claim_idle_ms: 1_000,
                ..mint.redis
            },
            ..mint
        };
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
        let process = Process::spawn(
            name,
            std::path::Path::new(env!("CARGO_BIN_EXE_mint")),
            &["--config".into(), path.display().to_string()],
            &dir.join(format!("{name}.log")),
        )
        .unwrap();
        Self {
            process,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_healthy(&self) {
        let address = self.url.trim_start_matches("http://").to_owned();
        wait_for(format!("{} answering", self.url), async || {
            tokio::net::TcpStream::connect(&address).await.is_ok()
                && common::http_get(&format!("{}/v1/info", self.url)).await.0 == 200
        })
        .await;
    }

    /// A counter from the worker's `/metrics`.
    async fn counter(&self, name: &str) -> u64 {
        let (_, body) = common::http_get(&format!("{}/metrics", self.url)).await;
        body.as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("hashpool_mint_{name}_total ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Pushes the quotes as the pool publishes them: batches of creates, each followed by one
/// update that releases them.
async fn publish(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    creates: &[CreateQuote],
) {
    for batch in creates.chunks(POOL_BATCH) {
        let mut pipe = redis::pipe();
        let release = UpdateQuote::paid(batch.iter().map(|create| create.quote_id).collect());
        for message in batch
            .iter()
            .map(|create| QuoteMessage::Create(create.clone()))
            .chain([QuoteMessage::Update(release)])
        {
            pipe.xadd(stream, "*", &[(ehash::STREAM_FIELD, message.to_json())])
                .ignore();
        }
        pipe.query_async::<()>(redis).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgres_survive_a_kill_and_pay_every_quote_once() {
    let dir = tempfile::tempdir().unwrap();
    let schema = format!("hashpool_{}", uuid::Uuid::new_v4().simple());
    let postgres_url =
        format!("host=127.0.0.1 port=5432 user=postgres dbname=test schema={schema}");
    let stream = format!(
        "{}quotes",
        hashpool_testkit::unique_redis_prefix("mint-workers")
    );
    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();

    // The first worker makes the schema; then the second joins.
    let mut first = Worker::start("worker-a", dir.path(), &stream, &postgres_url);
    first.wait_healthy().await;
    let mut second = Worker::start("worker-b", dir.path(), &stream, &postgres_url);
    second.wait_healthy().await;

    let (secret, key) = miner_key();
    let creates: Vec<CreateQuote> = (0..QUOTES).map(|i| share(key, 1 + i as u64 % 64)).collect();
    publish(&mut redis, &stream, &creates).await;

    // Mid-run: the first worker has stored some quotes, and holds entries it read but has not
    // acknowledged, when it is killed.
    wait_for("worker-a to store its first quotes", async || {
        first.counter("quotes_created").await >= 500
    })
    .await;
    first.process.kill();
    let pending: redis::streams::StreamPendingCountReply = redis
        .xpending_consumer_count(
            &stream,
            ehash::MINT_CONSUMER_GROUP,
            "-",
            "+",
            10_000,
            "worker-a",
        )
        .await
        .unwrap();
    let left_pending = pending.ids.len() as u64;
    assert!(
        left_pending > 0,
        "the kill left entries read but unacknowledged"
    );

    // The survivor claims them and finishes the stream.
    wait_for("every entry applied and acknowledged", async || {
        let groups: redis::streams::StreamInfoGroupsReply =
            redis.xinfo_groups(&stream).await.unwrap();
        groups.groups.iter().any(|group| {
            group.name == ehash::MINT_CONSUMER_GROUP && group.pending == 0 && group.lag == Some(0)
        })
    })
    .await;
    assert!(second.counter("claimed").await >= left_pending);
    let dead: usize = redis
        .xlen(ehash::dead_letter_stream(&stream))
        .await
        .unwrap();
    assert_eq!(dead, 0, "nothing dead-lettered");

    // Every quote once, PAID once for exactly its work.
    let store = cdk_postgres::MintPgDatabase::new(postgres_url.as_str())
        .await
        .unwrap();
    for chunk in creates.chunks(1_000) {
        let ids: Vec<QuoteId> = chunk
            .iter()
            .map(|create| QuoteId::from(create.quote_id))
            .collect();
        let quotes = store.get_mint_quotes_by_ids(&ids).await.unwrap();
        for (create, quote) in chunk.iter().zip(quotes) {
            let quote = quote.unwrap_or_else(|| panic!("quote {} stored", create.quote_id));
            assert_eq!(quote.state(), MintQuoteState::Paid);
            assert_eq!(quote.amount_paid().value(), create.amount);
            assert_eq!(
                quote.payments.len(),
                1,
                "quote {} paid once",
                create.quote_id
            );
        }
    }

    // The killed worker comes back; a wallet mints through each worker.
    first.process.start().unwrap();
    first.wait_healthy().await;
    let mut minted = 0;
    for (worker, create) in [(&first, &creates[0]), (&second, &creates[1])] {
        let seed: [u8; 64] = rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap();
        let store = cdk_sqlite::wallet::memory::empty().await.unwrap();
        let wallet = cdk::wallet::Wallet::new(
            &worker.url,
            CurrencyUnit::custom(ehash::UNIT),
            std::sync::Arc::new(store),
            seed,
            None,
        )
        .unwrap();
        adopt_quote(&wallet, create, &secret).await;
        let proofs = wallet
            .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
            .await
            .unwrap_or_else(|error| panic!("minting through {}: {error}", worker.url));
        let amount: u64 = proofs.iter().map(|proof| u64::from(proof.amount)).sum();
        assert_eq!(amount, create.amount);
        minted += amount;
    }
    assert_eq!(minted, creates[0].amount + creates[1].amount);

    first.process.terminate(Duration::from_secs(10));
    second.process.terminate(Duration::from_secs(10));
    let _: usize = redis
        .del(&[stream.clone(), ehash::dead_letter_stream(&stream)])
        .await
        .unwrap();
}
