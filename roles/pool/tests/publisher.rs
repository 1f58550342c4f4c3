//! The quote publisher against real Redis servers: in order, exactly once, through an outage of
//! a redis-server the test owns, across a shutdown (journal), and loudly on overflow.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ehash::{AcceptedShare, CreateQuote, QuoteMessage, Release, ReleasePolicy, UpdateQuote};
use hashpool_pool::publisher::{PublisherSettings, QuotePublisher, QuoteSender};
use hashpool_testkit::{free_port, unique_redis_prefix, wait_for, RedisServer};
use redis::AsyncCommands;
use uuid::Uuid;

const KEY: &str = "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798";

fn settings(url: &str, stream: &str, journal: PathBuf, capacity: usize) -> PublisherSettings {
    PublisherSettings {
        redis_url: url.to_owned(),
        stream: stream.to_owned(),
        pool_id: "test-pool".to_owned(),
        capacity,
        journal_path: journal,
    }
}

/// A share of `work` in `epoch`, as the pool accepts it.
fn share(work: u64, epoch: u64) -> AcceptedShare {
    hashpool_testkit::accepted_share(KEY.parse().unwrap(), work, epoch)
}

fn accepted_share(sender: &QuoteSender) -> Uuid {
    let create = CreateQuote::for_share(share(8, 102));
    let id = create.quote_id;
    sender.publish(QuoteMessage::Create(create));
    sender.publish(QuoteMessage::Update(UpdateQuote::paid(vec![id])));
    id
}

