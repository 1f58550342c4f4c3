//! `QuoteBook::apply_batch` on the real stores (SQLite, and the PostgreSQL at 127.0.0.1:5432),
//! through cdk's store API and through the mint's own writers: a run of creates and ehash
//! updates commits in one transaction, each message gets its own result, a message that cannot
//! apply changes nothing, and the same run applied again (a redelivery) stores and pays nothing
//! twice. The mint's writers store what cdk stores.

mod common;

use cdk::mint::QuoteId;
use cdk::nuts::MintQuoteState;
use common::{miner_key, share};
use ehash::{CreateQuote, QuoteMessage, UpdateQuote};
use hashpool_mint::config::DatabaseConfig;
use hashpool_mint::quotes::{
    Applied, Batchable, Created, PostgresBatchWriter, QuoteBookError, SqliteBatchWriter,
};
use hashpool_mint::{MintConfig, MintServer, QuoteBook};

/// Which store, and which way a batch is written to it.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    /// SQLite through cdk's store API.
    SqliteCdk,
    /// SQLite with the mint's own writer.
    SqliteOwnWriter,
    /// PostgreSQL through cdk's store API.
    PostgresCdk,
    /// PostgreSQL with the mint's set-based writer.
    PostgresSetBased,
}

impl Store {
    fn is_sqlite(self) -> bool {
        matches!(self, Store::SqliteCdk | Store::SqliteOwnWriter)
    }

    /// Whether batches go through the mint's own writer rather than cdk's API.
    fn own_writer(self) -> bool {
        matches!(self, Store::SqliteOwnWriter | Store::PostgresSetBased)
    }
}

/// Batches the book's own writer (either) has committed, if it has one.
fn committed(book: &QuoteBook) -> Option<u64> {
    let postgres = book.postgres_writer().map(|writer| writer.committed());
    postgres.or_else(|| book.sqlite_writer().map(|writer| writer.committed()))
}

/// The mint on a fresh store, and a quote book writing batches the way `store` says.
async fn start_mint(dir: &std::path::Path, store: Store) -> (MintServer, QuoteBook) {
    let stream = format!(
        "{}quotes",
        hashpool_testkit::unique_redis_prefix("batch-ingest")
    );
    let mut config = MintConfig::ephemeral(dir, stream);
    let mut url = None;
    let sqlite_path = config.database.sqlite_path.clone();
    if !store.is_sqlite() {
        // A schema of its own, so parallel runs never share tables.
        let schema = format!("hashpool_{}", uuid::Uuid::new_v4().simple());
        url = Some(format!(
            "host=127.0.0.1 port=5432 user=postgres dbname=test schema={schema}"
        ));
        config.database = DatabaseConfig {
            postgres_url: url.clone(),
            ..config.database
        };
    }
    let server = MintServer::start(config).await.expect("the mint starts");
    let mut book = QuoteBook::new(server.mint().clone());
    if store == Store::PostgresSetBased {
        let writer = PostgresBatchWriter::connect(url.as_deref().unwrap())
            .await
            .expect("the writer connects and finds cdk's tables");
        book = book.with_postgres_writer(writer);
    }
    if store == Store::SqliteOwnWriter {
        let writer = SqliteBatchWriter::open(&sqlite_path)
            .await
            .expect("the writer opens the store and finds cdk's tables");
        book = book.with_sqlite_writer(writer);
    }
    (server, book)
}

/// What the batch did with each message, as comparable text.
fn summary(results: &[Result<Applied, QuoteBookError>]) -> Vec<String> {
    results
        .iter()
        .map(|result| match result {
            Ok(Applied::Created(Created::New)) => "new".to_owned(),
            Ok(Applied::Created(Created::AlreadyStored)) => "stored".to_owned(),
            Ok(Applied::Paid(count)) => format!("paid {count}"),
            Err(QuoteBookError::WrongUnit { .. }) => "wrong unit".to_owned(),
            Err(QuoteBookError::UnknownQuote(_)) => "unknown quote".to_owned(),
            Err(other) => format!("unexpected: {other}"),
        })
        .collect()
}

