//! Under the payout-epoch policy a share's quote is in `sat`, carries the open epoch and waits
//! for that epoch's payout: the pool publishes its create, for exactly the share's work, adds it
//! to the epoch's totals, and releases nothing until a signed payout callback says the epoch's
//! payout landed. The pool's own block closes the epoch.

use std::collections::HashMap;
use std::path::Path;

use ehash::callback::{self, PayoutNotice};
use ehash::{EpochRelease, ReleasePolicy};
use hashpool_pool::epochs::EpochBook;
use redis::AsyncCommands;

use super::*;

const SECRET: &str = "a payout callback secret";

/// A pool under payout-epoch on one tip: its first share's block closed epoch 1, its second
/// share waits in epoch 2. Returns the stack and the work of each share.
async fn one_closed_epoch(test: &str, dir: &Path) -> (Stack, u64) {
    let epochs_file = dir.join("epochs.json");
    let secret_file = dir.join("payout-secret");
    hashpool_service::create_secret(&secret_file, SECRET).unwrap();
    let stack = Stack::start_configured(test, |config| {
        config.release_policy = ReleasePolicy::PayoutEpoch;
        config.payout.epochs_file = epochs_file;
        config.payout.callback_secret_file = Some(secret_file);
        // One tip for the whole test: only the first share's block extends it.
        config.bitcoind.template_poll_ms = 600_000;
    })
    .await;
    let mut miner = Miner::open(&stack, KEY, 1.0).await;
    let (reply, _) = miner.submit_valid_share().await;
    assert!(
        matches!(reply, MiningOwned::SubmitSharesSuccess(_)),
        "{reply:?}"
    );
    let metrics = stack.wait_for_block_submitted().await;
    assert_eq!(metrics.blocks_found.get(), 1);
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
    let work = credited_work(miner.jobs.target().to_le_bytes());
    (stack, work)
}

async fn forget_epochs(stack: &Stack, epochs: &[u64]) {
    let mut redis = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut keys: Vec<String> = epochs
        .iter()
        .flat_map(|&epoch| {
            [
                ehash::epoch_totals_key(&stack.stream, epoch),
                format!("{}:epoch:{epoch}:paid-by", stack.stream),
            ]
        })
        .collect();
    let payments: Vec<String> = redis
        .keys(format!("{}:payout-payment:*", stack.stream))
        .await
        .unwrap();
    keys.extend(payments);
    let _: () = redis.del(keys).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pools_block_closes_the_epoch_its_shares_wait_in() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, work) = one_closed_epoch("pool-payout-epoch", dir.path()).await;

    let messages = stack.stream_messages().await;
    let [QuoteMessage::Create(first), QuoteMessage::Create(second)] = messages.as_slice() else {
        panic!("two creates and no release: {messages:?}");
    };
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
    forget_epochs(&stack, &[1, 2]).await;

    // The book on disk: epoch 1 closed by the block bitcoind now has as its tip.
    stack.pool.shutdown().await;
    let book = EpochBook::open(&dir.path().join("epochs.json")).unwrap();
    assert_eq!(book.current(), 2);
    let tip = stack.node.rpc().get_best_block_hash().unwrap();
    let closed = book.closed();
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_eq!((closed[0].epoch, closed[0].block_hash), (1, tip));
}

