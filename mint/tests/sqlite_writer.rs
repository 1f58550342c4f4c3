//! The mint's own SQLite batch writer (`quotes/sqlite.rs`) on real SQLite files beside cdk's:
//! the mint on SQLite writes the stream's batches with it (quotes a wallet then mints over
//! HTTP, redeliveries and updates that overtake their creates included), two writers on one file
//! store and pay each quote once, a store whose tables lack its columns is refused, and a batch
//! it fails to write goes through cdk instead.

mod common;

use cdk::amount::SplitTarget;
use cdk::mint::QuoteId;
use cdk::nuts::MintQuoteState;
use common::{adopt_quote, miner_key, share, Harness};
use ehash::{CreateQuote, QuoteMessage, UpdateQuote};
use hashpool_mint::quotes::{Applied, Batchable, Created, SqliteBatchError, SqliteBatchWriter};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};
use hashpool_testkit::wait_for;

/// What the batch did with each message, as comparable text.
fn summary(results: &[Result<Applied, hashpool_mint::quotes::QuoteBookError>]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok(Applied::Created(Created::New)) => "new".to_owned(),
            Ok(Applied::Created(Created::AlreadyStored)) => "stored".to_owned(),
            Ok(Applied::Paid(count)) => format!("paid {count}"),
            Err(error) => format!("error: {error}"),
        })
        .collect()
}