/// Every quote id's creates and updates on the stream, in stream order.
async fn stream_contents(url: &str, stream: &str) -> (Vec<Uuid>, HashMap<Uuid, usize>) {
    let mut redis = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let entries: redis::streams::StreamRangeReply = redis.xrange_all(stream).await.unwrap();
    let mut creates = Vec::new();
    let mut paid: HashMap<Uuid, usize> = HashMap::new();
    for entry in entries.ids {
        let json: String = entry.get(ehash::STREAM_FIELD).unwrap();
        match QuoteMessage::from_json(&json).unwrap() {
            QuoteMessage::Create(create) => creates.push(create.quote_id),
            QuoteMessage::Update(UpdateQuote {
                release: Release::Quotes(ids),
            }) => {
                for id in ids {
                    *paid.entry(id).or_default() += 1;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (creates, paid)
}

fn assert_exactly_once(expected: &[Uuid], creates: &[Uuid], paid: &HashMap<Uuid, usize>) {
    assert_eq!(creates, expected, "every create once, in order");
    for id in expected {
        assert_eq!(paid.get(id), Some(&1), "quote {id} released once");
    }
    assert_eq!(paid.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_order_exactly_once_and_coalesces_updates() {
    let dir = tempfile::tempdir().unwrap();
    let stream = format!("{}quotes", unique_redis_prefix("pool-publish"));
    let url = "redis://127.0.0.1:6379";
    let (publisher, sender) =
        QuotePublisher::start(settings(url, &stream, dir.path().join("journal"), 10_000)).unwrap();
    let ids: Vec<Uuid> = (0..300).map(|_| accepted_share(&sender)).collect();
    let metrics = sender.metrics().clone();
    wait_for("all published", async || {
        metrics.published.load(Ordering::Relaxed) == 600
    })
    .await;
    publisher.shutdown(Duration::from_secs(1)).await;

    let (creates, paid) = stream_contents(url, &stream).await;
    assert_exactly_once(&ids, &creates, &paid);
    assert_eq!(metrics.overflowed.load(Ordering::Relaxed), 0);
    assert!(!dir.path().join("journal").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_buffers_then_flushes_every_quote_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis_server = RedisServer::start().unwrap();
    let url = redis_server.url();
    let stream = "hashpool:quotes";
    let (publisher, sender) =
        QuotePublisher::start(settings(&url, stream, dir.path().join("journal"), 10_000)).unwrap();
    let metrics = sender.metrics().clone();

    let mut ids: Vec<Uuid> = (0..100).map(|_| accepted_share(&sender)).collect();
    wait_for("the first 100 published", async || {
        metrics.published.load(Ordering::Relaxed) == 200
    })
    .await;

    redis_server.stop();
    // Shares keep being accepted while Redis is down: publishing never blocks.
    let started = Instant::now();
    ids.extend((0..100).map(|_| accepted_share(&sender)));
    assert!(started.elapsed() < Duration::from_secs(1));
    wait_for("Redis seen down", async || {
        !metrics.redis_up.load(Ordering::Relaxed)
    })
    .await;
    // Two more failed attempts: the publisher kept trying and published nothing meanwhile.
    let errors = metrics.redis_errors.load(Ordering::Relaxed);
    wait_for("two more attempts on the stopped Redis", async || {
        metrics.redis_errors.load(Ordering::Relaxed) >= errors + 2
    })
    .await;
    assert_eq!(metrics.published.load(Ordering::Relaxed), 200);
    assert_eq!(metrics.buffered(), 200);

    redis_server.restart().unwrap();
    wait_for("the buffer flushed", async || {
        metrics.published.load(Ordering::Relaxed) == 400
    })
    .await;
    publisher.shutdown(Duration::from_secs(1)).await;

    let (creates, paid) = stream_contents(&url, stream).await;
    assert_exactly_once(&ids, &creates, &paid);
    assert_eq!(metrics.overflowed.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsent_messages_are_journaled_on_shutdown_and_published_on_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("pool/unsent.jsonl");
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let stream = format!("{}quotes", unique_redis_prefix("pool-journal"));

    let (publisher, sender) =
        QuotePublisher::start(settings(&unreachable, &stream, journal.clone(), 10_000)).unwrap();
    let ids: Vec<Uuid> = (0..10).map(|_| accepted_share(&sender)).collect();
    let metrics = sender.metrics().clone();
    wait_for("an attempt on the unreachable Redis", async || {
        metrics.redis_errors.load(Ordering::Relaxed) >= 1
    })
    .await;
    publisher.shutdown(Duration::from_millis(100)).await;
    assert_eq!(sender.metrics().journaled.load(Ordering::Relaxed), 20);
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap().lines().count(),
        20
    );

    let url = "redis://127.0.0.1:6379";
    let (publisher, sender) =
        QuotePublisher::start(settings(url, &stream, journal.clone(), 10_000)).unwrap();
    let metrics = sender.metrics().clone();
    wait_for("the journal published", async || {
        metrics.published.load(Ordering::Relaxed) == 20
    })
    .await;
    publisher.shutdown(Duration::from_secs(1)).await;
    assert!(!journal.exists(), "a published journal is removed");

    let (creates, paid) = stream_contents(url, &stream).await;
    assert_exactly_once(&ids, &creates, &paid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_counted_never_silent() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = format!("redis://127.0.0.1:{}", free_port());
    let (publisher, sender) = QuotePublisher::start(settings(
        &unreachable,
        "unused",
        dir.path().join("journal"),
        5,
    ))
    .unwrap();
    for _ in 0..300 {
        accepted_share(&sender);
    }
    publisher.shutdown(Duration::from_millis(100)).await;
    let metrics = sender.metrics();
    let overflowed = metrics.overflowed.load(Ordering::Relaxed);
    let journaled = metrics.journaled.load(Ordering::Relaxed);
    assert!(
        overflowed > 0,
        "a 5-message buffer cannot hold 600 messages"
    );
    assert_eq!(
        overflowed + journaled,
        600,
        "every message is either journaled or counted lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epoch_totals_match_the_published_creates_through_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis_server = RedisServer::start().unwrap();
    let url = redis_server.url();
    let stream = "hashpool:quotes";
    let (publisher, sender) =
        QuotePublisher::start(settings(&url, stream, dir.path().join("journal"), 10_000)).unwrap();
    let metrics = sender.metrics().clone();
    let epoch_share = |epoch: u64, work: u64| {
        sender.publish(QuoteMessage::Create(CreateQuote::for_share_under(
            ReleasePolicy::PayoutEpoch,
            share(work, epoch),
        )));
    };
    for work in 1..=40 {
        epoch_share(5, work);
    }
    wait_for("the first creates published", async || {
        metrics.published.load(Ordering::Relaxed) == 40
    })
    .await;
    // Redis goes away with creates of both epochs in flight, and comes back.
    redis_server.stop();
    for work in 41..=60 {
        epoch_share(5, work);
        epoch_share(6, work);
    }
    wait_for("Redis seen down", async || {
        !metrics.redis_up.load(Ordering::Relaxed)
    })
    .await;
    redis_server.restart().unwrap();
    wait_for("every create published", async || {
        metrics.published.load(Ordering::Relaxed) == 80
    })
    .await;
    publisher.shutdown(Duration::from_secs(1)).await;

    let redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let totals = async |epoch: u64| -> HashMap<String, u64> {
        redis
            .clone()
            .hgetall(ehash::epoch_totals_key(stream, epoch))
            .await
            .unwrap()
    };
    let (creates, _) = stream_contents(&url, stream).await;
    assert_eq!(creates.len(), 80, "every create once");
    for (epoch, works) in [(5, 1..=60u64), (6, 41..=60)] {
        let expected: HashMap<String, u64> = [
            ("work".to_owned(), works.clone().sum()),
            ("quotes".to_owned(), works.count() as u64),
        ]
        .into();
        assert_eq!(totals(epoch).await, expected, "epoch {epoch}");
    }
}
