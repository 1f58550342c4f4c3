//! The quote stream stays bounded: the mint deletes what its consumer group acknowledged, and
//! never an entry still pending (an update waiting for its create).

mod common;

use common::{miner_key, share, Harness};
use ehash::{QuoteMessage, UpdateQuote};
use hashpool_testkit::wait_for;
use redis::AsyncCommands;

async fn stream_entries(mint: &mut Harness) -> Vec<QuoteMessage> {
    let reply: redis::streams::StreamRangeReply =
        mint.redis.xrange_all(&mint.stream).await.unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let json: String = entry.get(ehash::STREAM_FIELD).unwrap();
            QuoteMessage::from_json(&json).unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_are_trimmed_and_a_waiting_update_is_kept() {
    let mut mint = Harness::start("mint-trim").await;
    let (_, locking) = miner_key();
    let before: Vec<_> = (0..20).map(|_| share(locking, 8)).collect();
    for create in &before {
        mint.push(&QuoteMessage::Create(create.clone())).await;
    }
    // An update whose create has not come yet: it stays pending, and so does all after it.
    let late = share(locking, 64);
    let waiting = QuoteMessage::Update(UpdateQuote::paid(vec![late.quote_id]));
    mint.push(&waiting).await;
    for _ in 0..5 {
        mint.push(&QuoteMessage::Create(share(locking, 8))).await;
    }
    let metrics = mint.server().metrics().clone();
    wait_for("the acknowledged creates trimmed", async || {
        metrics.stream_trimmed.get() == 20
    })
    .await;
    let kept = stream_entries(&mut mint).await;
    assert_eq!(kept.len(), 6, "the waiting update and what came after it");
    assert_eq!(kept[0], waiting);

    // Its create arrives: the update applies, and the stream shrinks to its last entry.
    mint.push(&QuoteMessage::Create(late.clone())).await;
    mint.wait_for_state(late.quote_id, "PAID").await;
    wait_for("everything acknowledged trimmed", async || {
        metrics.stream_trimmed.get() == 26
    })
    .await;
    assert_eq!(stream_entries(&mut mint).await.len(), 1);
    assert_eq!(metrics.quotes_created.get(), 26);
    mint.stop().await;
}
