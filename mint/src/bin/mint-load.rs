//! Mint benchmark: pushes N quotes onto a fresh stream of the local Redis as the pool publishes
//! them (creates, then one PAID update per 256), starts the mint in-process on a fresh SQLite
//! store (or a fresh PostgreSQL schema), and measures how fast it stores and pays them; then
//! mints quotes over HTTP with a cdk wallet (NUT-20 signed; one quote per NUT-04 request, or
//! `--mint-batch` quotes per NUT-29 request) and reports quotes minted per second; last, prunes
//! the minted quotes as the retention pruner does (`prune_batch` a transaction), and reports
//! quotes pruned per second.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use cdk::amount::SplitTarget;
use cdk::nuts::{CurrencyUnit, MintQuoteState, PaymentMethod, SecretKey};
use cdk::wallet::WalletBuilder;
use cdk::Amount;
use clap::Parser;
use ehash::{AcceptedShare, CreateQuote, LockingPubkey, QuoteMessage, UpdateQuote};
use hashpool_mint::config::{ConsumerConfig, DatabaseConfig};
use hashpool_mint::{MintConfig, MintServer};
use redis::AsyncCommands;

#[derive(Parser)]
struct Args {
    /// Quotes pushed through the stream.
    #[arg(long, default_value_t = 10_000)]
    quotes: usize,
    /// Quotes then minted over HTTP by a wallet.
    #[arg(long, default_value_t = 200)]
    mints: usize,
    /// Quotes a mint request carries: 1 mints each with its own NUT-04 request, more sends
    /// NUT-29 batch requests of that many quotes. Requests go one at a time.
    #[arg(long, default_value_t = 1)]
    mint_batch: usize,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// A PostgreSQL connection string (e.g. `host=127.0.0.1 user=postgres dbname=test`): the
    /// store goes in a fresh schema there instead of a SQLite file.
    #[arg(long)]
    postgres: Option<String>,
    /// Stream entries the mint reads, and applies in one store transaction, at a time.
    #[arg(long, default_value_t = ConsumerConfig::default().batch_size)]
    batch_size: usize,
    /// SQLite's page cache per connection, MiB (the mint's `database.sqlite_cache_mib`).
    #[arg(long, default_value_t = hashpool_mint::config::DatabaseConfig::default().sqlite_cache_mib)]
    sqlite_cache_mib: u32,
    /// Mint processes' worth of consumers (each a mint in-process, one consumer group); more
    /// than one needs `--postgres`.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Instead: the HTTP mints alone against another mint at this URL, a cdk-mintd with its
    /// fake Lightning wallet (`benches/vs-cdk-mintd`): `--mints` bolt11 quotes in sat of the
    /// same amounts, NUT-20 signed, paid by the fake wallet, then minted as `--mint-batch` says.
    #[arg(long)]
    against: Option<String>,
    /// Instead: the HTTP mints alone against hashpool's mint running as a process of its own
    /// at this URL, consuming `--stream` of `--redis`: `--mints` quotes are pushed as the pool
    /// publishes them, and minted once the mint has applied them all.
    #[arg(long, requires = "stream")]
    against_hashpool: Option<String>,
    /// The stream the mint at `--against-hashpool` consumes.
    #[arg(long)]
    stream: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.mint_batch >= 1, "--mint-batch is at least 1");
    if let Some(url) = &args.against {
        return mint_against(url, args.mints, args.mint_batch).await;
    }
    if let (Some(url), Some(stream)) = (&args.against_hashpool, &args.stream) {
        return mint_against_hashpool(url, stream, &args).await;
    }
    let dir = tempfile::tempdir()?;
    let _log = match std::env::var_os("MINT_LOAD_TRACE") {
        Some(_) => Some(hashpool_service::init_logging("mint-load", dir.path())?),
        None => None,
    };
    let stream = format!("bench:mint:{}:quotes", uuid::Uuid::new_v4().simple());
    let mut redis = connect_redis(&args.redis).await?;
    let (secret, creates) = miner_with_creates(args.quotes)?;

    // The workers start on an empty stream; the clock runs from the first message pushed to
    // the last quote PAID.
    let postgres = args
        .postgres
        .as_ref()
        .map(|url| format!("{url} schema=bench_{}", uuid::Uuid::new_v4().simple()));
    anyhow::ensure!(
        args.workers == 1 || postgres.is_some(),
        "several workers share a PostgreSQL store"
    );
    let mut servers = Vec::with_capacity(args.workers);
    for worker in 0..args.workers {
        let config = bench_mint_config(
            &dir.path().join(format!("worker-{worker}")),
            &dir.path().join("seed"),
            &args,
            &stream,
            postgres.clone(),
            worker,
        );
        servers.push(MintServer::start(config).await?);
    }
    let started = Instant::now();
    push_as_the_pool(&mut redis, &stream, &creates).await?;
    let paid = || -> u64 {
        servers
            .iter()
            .map(|server| server.metrics().quotes_paid.get())
            .sum()
    };
    while paid() < args.quotes as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ingest = started.elapsed();
    let server = &servers[0];

    let to_mint = &creates[..args.mints.min(creates.len())];
    let wallet = wallet_holding(&server.url(), to_mint, &secret).await?;
    let mint_time = mint_creates(&wallet, to_mint, args.mint_batch).await?;
    let (pruned, prune_time) = prune_minted(server).await?;
    anyhow::ensure!(
        pruned == to_mint.len() as u64,
        "pruned {pruned} of the minted quotes"
    );

    println!("| store | workers | batch | quotes | stored + PAID from the stream | quotes/s | HTTP mints ({}) | quotes minted/s | minted quotes pruned | quotes pruned/s |", requests_named(args.mint_batch));
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {} | {} | {:.2} s | {:.0} | {} in {:.2} s | {:.1} | {pruned} in {:.2} s | {:.0} |",
        if args.postgres.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        args.workers,
        args.batch_size,
        args.quotes,
        ingest.as_secs_f64(),
        args.quotes as f64 / ingest.as_secs_f64(),
        to_mint.len(),
        mint_time.as_secs_f64(),
        to_mint.len() as f64 / mint_time.as_secs_f64(),
        prune_time.as_secs_f64(),
        pruned as f64 / prune_time.as_secs_f64(),
    );
    for server in servers {
        server.shutdown().await;
    }
    let _: usize = redis
        .del(&[stream.clone(), ehash::dead_letter_stream(&stream)])
        .await?;
    Ok(())
}

