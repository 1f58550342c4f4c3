//! Under the payout-epoch policy a share's quote is in `sat` and waits for its epoch's payout:
//! the pool publishes its create, for exactly the share's work, and no release.

use ehash::ReleasePolicy;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payout_epoch_shares_become_unreleased_sat_quotes_for_their_work() {
    let stack = Stack::start_configured("pool-payout-epoch", |config| {
        config.release_policy = ReleasePolicy::PayoutEpoch;
    })
    .await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    let quotes = stack.pool.quote_metrics().clone();
    wait_for("the create published", async || {
        quotes.published.load(Ordering::Relaxed) == 1
    })
    .await;

    let messages = stack.stream_messages().await;
    let [QuoteMessage::Create(create)] = messages.as_slice() else {
        panic!("one create and no release: {messages:?}");
    };
    assert_eq!(create.unit, ehash::EPOCH_UNIT);
    assert_eq!(create.locking_pubkey.to_string(), KEY);
    assert_eq!(
        create.amount,
        credited_work(miner.jobs.target().to_le_bytes())
    );
    stack.pool.shutdown().await;
}
