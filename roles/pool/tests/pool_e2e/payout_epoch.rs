//! Under the payout-epoch policy a share's quote is in `sat`, carries the open epoch and waits
//! for that epoch's payout: the pool publishes its create, for exactly the share's work, adds it
//! to the epoch's totals, and releases nothing. The pool's own block closes the epoch.

use std::collections::HashMap;

use ehash::ReleasePolicy;
use hashpool_pool::epochs::EpochBook;
use redis::AsyncCommands;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_block_closes_the_epoch_its_shares_wait_in() {
    let dir = tempfile::tempdir().unwrap();
    let epochs_file = dir.path().join("epochs.json");
    let stack = Stack::start_configured("pool-payout-epoch", |config| {
        config.release_policy = ReleasePolicy::PayoutEpoch;
        config.payout.epochs_file = epochs_file.clone();
        // One tip for the whole test: only the first share's block extends it.
        config.bitcoind.template_poll_ms = 600_000;
    })
    .await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;

    // The first share is also a block (regtest): credited in epoch 1, which its block closes.
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    let metrics = stack.wait_for_block_submitted().await;
    assert_eq!(metrics.blocks_found.get(), 1);
    // The next share waits in epoch 2.
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    let quotes = stack.pool.quote_metrics().clone();
    wait_for("both creates published", async || {
        quotes.published.load(Ordering::Relaxed) == 2
    })
    .await;

    let messages = stack.stream_messages().await;
    let [QuoteMessage::Create(first), QuoteMessage::Create(second)] = messages.as_slice() else {
        panic!("two creates and no release: {messages:?}");
    };
    let work = credited_work(miner.jobs.target().to_le_bytes());
    for (create, epoch) in [(first, 1), (second, 2)] {
        assert_eq!(create.unit, ehash::EPOCH_UNIT);
        assert_eq!(create.locking_pubkey.to_string(), KEY);
        assert_eq!(create.amount, work);
        assert_eq!(create.epoch, epoch);
    }

    // Each epoch's totals, beside its creates.
    let mut redis = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for epoch in [1, 2] {
        let totals: HashMap<String, u64> = redis
            .hgetall(ehash::epoch_totals_key(&stack.stream, epoch))
            .await
            .unwrap();
        assert_eq!(
            totals,
            HashMap::from([("work".to_owned(), work), ("quotes".to_owned(), 1)]),
            "epoch {epoch}"
        );
    }
    let _: () = redis
        .del(&[
            ehash::epoch_totals_key(&stack.stream, 1),
            ehash::epoch_totals_key(&stack.stream, 2),
        ])
        .await
        .unwrap();

    // The book on disk: epoch 1 closed by the block bitcoind now has as its tip.
    stack.pool.shutdown().await;
    let book = EpochBook::open(&epochs_file).unwrap();
    assert_eq!(book.current(), 2);
    let tip = stack.node.rpc().get_best_block_hash().unwrap();
    let closed = book.closed();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!((closed[0].epoch, closed[0].block_hash), (1, tip));
}