/// Every quote stored PAID exactly its amount, with one payment.
async fn assert_paid_once(server: &MintServer, creates: &[CreateQuote]) {
    let store = server.mint().localstore();
    let ids: Vec<QuoteId> = creates
        .iter()
        .map(|create| QuoteId::from(create.quote_id))
        .collect();
    let quotes = store.get_mint_quotes_by_ids(&ids).await.unwrap();
    for (create, quote) in creates.iter().zip(quotes) {
        let quote = quote.expect("the quote is stored");
        assert_eq!(quote.state(), MintQuoteState::Paid);
        assert_eq!(quote.amount_paid().value(), create.amount);
        assert_eq!(quote.payments.len(), 1, "paid once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_on_sqlite_writes_stream_batches_with_its_own_writer() {
    // Reads of 16 entries: the stream is read ahead of the store while a backlog lasts, and
    // quotes are paid in the batch that creates them as well as in later ones.
    let mut harness = Harness::start_with("sqlite-writer", |config| {
        config.redis.batch_size = 16;
    })
    .await;
    let (secret, locking) = miner_key();
    // As the pool publishes: a run of creates, then one update releasing them; the last run's
    // update overtakes its creates.
    let runs: Vec<Vec<CreateQuote>> = (0..4)
        .map(|run| (0..50).map(|n| share(locking, 1 + run * 50 + n)).collect())
        .collect();
    let release = |run: &[CreateQuote]| {
        QuoteMessage::Update(UpdateQuote::paid(
            run.iter().map(|create| create.quote_id).collect(),
        ))
    };
    let mut messages = Vec::new();
    for run in &runs[..3] {
        messages.extend(run.iter().cloned().map(QuoteMessage::Create));
        messages.push(release(run));
    }
    messages.push(release(&runs[3]));
    messages.extend(runs[3].iter().cloned().map(QuoteMessage::Create));
    harness.push_all(&messages).await;
    let metrics = harness.server().metrics().clone();
    wait_for("every quote PAID", async || {
        metrics.quotes_paid.get() == 200
    })
    .await;
    harness.wait_all_acknowledged().await;

    // Redelivered, every message changes nothing.
    harness.push_all(&messages).await;
    wait_for("the redeliveries applied", async || {
        metrics.quotes_redelivered.get() == 200
    })
    .await;
    harness.wait_all_acknowledged().await;
    let all: Vec<CreateQuote> = runs.concat();
    assert_paid_once(harness.server(), &all).await;
    assert_eq!(metrics.quotes_created.get(), 200);
    assert_eq!(metrics.quotes_paid.get(), 200);
    assert!(
        metrics.retries.get() >= 1,
        "the early update waited for its creates"
    );

    // The mint's writer committed the batches: cdk's path never ran for them.
    let writer = harness
        .server()
        .quotes()
        .sqlite_writer()
        .expect("the mint on SQLite has its own writer");
    assert!(writer.committed() >= 2, "{} batches", writer.committed());
    assert_eq!(writer.committed(), metrics.batches.get());
    assert_eq!(metrics.batch_fallbacks.get(), 0);
    // Read 16 at a time, 408 entries would take 26 batches: what waited behind a full read went
    // to the store together.
    assert!(
        metrics.batches.get() < 26,
        "{} batches",
        metrics.batches.get()
    );

    // A wallet mints what the writer stored, over HTTP.
    let wallet = harness.wallet().await;
    for create in [&runs[0][0], &runs[3][49]] {
        adopt_quote(&wallet, create, &secret).await;
        let proofs = wallet
            .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
            .await
            .expect("the key holder mints a quote the writer stored");
        let minted: u64 = proofs.iter().map(|proof| u64::from(proof.amount)).sum();
        assert_eq!(minted, create.amount);
        harness.wait_for_state(create.quote_id, "ISSUED").await;
    }
    harness.stop().await;
}

/// The mint on a fresh SQLite store, and where the store is.
async fn start_mint(dir: &std::path::Path) -> (MintServer, std::path::PathBuf) {
    let stream = format!(
        "{}quotes",
        hashpool_testkit::unique_redis_prefix("sqlite-writer")
    );
    let config = MintConfig::ephemeral(dir, stream);
    let path = config.database.sqlite_path.clone();
    (
        MintServer::start(config).await.expect("the mint starts"),
        path,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_on_one_file_store_and_pay_each_quote_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = start_mint(dir.path()).await;
    let mut books = Vec::new();
    for _ in 0..2 {
        let writer = SqliteBatchWriter::open(&path).await.unwrap();
        books.push(QuoteBook::new(server.mint().clone()).with_sqlite_writer(writer));
    }
    let (_, locking) = miner_key();
    let creates: Vec<CreateQuote> = (1..=300).map(|amount| share(locking, amount)).collect();
    let mut messages: Vec<QuoteMessage> =
        creates.iter().cloned().map(QuoteMessage::Create).collect();
    messages.push(QuoteMessage::Update(UpdateQuote::paid(
        creates.iter().map(|create| create.quote_id).collect(),
    )));
    let batch: Vec<Batchable<'_>> = messages.iter().filter_map(Batchable::of).collect();

    // Both at once: one takes the write lock first, the other then finds everything done.
    let (first, second) = tokio::join!(books[0].apply_batch(&batch), books[1].apply_batch(&batch));
    let (first, second) = (summary(&first.unwrap()), summary(&second.unwrap()));
    for book in &books {
        assert_eq!(book.sqlite_writer().unwrap().committed(), 1);
    }
    let mut did_it = vec!["new"; 300];
    did_it.push("paid 300");
    let mut found_it_done = vec!["stored"; 300];
    found_it_done.push("paid 0");
    let mut outcomes = [first, second];
    outcomes.sort();
    assert_eq!(outcomes, [did_it, found_it_done]);
    assert_paid_once(&server, &creates).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_the_written_columns_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = start_mint(dir.path()).await;
    server.shutdown().await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("ALTER TABLE mint_quote DROP COLUMN extra_json")
        .unwrap();
    match SqliteBatchWriter::open(&path).await {
        Err(SqliteBatchError::Schema { table, missing }) => {
            assert_eq!((table, missing), ("mint_quote", vec!["extra_json"]));
        }
        Err(other) => panic!("not a schema error: {other}"),
        Ok(_) => panic!("a store lacking a written column is refused"),
    }
    // Nor is a store created where there was none.
    let absent = dir.path().join("absent.sqlite");
    assert!(SqliteBatchWriter::open(&absent).await.is_err());
    assert!(!absent.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_writer_fails_goes_through_cdk() {
    let dir = tempfile::tempdir().unwrap();
    let (server, path) = start_mint(dir.path()).await;
    // A writer on a copy of the store whose index table then goes: its batches fail, the
    // mint's store is fine.
    let copy = dir.path().join("copy.sqlite");
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
        .unwrap();
    let writer = SqliteBatchWriter::open(&copy).await.unwrap();
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute_batch("DROP TABLE kv_store")
        .unwrap();
    let book = QuoteBook::new(server.mint().clone()).with_sqlite_writer(writer);

    let (_, locking) = miner_key();
    let create = share(locking, 8);
    let messages = [
        QuoteMessage::Create(create.clone()),
        QuoteMessage::Update(UpdateQuote::paid(vec![create.quote_id])),
    ];
    let batch: Vec<Batchable<'_>> = messages.iter().filter_map(Batchable::of).collect();
    let results = book.apply_batch(&batch).await.expect("cdk commits it");
    assert_eq!(summary(&results), ["new", "paid 1"]);
    assert_eq!(book.sqlite_writer().unwrap().committed(), 0);
    assert_paid_once(&server, std::slice::from_ref(&create)).await;
    // And nothing of it stayed in the copy: the failed batch rolled back.
    let in_copy: i64 = rusqlite::Connection::open(&copy)
        .unwrap()
        .query_row("SELECT count(*) FROM mint_quote", [], |row| row.get(0))
        .unwrap();
    assert_eq!(in_copy, 0);
    server.shutdown().await;
}