/// POSTs a payout notice signed with `secret` at `timestamp`.
async fn post_payout(
    stack: &Stack,
    notice: &PayoutNotice,
    secret: &str,
    timestamp: u64,
) -> (u16, serde_json::Value) {
    let body = serde_json::to_string(notice).unwrap();
    let signature = callback::sign(secret.as_bytes(), timestamp, body.as_bytes());
    let headers = [
        (callback::TIMESTAMP_HEADER, timestamp.to_string()),
        (callback::SIGNATURE_HEADER, signature),
    ];
    post_json(stack.pool.http_address(), "/payout", &headers, &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_payout_releases_its_closed_epoch_once() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, work) = one_closed_epoch("pool-payout-callback", dir.path()).await;
    let now = hashpool_service::unix_now();
    let notice = |payment_id: &str, epoch: Option<u64>| PayoutNotice {
        payment_id: payment_id.to_owned(),
        amount_msat: 50_000_999,
        epoch,
    };
    let refused = |(status, body): (u16, serde_json::Value)| (status, body["error"].clone());

    // Refused, and nothing published: unsigned, wrong secret, too old, open or unknown epoch.
    let body = serde_json::to_string(&notice("pay-1", Some(1))).unwrap();
    let unsigned = post_json(stack.pool.http_address(), "/payout", &[], &body).await;
    assert_eq!(refused(unsigned), (401, "unauthenticated".into()));
    let forged = post_payout(&stack, &notice("pay-1", Some(1)), "guess", now).await;
    assert_eq!(refused(forged), (401, "unauthenticated".into()));
    let replayed_late = post_payout(&stack, &notice("pay-1", Some(1)), SECRET, now - 3600).await;
    assert_eq!(refused(replayed_late), (401, "unauthenticated".into()));
    let open = post_payout(&stack, &notice("pay-1", Some(2)), SECRET, now).await;
    assert_eq!(refused(open), (409, "epoch-open".into()));
    let unknown = post_payout(&stack, &notice("pay-1", Some(9)), SECRET, now).await;
    assert_eq!(refused(unknown), (404, "unknown-epoch".into()));
    assert_eq!(stack.stream_messages().await.len(), 2, "only the creates");
    let miner_page = format!("/api/v1/miners/{KEY}");
    let (_, waiting) = hashpool_testkit::get_json(stack.pool.http_address(), &miner_page).await;
    assert_eq!(waiting["quotes"]["pending"]["count"], 2, "{waiting}");
    assert_eq!(waiting["quotes"]["released"]["count"], 0, "{waiting}");
    let states = |miner: &serde_json::Value| -> Vec<(u64, String)> {
        miner["epochs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|epoch| {
                let state = epoch["state"].as_str().unwrap().to_owned();
                (epoch["epoch"].as_u64().unwrap(), state)
            })
            .collect()
    };
    assert_eq!(
        states(&waiting),
        [(1, "closed".to_owned()), (2, "open".to_owned())]
    );

    // The payout of epoch 1: one update naming its totals, in whole sats.
    let (status, released) = post_payout(&stack, &notice("pay-1", None), SECRET, now).await;
    assert_eq!(status, 200, "{released}");
    assert_eq!(
        released,
        serde_json::json!({"epoch": 1, "payout": 50_000, "new": true})
    );
    let release = QuoteMessage::Update(UpdateQuote::epoch_paid(EpochRelease {
        epoch: 1,
        payout: 50_000,
        total_work: work,
        quotes: 1,
        payment_id: "pay-1".to_owned(),
    }));
    assert_eq!(stack.stream_messages().await[2..], [release]);
    // The miner's page: epoch 1 paid, all 50,000 sats its part (it did all the epoch's work).
    let (_, paid) = hashpool_testkit::get_json(stack.pool.http_address(), &miner_page).await;
    assert_eq!(
        states(&paid),
        [(1, "paid".to_owned()), (2, "open".to_owned())]
    );
    assert_eq!(paid["quotes"]["released"]["count"], 1, "{paid}");
    assert_eq!(paid["quotes"]["released"]["work"], work, "{paid}");
    assert_eq!(paid["quotes"]["pending"]["count"], 1, "{paid}");
    let epoch = &paid["epochs"][0];
    assert_eq!(
        (
            &epoch["payout"],
            &epoch["epoch_work"],
            &epoch["estimated_sats"]
        ),
        (&50_000.into(), &work.into(), &50_000.into())
    );

    // The same callback again changes nothing; another payment cannot pay epoch 1 again.
    let (status, again) = post_payout(&stack, &notice("pay-1", Some(1)), SECRET, now).await;
    assert_eq!((status, &again["new"]), (200, &serde_json::json!(false)));
    let twice = post_payout(&stack, &notice("pay-2", Some(1)), SECRET, now).await;
    assert_eq!(refused(twice), (409, "epoch-paid".into()));
    let nothing = post_payout(&stack, &notice("pay-2", None), SECRET, now).await;
    assert_eq!(refused(nothing), (409, "nothing-to-pay".into()));
    assert_eq!(stack.stream_messages().await.len(), 3, "one release in all");

    forget_epochs(&stack, &[1, 2]).await;
    stack.pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_retried_after_a_pool_restart_is_not_paid_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (stack, _) = one_closed_epoch("pool-payout-retry", dir.path()).await;
    let notice = PayoutNotice {
        payment_id: "pay-1".to_owned(),
        amount_msat: 21_000_000,
        epoch: None,
    };
    let now = hashpool_service::unix_now();
    let (status, first) = post_payout(&stack, &notice, SECRET, now).await;
    assert_eq!((status, &first["new"]), (200, &serde_json::json!(true)));

    // The pool goes down after publishing, before the payer heard its answer; the payer's
    // watcher retries the same payment, freshly signed, against the restarted pool.
    let stack = stack.restart_pool().await;
    let (status, retried) = post_payout(&stack, &notice, SECRET, now + 1).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(
        retried,
        serde_json::json!({"epoch": 1, "payout": 21_000, "new": false})
    );
    let epochs = http_get(stack.pool.http_address(), "/epochs").await;
    let epochs: serde_json::Value = serde_json::from_str(&epochs).unwrap();
    assert_eq!(epochs["open"], 2, "{epochs}");
    assert_eq!(epochs["closed"][0]["epoch"], 1, "{epochs}");
    assert_eq!(epochs["closed"][0]["paid_by"], "pay-1", "{epochs}");
    let updates = stack
        .stream_messages()
        .await
        .into_iter()
        .filter(|message| matches!(message, QuoteMessage::Update(_)))
        .count();
    assert_eq!(updates, 1, "one release in all");

    forget_epochs(&stack, &[1, 2]).await;
    stack.pool.shutdown().await;
}
