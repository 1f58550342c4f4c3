//! Payout epochs at the mint: quotes in `sat` created by the pool's stream, UNPAID until one
//! update releases the epoch, its payout split by work over exactly the quotes the pool credited.

mod common;

use std::collections::BTreeMap;

use cdk::amount::SplitTarget;
use cdk::nuts::CurrencyUnit;
use ehash::{CreateQuote, EpochRelease, LockingPubkey, QuoteMessage, UpdateQuote};
use hashpool_testkit::wait_for;
use redis::AsyncCommands;
use uuid::Uuid;

use common::{adopt_quote, epoch_share, miner_key, Harness};

fn release(epoch: u64, payout: u64, total_work: u64, quotes: u64) -> QuoteMessage {
    QuoteMessage::Update(UpdateQuote::epoch_paid(EpochRelease {
        epoch,
        payout,
        total_work,
        quotes,
        payment_id: format!("payment-of-epoch-{epoch}"),
    }))
}

/// The pool's creates of an epoch, one per work, stored UNPAID in `sat` by the mint.
async fn stored_epoch_quotes(
    harness: &mut Harness,
    locking: LockingPubkey,
    epoch: u64,
    works: &[u64],
) -> Vec<CreateQuote> {
    let creates: Vec<_> = works
        .iter()
        .map(|&work| epoch_share(locking, work, epoch))
        .collect();
    for create in &creates {
        harness.push(&QuoteMessage::Create(create.clone())).await;
    }
    for create in &creates {
        let body = harness.wait_for_state(create.quote_id, "UNPAID").await;
        assert_eq!(body["unit"], "sat", "{body}");
    }
    creates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_payout_is_split_by_work_and_minted_in_sats() {
    let mut harness = Harness::start("mint-epoch-split").await;
    let (secret, locking) = miner_key();
    let creates = stored_epoch_quotes(&mut harness, locking, 7, &[1, 2, 5]).await;
    // Delivered twice, as a redelivery would: the second pays nothing more.
    harness.push(&release(7, 1000, 8, 3)).await;
    harness.push(&release(7, 1000, 8, 3)).await;

    let mut paid = BTreeMap::new();
    for create in &creates {
        let body = harness.wait_for_state(create.quote_id, "PAID").await;
        paid.insert(create.quote_id, body["amount_paid"].as_u64().unwrap());
    }
    let expected: BTreeMap<Uuid, u64> = creates
        .iter()
        .map(|create| create.quote_id)
        .zip([125, 250, 625])
        .collect();
    assert_eq!(
        paid, expected,
        "pro rata to work 1:2:5, adding up to the payout"
    );
    harness.wait_all_acknowledged().await;
    assert_eq!(harness.server().metrics().quotes_paid.get(), 3);

    // The key holder mints its share in sats.
    let wallet = harness.wallet_in(CurrencyUnit::Sat, rand_seed()).await;
    let biggest = &creates[2];
    adopt_quote(&wallet, biggest, &secret).await;
    let proofs = wallet
        .mint(&biggest.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .expect("the key holder mints a PAID epoch quote");
    let minted: u64 = proofs.iter().map(|proof| u64::from(proof.amount)).sum();
    assert_eq!(minted, 625);
    assert_eq!(u64::from(wallet.total_balance().await.unwrap()), 625);
    harness.wait_for_state(biggest.quote_id, "ISSUED").await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_update_before_its_last_create_waits_for_it() {
    let mut harness = Harness::start("mint-epoch-early").await;
    let (_, locking) = miner_key();
    let first = epoch_share(locking, 3, 9);
    let last = epoch_share(locking, 1, 9);
    harness.push(&QuoteMessage::Create(first.clone())).await;
    harness.push(&release(9, 40, 4, 2)).await;
    let metrics = harness.server().metrics().clone();
    wait_for("the incomplete epoch left pending to retry", async || {
        metrics.retries.get() >= 1
    })
    .await;
    assert_eq!(harness.pending_count().await, 1);
    harness.wait_for_state(first.quote_id, "UNPAID").await;

    harness.push(&QuoteMessage::Create(last.clone())).await;
    let first_paid = harness.wait_for_state(first.quote_id, "PAID").await;
    let last_paid = harness.wait_for_state(last.quote_id, "PAID").await;
    assert_eq!(
        (
            first_paid["amount_paid"].as_u64(),
            last_paid["amount_paid"].as_u64()
        ),
        (Some(30), Some(10))
    );
    harness.wait_all_acknowledged().await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_update_naming_less_than_the_store_holds_pays_nothing() {
    let mut harness = Harness::start("mint-epoch-mismatch").await;
    let (_, locking) = miner_key();
    let creates = stored_epoch_quotes(&mut harness, locking, 11, &[1, 2, 5]).await;
    harness.push(&release(11, 1000, 3, 2)).await;
    let metrics = harness.server().metrics().clone();
    wait_for("the update dead-lettered", async || {
        metrics.dead_letters.get() == 1
    })
    .await;
    harness.wait_all_acknowledged().await;
    for create in &creates {
        harness.wait_for_state(create.quote_id, "UNPAID").await;
    }
    assert_eq!(metrics.quotes_paid.get(), 0);
    harness.stop().await;
}

fn rand_seed() -> [u8; 64] {
    rand::random::<[[u8; 32]; 2]>()
        .concat()
        .try_into()
        .expect("64 bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_epoch_index_pays_nothing_and_says_why() {
    let mut harness = Harness::start("mint-epoch-corrupt").await;
    let (_, locking) = miner_key();
    let creates = stored_epoch_quotes(&mut harness, locking, 13, &[1, 2]).await;
    // An entry no create wrote: not a quote id, not 8 bytes of work.
    let store = harness.server().mint().localstore();
    let mut tx = store.begin_transaction().await.unwrap();
    tx.kv_write(
        hashpool_mint::quotes::EPOCH_INDEX_NAMESPACE,
        "13",
        "not-a-quote",
        b"x",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    harness.push(&release(13, 1000, 3, 2)).await;
    let metrics = harness.server().metrics().clone();
    wait_for("the update dead-lettered", async || {
        metrics.dead_letters.get() == 1
    })
    .await;
    let dead: redis::streams::StreamRangeReply = harness
        .redis
        .xrange_all(ehash::dead_letter_stream(&harness.stream))
        .await
        .unwrap();
    let reason: String = dead.ids[0].get("reason").unwrap();
    assert!(reason.contains("\"not-a-quote\""), "{reason}");
    for create in &creates {
        harness.wait_for_state(create.quote_id, "UNPAID").await;
    }
    assert_eq!(metrics.quotes_paid.get(), 0);
    harness.stop().await;
}
