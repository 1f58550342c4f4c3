//! The mint on cdk's PostgreSQL store (the PostgreSQL at 127.0.0.1:5432, database `test`), fed by
//! the real Redis: a quote created and released through the stream is PAID in the store.

use std::str::FromStr;

use cdk::mint::QuoteId;
use cdk::nuts::{MintQuoteState, SecretKey};
use ehash::{CreateQuote, LockingPubkey, QuoteMessage, UpdateQuote};
use hashpool_mint::config::{ConsumerConfig, DatabaseConfig};
use hashpool_mint::{MintConfig, MintServer};
use hashpool_testkit::eventually;
use redis::AsyncCommands;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_flow_into_the_postgres_store() {
    let dir = tempfile::tempdir().unwrap();
    // A schema of its own, so parallel runs never share tables.
    let schema = format!("hashpool_{}", uuid::Uuid::new_v4().simple());
    let url = format!("host=127.0.0.1 port=5432 user=postgres dbname=test schema={schema}");
    let stream = format!("{}quotes", hashpool_testkit::unique_redis_prefix("mint-pg"));
    let server = MintServer::start(MintConfig {
        listen_address: "127.0.0.1:0".parse().unwrap(),
        log_dir: dir.path().join("logs"),
        seed_file: dir.path().join("seed"),
        database: DatabaseConfig {
            sqlite_path: dir.path().join("unused.sqlite"),
            postgres_url: Some(url),
            ..DatabaseConfig::default()
        },
        redis: ConsumerConfig {
            stream: stream.clone(),
            block_ms: 100,
            ..ConsumerConfig::default()
        },
        ..MintConfig::default()
    })
    .await
    .expect("the mint starts on PostgreSQL");
    assert!(!dir.path().join("unused.sqlite").exists());

    let locking = LockingPubkey::from_str(&SecretKey::generate().public_key().to_hex()).unwrap();
    let create = CreateQuote::for_share(hashpool_testkit::accepted_share(locking, 42, 102));
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for message in [
        QuoteMessage::Create(create.clone()),
        QuoteMessage::Update(UpdateQuote::paid(vec![create.quote_id])),
    ] {
        let _: String = redis
            .xadd(&stream, "*", &[(ehash::STREAM_FIELD, message.to_json())])
            .await
            .unwrap();
    }

    let store = server.mint().localstore();
    let id = QuoteId::from(create.quote_id);
    let quote = eventually("the quote PAID in PostgreSQL", async || {
        let quote = store.get_mint_quote(&id).await.unwrap();
        quote.filter(|quote| quote.state() == MintQuoteState::Paid)
    })
    .await;
    assert_eq!(quote.amount_paid().value(), 42);
    assert_eq!(quote.pubkey.unwrap().to_hex(), locking.to_string());
    server.shutdown().await;
}