async fn a_run_commits_together_and_applies_once(store: Store) {
    let dir = tempfile::tempdir().unwrap();
    let (server, book) = start_mint(dir.path(), store).await;
    let (_, key) = miner_key();
    let (a, b, e) = (share(key, 5), share(key, 7), share(key, 11));
    let wrong_unit = CreateQuote {
        unit: "usd".into(),
        ..share(key, 13)
    };
    let never_created = share(key, 17);
    let messages = [
        QuoteMessage::Create(a.clone()),
        QuoteMessage::Create(b.clone()),
        QuoteMessage::Update(UpdateQuote::paid(vec![a.quote_id, b.quote_id])),
        QuoteMessage::Create(wrong_unit.clone()),
        // Names a stored quote and one whose create never came: nothing of it is applied.
        QuoteMessage::Update(UpdateQuote::paid(vec![e.quote_id, never_created.quote_id])),
        QuoteMessage::Create(e.clone()),
    ];
    let batch: Vec<Batchable<'_>> = messages
        .iter()
        .map(|message| Batchable::of(message).unwrap())
        .collect();

    let first = book.apply_batch(&batch).await.expect("the batch commits");
    assert_eq!(committed(&book), store.own_writer().then_some(1));
    assert_eq!(
        summary(&first),
        ["new", "new", "paid 2", "wrong unit", "unknown quote", "new"]
    );
    let again = book.apply_batch(&batch).await.expect("the batch commits");
    assert_eq!(committed(&book), store.own_writer().then_some(2));
    assert_eq!(
        summary(&again),
        [
            "stored",
            "stored",
            "paid 0",
            "wrong unit",
            "unknown quote",
            "stored"
        ]
    );

    // `e` was stored UNPAID by an earlier batch: this one pays the stored quote, once.
    let pay_e = QuoteMessage::Update(UpdateQuote::paid(vec![e.quote_id]));
    let pay_e = [Batchable::of(&pay_e).unwrap()];
    for expected in ["paid 1", "paid 0"] {
        let paid = book.apply_batch(&pay_e).await.expect("the batch commits");
        assert_eq!(summary(&paid), [expected]);
    }

    let store = server.mint().localstore();
    for (create, state) in [
        (&a, MintQuoteState::Paid),
        (&b, MintQuoteState::Paid),
        (&e, MintQuoteState::Paid),
    ] {
        let quote = store
            .get_mint_quote(&QuoteId::from(create.quote_id))
            .await
            .unwrap()
            .expect("the quote is stored");
        assert_eq!(quote.state(), state, "quote of {}", create.amount);
        let paid = if state == MintQuoteState::Paid {
            create.amount
        } else {
            0
        };
        // Paid once, however often its update was applied.
        assert_eq!(quote.amount_paid().value(), paid);
        assert_eq!(quote.payments.len(), usize::from(paid > 0));
    }
    for absent in [&wrong_unit, &never_created] {
        let quote = store
            .get_mint_quote(&QuoteId::from(absent.quote_id))
            .await
            .unwrap();
        assert!(quote.is_none(), "quote of {} is not stored", absent.amount);
    }
    // The key index holds exactly the stored quotes.
    let mut indexed: Vec<_> = book
        .quotes_for_key(&key)
        .await
        .unwrap()
        .into_iter()
        .map(|quote| quote.id.to_string())
        .collect();
    indexed.sort();
    let mut expected: Vec<_> = [&a, &b, &e]
        .iter()
        .map(|create| create.quote_id.to_string())
        .collect();
    expected.sort();
    assert_eq!(indexed, expected);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_commits_together_and_applies_once_on_sqlite_through_cdk() {
    a_run_commits_together_and_applies_once(Store::SqliteCdk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_commits_together_and_applies_once_on_sqlite_own_writer() {
    a_run_commits_together_and_applies_once(Store::SqliteOwnWriter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_commits_together_and_applies_once_on_postgres_through_cdk() {
    a_run_commits_together_and_applies_once(Store::PostgresCdk).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_commits_together_and_applies_once_on_postgres_set_based() {
    a_run_commits_together_and_applies_once(Store::PostgresSetBased).await;
}

/// The mint's writer stores what cdk's API stores: the same quote written each way reads back
/// through cdk the same, field for field, and both are in the key index.
async fn the_own_writer_stores_what_cdk_stores(kind: Store) {
    let dir = tempfile::tempdir().unwrap();
    let (server, own_writer) = start_mint(dir.path(), kind).await;
    let through_cdk = QuoteBook::new(server.mint().clone());
    let (_, key) = miner_key();
    let (one, other) = (share(key, 21), share(key, 21));
    let sat = common::epoch_share(key, 3, 9);
    for (book, create) in [(&through_cdk, &one), (&own_writer, &other)] {
        let messages = [
            QuoteMessage::Create(create.clone()),
            QuoteMessage::Update(UpdateQuote::paid(vec![create.quote_id])),
        ];
        let batch: Vec<Batchable<'_>> = messages.iter().filter_map(Batchable::of).collect();
        book.apply_batch(&batch).await.unwrap();
    }
    let sat_message = QuoteMessage::Create(sat.clone());
    own_writer
        .apply_batch(&[Batchable::of(&sat_message).unwrap()])
        .await
        .unwrap();

    assert_eq!(committed(&own_writer), Some(2));

    let store = server.mint().localstore();
    let read = async |id: uuid::Uuid| {
        store
            .get_mint_quote(&QuoteId::from(id))
            .await
            .unwrap()
            .expect("stored")
    };
    let (mut a, mut b) = (read(one.quote_id).await, read(other.quote_id).await);
    assert_eq!(b.state(), MintQuoteState::Paid);
    assert_eq!(b.payments.len(), 1);
    assert_eq!(
        b.payments[0].payment_id,
        format!("ehash-{}", other.quote_id)
    );
    assert_eq!(b.payments[0].amount, a.payments[0].amount);
    // What differs by nature: the ids, the share hash in the request, and the times written.
    b.id = a.id.clone();
    b.request = a.request.clone();
    b.request_lookup_id = a.request_lookup_id.clone();
    for quote in [&mut a, &mut b] {
        quote.payments.clear();
        quote.set_updated_at(0);
    }
    assert_eq!(format!("{a:?}"), format!("{b:?}"));

    let epoch = read(sat.quote_id).await;
    assert_eq!(epoch.unit, cdk::nuts::CurrencyUnit::Sat);
    assert_eq!(
        epoch.amount, None,
        "a sat quote's amount waits for its epoch's payout"
    );
    let indexed = own_writer.quotes_for_key(&key).await.unwrap();
    assert_eq!(indexed.len(), 3);
    // The epoch index, which the payout is split over, has the sat quote with its work.
    let epoch_index = store
        .kv_read(
            hashpool_mint::quotes::EPOCH_INDEX_NAMESPACE,
            "9",
            &sat.quote_id.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(epoch_index, Some(3u64.to_be_bytes().to_vec()));
    if kind.is_sqlite() {
        let path = dir.path().join("mint.sqlite");
        same_sqlite_rows(
            &path,
            &one.quote_id.to_string(),
            &other.quote_id.to_string(),
        );
    }
    server.shutdown().await;
}

/// On SQLite, where a column holds whatever type was bound, the rows of quote `b` are the rows
/// of quote `a` column for column, storage classes included, but for what differs by nature.
fn same_sqlite_rows(path: &std::path::Path, a: &str, b: &str) {
    let connection = rusqlite::Connection::open(path).unwrap();
    // Each table's rows of a quote, and the columns that differ by nature between two quotes
    // (their ids, the share hash, the times written).
    let tables = [
        (
            "SELECT * FROM mint_quote WHERE id = ?1",
            &["id", "request", "request_lookup_id", "updated_at"][..],
        ),
        (
            "SELECT * FROM mint_quote_payments WHERE quote_id = ?1",
            &["id", "quote_id", "payment_id", "timestamp"][..],
        ),
        (
            "SELECT * FROM kv_store WHERE key = ?1 ORDER BY primary_namespace",
            &["key", "created_time", "updated_time"][..],
        ),
    ];
    for (query, differ) in tables {
        let mut statement = connection.prepare(query).unwrap();
        let names: Vec<String> = statement
            .column_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let mut rows_of = |id: &str| -> Vec<Vec<(String, rusqlite::types::Value)>> {
            statement
                .query_map([id], |row| {
                    Ok(names
                        .iter()
                        .enumerate()
                        .map(|(index, name)| {
                            let value: rusqlite::types::Value = row.get(index).unwrap();
                            let value = if differ.contains(&name.as_str()) {
                                // Its type still has to be the same.
                                rusqlite::types::Value::Text(format!("{:?}", value.data_type()))
                            } else {
                                value
                            };
                            (name.clone(), value)
                        })
                        .collect())
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let (rows_a, rows_b) = (rows_of(a), rows_of(b));
        assert!(!rows_a.is_empty(), "{query}: no rows");
        assert_eq!(rows_a, rows_b, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_writer_stores_what_cdk_stores() {
    the_own_writer_stores_what_cdk_stores(Store::PostgresSetBased).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_writer_stores_what_cdk_stores() {
    the_own_writer_stores_what_cdk_stores(Store::SqliteOwnWriter).await;
}

#[test]
fn epoch_releases_are_not_batched() {
    let release = QuoteMessage::Update(UpdateQuote {
        release: ehash::Release::Epoch(ehash::EpochRelease {
            epoch: 3,
            payout: 1_000,
            total_work: 10,
            quotes: 2,
            payment_id: "a-payment-hash".into(),
        }),
    });
    assert!(Batchable::of(&release).is_none());
}