/// Prunes every issued quote (created before the next second, so all of them), as the mint's
/// pruner does past the retention window: how many, and how long it took.
async fn prune_minted(server: &MintServer) -> anyhow::Result<(u64, Duration)> {
    let batch = hashpool_mint::config::RetentionConfig::default().prune_batch;
    let created_before = cdk::util::unix_time() + 1;
    let started = Instant::now();
    let pruned = server
        .quotes()
        .prune_all_issued(created_before, batch)
        .await?;
    Ok((pruned, started.elapsed()))
}

/// The HTTP phase against hashpool's mint in a process of its own at `url`, reading `stream`.
async fn mint_against_hashpool(url: &str, stream: &str, args: &Args) -> anyhow::Result<()> {
    let mut redis = connect_redis(&args.redis).await?;
    let (secret, creates) = miner_with_creates(args.mints)?;
    push_as_the_pool(&mut redis, stream, &creates).await?;
    // The mint acknowledges an entry once its effect is committed: nothing left to deliver or
    // pending in its group means every quote is stored and PAID.
    let pushed = creates.len() + creates.len().div_ceil(PUBLISH_BATCH);
    loop {
        let groups: redis::streams::StreamInfoGroupsReply = redis.xinfo_groups(stream).await?;
        let applied = groups.groups.iter().any(|group| {
            group.name == ehash::MINT_CONSUMER_GROUP
                && group.entries_read >= Some(pushed)
                && group.pending == 0
        });
        if applied {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wallet = wallet_holding(url, &creates, &secret).await?;
    let mint_time = mint_creates(&wallet, &creates, args.mint_batch).await?;
    print_against_row(url, args.mint_batch, creates.len(), mint_time);
    Ok(())
}

/// The table of an HTTP phase against a mint in another process.
fn print_against_row(url: &str, batch: usize, quotes: usize, mint_time: Duration) {
    println!(
        "| mint | HTTP mints ({}) | quotes minted/s |",
        requests_named(batch)
    );
    println!("|---|---|---|");
    println!(
        "| {url} | {quotes} in {:.2} s | {:.1} |",
        mint_time.as_secs_f64(),
        quotes as f64 / mint_time.as_secs_f64()
    );
}

/// The HTTP phase against the mint at `url` (unit sat, bolt11 quotes paid by its fake wallet).
async fn mint_against(url: &str, mints: usize, batch: usize) -> anyhow::Result<()> {
    let wallet = bench_wallet(url, CurrencyUnit::Sat).await?;
    let mut quotes = Vec::with_capacity(mints);
    for _ in 0..mints {
        let amount = Amount::from(random_amount());
        let quote = wallet
            .mint_quote(PaymentMethod::BOLT11, Some(amount), None, None)
            .await?;
        quotes.push((quote.id, u64::from(amount)));
    }
    for (id, _) in &quotes {
        while wallet.check_mint_quote_status(id).await?.state != MintQuoteState::Paid {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let ids: Vec<String> = quotes.iter().map(|(id, _)| id.clone()).collect();
    let expected: u64 = quotes.iter().map(|(_, amount)| amount).sum();
    let mint_time = mint_all(&wallet, &ids, batch, expected).await?;
    print_against_row(url, batch, quotes.len(), mint_time);
    Ok(())
}

/// How the HTTP phase sends its quotes, for the table's header.
fn requests_named(batch: usize) -> String {
    match batch {
        1 => "NUT-04, one quote a request, NUT-20 signed, sequential".to_owned(),
        _ => format!("NUT-29, {batch} quotes a request, NUT-20 signed, sequential"),
    }
}

/// Mints the PAID hashpool quotes of `creates` the wallet holds (see [`mint_all`]).
async fn mint_creates(
    wallet: &cdk::wallet::Wallet,
    creates: &[CreateQuote],
    batch: usize,
) -> anyhow::Result<Duration> {
    let ids: Vec<String> = creates
        .iter()
        .map(|create| create.quote_id.to_string())
        .collect();
    let expected = creates.iter().map(|create| create.amount).sum();
    mint_all(wallet, &ids, batch, expected).await
}

/// Mints the PAID quotes `ids` the wallet holds, one request at a time: each quote with its own
/// NUT-04 request when `batch` is 1, else NUT-29 batches of `batch` quotes, and checks the
/// wallet then holds exactly `expected`. Returns the time the requests took. Outputs follow the
/// plain binary split, as the hashpool wallet asks.
async fn mint_all(
    wallet: &cdk::wallet::Wallet,
    ids: &[String],
    batch: usize,
    expected: u64,
) -> anyhow::Result<Duration> {
    let split = || SplitTarget::Values(Vec::new());
    let minting = Instant::now();
    if batch == 1 {
        for id in ids {
            wallet
                .mint(id, split(), None)
                .await
                .with_context(|| format!("minting {id}"))?;
        }
    } else {
        for chunk in ids.chunks(batch) {
            let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
            wallet
                .batch_mint(&chunk, split(), None, None)
                .await
                .with_context(|| format!("minting a batch from {}", chunk[0]))?;
        }
    }
    let elapsed = minting.elapsed();
    anyhow::ensure!(
        u64::from(wallet.total_balance().await?) == expected,
        "minted total differs"
    );
    Ok(elapsed)
}

/// A share's credited work as the benchmark makes them: 1 to 64 units, so a mint signs one to
/// seven outputs.
fn random_amount() -> u64 {
    1 + rand::random::<u64>() % 64
}

async fn connect_redis(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    Ok(redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?)
}

/// A miner's NUT-20 secret, and `count` of its shares' creates, of random small amounts.
fn miner_with_creates(count: usize) -> anyhow::Result<(SecretKey, Vec<CreateQuote>)> {
    let secret = SecretKey::generate();
    let key = LockingPubkey::from_str(&secret.public_key().to_hex())?;
    Ok((secret, random_creates(key, count)))
}

/// `count` shares' creates locked to `key`, of random small amounts.
fn random_creates(key: LockingPubkey, count: usize) -> Vec<CreateQuote> {
    (0..count)
        .map(|_| {
            CreateQuote::for_share(AcceptedShare {
                share_hash: bitcoin::hashes::Hash::from_byte_array(rand::random()),
                locking_pubkey: key,
                credited_work: random_amount(),
                channel_id: 1,
                job_id: 1,
                template_id: 1,
                epoch: 1,
                accepted_at: cdk::util::unix_time(),
            })
        })
        .collect()
}

/// The shares in one of the pool's publish batches (512 messages: a create and its update each).
const PUBLISH_BATCH: usize = 256;

/// Appends the creates as the pool publishes them: each publish batch goes out as its
/// [`PUBLISH_BATCH`] creates, then one update releasing them.
async fn push_as_the_pool(
    redis: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    creates: &[CreateQuote],
) -> anyhow::Result<()> {
    for chunk in creates.chunks(PUBLISH_BATCH) {
        let mut pipe = redis::pipe();
        let release = UpdateQuote::paid(chunk.iter().map(|create| create.quote_id).collect());
        for message in chunk
            .iter()
            .map(|create| QuoteMessage::Create(create.clone()))
            .chain([QuoteMessage::Update(release)])
        {
            pipe.xadd(stream, "*", &[(ehash::STREAM_FIELD, message.to_json())])
                .ignore();
        }
        pipe.query_async::<()>(redis).await?;
    }
    Ok(())
}

fn bench_mint_config(
    dir: &std::path::Path,
    seed_file: &std::path::Path,
    args: &Args,
    stream: &str,
    postgres_url: Option<String>,
    worker: usize,
) -> MintConfig {
    let mint = MintConfig::ephemeral(dir, stream.to_owned());
    MintConfig {
        seed_file: seed_file.to_owned(),
        database: DatabaseConfig {
            postgres_url,
            sqlite_cache_mib: args.sqlite_cache_mib,
            ..mint.database
        },
        redis: ConsumerConfig {
            url: args.redis.clone(),
            consumer_name: Some(format!("bench-{worker}")),
            batch_size: args.batch_size,
            block_ms: 50,
            ..mint.redis
        },
        ..mint
    }
}

/// A fresh in-memory cdk wallet on the mint at `url` in `unit`, without the wallet's polite
/// client-side pacing (a burst of a few requests, then about one a second): this measures mints.
async fn bench_wallet(url: &str, unit: CurrencyUnit) -> anyhow::Result<cdk::wallet::Wallet> {
    let seed: [u8; 64] = rand::random::<[[u8; 32]; 2]>()
        .concat()
        .try_into()
        .expect("64 bytes");
    Ok(WalletBuilder::new()
        .mint_url(url.parse()?)
        .unit(unit)
        .localstore(Arc::new(cdk_sqlite::wallet::memory::empty().await?))
        .seed(seed)
        .without_rate_limiting()
        .build()?)
}

/// A cdk wallet on the hashpool mint at `url` holding the PAID `quotes` with their NUT-20 key.
async fn wallet_holding(
    url: &str,
    quotes: &[CreateQuote],
    secret: &SecretKey,
) -> anyhow::Result<cdk::wallet::Wallet> {
    let wallet = bench_wallet(url, CurrencyUnit::custom(ehash::UNIT)).await?;
    for create in quotes {
        wallet
            .localstore
            .add_mint_quote(cdk::wallet::MintQuote::new(
                create.quote_id.to_string(),
                wallet.mint_url.clone(),
                PaymentMethod::Custom(ehash::PAYMENT_METHOD.into()),
                Some(Amount::from(create.amount)),
                wallet.unit.clone(),
                format!("ehash:{}", create.share_hash),
                create.created_at + 86_400,
                Some(secret.clone()),
            ))
            .await?;
    }
    // The wallet learns each quote is PAID before the clock starts, as the cdk-mintd run's
    // wallet does (and as the hashpool wallet does from the signed lookup): otherwise cdk's
    // wallet asks the mint for each quote's state inside the timed mint.
    for create in quotes {
        let quote = wallet
            .check_mint_quote_status(&create.quote_id.to_string())
            .await?;
        anyhow::ensure!(
            quote.amount_mintable() == Amount::from(create.amount),
            "quote {} is not PAID its amount",
            create.quote_id
        );
    }
    Ok(wallet)
}
