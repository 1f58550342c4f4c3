//! Store retention on the real stores (SQLite, and the PostgreSQL at 127.0.0.1:5432), fed by the
//! real Redis: quotes minted long ago are pruned with everything that names them, quotes not
//! minted are kept and still mint, and a create older than the window (the redelivery of a
//! pruned quote) is dead-lettered instead of storing the quote again to be minted twice.

mod common;

use cdk::amount::SplitTarget;
use cdk::mint::QuoteId;
use cdk::nuts::MintQuoteState;
use common::{adopt_quote, miner_key, mint_config, share, Harness};
use ehash::{CreateQuote, QuoteMessage, UpdateQuote};
use hashpool_mint::config::DatabaseConfig;
use hashpool_mint::MintServer;
use hashpool_testkit::wait_for;
use redis::AsyncCommands;

const DAY: u64 = 24 * 3600;
/// The key index's namespace in cdk's key-value store (what the signed lookup lists).
const KEY_INDEX: &str = "ehash_quotes_by_key";

fn postgres_url() -> String {
    // A schema of its own, so parallel runs never share tables.
    let schema = format!("hashpool_{}", uuid::Uuid::new_v4().simple());
    format!("host=127.0.0.1 port=5432 user=postgres dbname=test schema={schema}")
}

/// A share accepted `age` seconds ago.
fn share_aged(locking: ehash::LockingPubkey, amount: u64, age: u64) -> CreateQuote {
    let create = share(locking, amount);
    CreateQuote {
        created_at: create.created_at - age,
        ..create
    }
}

async fn issued_quotes_past_the_window_are_pruned_and_never_taken_back(postgres: Option<String>) {
    let database = |database: DatabaseConfig| DatabaseConfig {
        postgres_url: postgres.clone(),
        ..database
    };
    // First every quote is kept: shares accepted ten days ago are stored, paid and two minted.
    let mut harness = Harness::start_with("mint-retention", |config| {
        config.retention.keep_issued_secs = 0;
        config.database = database(config.database.clone());
    })
    .await;
    let (secret, locking) = miner_key();
    let minted = [
        share_aged(locking, 8, 10 * DAY),
        share_aged(locking, 16, 10 * DAY),
    ];
    let paid = share_aged(locking, 4, 10 * DAY);
    let unpaid = share_aged(locking, 2, 10 * DAY);
    let creates = [&minted[0], &minted[1], &paid, &unpaid];
    let mut messages: Vec<QuoteMessage> = creates
        .iter()
        .map(|create| QuoteMessage::Create((*create).clone()))
        .collect();
    messages.push(QuoteMessage::Update(UpdateQuote::paid(vec![
        minted[0].quote_id,
        minted[1].quote_id,
        paid.quote_id,
    ])));
    harness.push_all(&messages).await;
    harness.wait_all_acknowledged().await;
    harness.wait_for_state(paid.quote_id, "PAID").await;
    let wallet = harness.wallet().await;
    for create in &minted {
        adopt_quote(&wallet, create, &secret).await;
        wallet
            .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
            .await
            .expect("a PAID quote mints");
    }
    harness.stop().await;

    // Started again keeping minted quotes three days: its pruner deletes the two at once.
    let mut config = mint_config(harness.dir.path(), &harness.stream, "mint-retention-mint");
    config.retention.keep_issued_secs = 3 * DAY;
    config.database = database(config.database);
    let server = MintServer::start(config).await.expect("the mint restarts");
    let store = server.mint().localstore();
    let held = async |create: &CreateQuote| {
        store
            .get_mint_quote(&QuoteId::from(create.quote_id))
            .await
            .unwrap()
    };
    wait_for("the minted quotes pruned", async || {
        server.metrics().quotes_pruned.get() == 2
    })
    .await;
    assert!(held(&minted[0]).await.is_none() && held(&minted[1]).await.is_none());
    assert_eq!(
        held(&paid).await.map(|quote| quote.state()),
        Some(MintQuoteState::Paid)
    );
    assert_eq!(
        held(&unpaid).await.map(|quote| quote.state()),
        Some(MintQuoteState::Unpaid)
    );
    // The lookup's index names only what is left.
    let mut indexed = store
        .kv_list(KEY_INDEX, &locking.to_string())
        .await
        .unwrap();
    indexed.sort();
    let mut left = vec![paid.quote_id.to_string(), unpaid.quote_id.to_string()];
    left.sort();
    assert_eq!(indexed, left);
    // Nothing more to prune.
    let now = cdk::util::unix_time();
    assert_eq!(
        server
            .quotes()
            .prune_issued(now - 3 * DAY, 100)
            .await
            .unwrap(),
        0
    );
    harness.server = Some(server);

    // The pool publishes a pruned quote's create again: refused, never stored to mint twice. A
    // share accepted now is stored as ever.
    let fresh = share(locking, 1);
    harness
        .push_all(&[
            QuoteMessage::Create(minted[0].clone()),
            QuoteMessage::Create(fresh.clone()),
        ])
        .await;
    harness.wait_for_state(fresh.quote_id, "UNPAID").await;
    harness.wait_all_acknowledged().await;
    let dead: redis::streams::StreamRangeReply = harness
        .redis
        .xrange_all(ehash::dead_letter_stream(&harness.stream))
        .await
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    assert_eq!(
        dead.ids[0].get::<String>(ehash::STREAM_FIELD),
        Some(QuoteMessage::Create(minted[0].clone()).to_json())
    );
    assert!(held(&minted[0]).await.is_none());

    // The quote kept unminted still mints, from a wallet that finds it after the pruning.
    let wallet = harness.wallet().await;
    adopt_quote(&wallet, &paid, &secret).await;
    let proofs = wallet
        .mint(&paid.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .expect("a quote kept PAID mints");
    let amount: u64 = proofs.iter().map(|proof| u64::from(proof.amount)).sum();
    assert_eq!(amount, 4);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_quotes_past_the_window_are_pruned_and_never_taken_back_on_sqlite() {
    issued_quotes_past_the_window_are_pruned_and_never_taken_back(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issued_quotes_past_the_window_are_pruned_and_never_taken_back_on_postgres() {
    issued_quotes_past_the_window_are_pruned_and_never_taken_back(Some(postgres_url())).await;
}
