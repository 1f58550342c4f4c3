//! The mint end to end with real services: the machine's Redis, the mint (cdk, SQLite store,
//! stream consumer, HTTP API) started in-process, and a cdk wallet talking HTTP to it. The test
//! plays the pool by appending quote messages to a stream of its own.

mod common;

use std::str::FromStr;

use cdk::amount::SplitTarget;
use cdk::nuts::SecretKey;
use ehash::{CreateQuote, LockingPubkey, QuoteMessage, UpdateQuote};
use hashpool_mint::MintServer;
use hashpool_testkit::wait_for;
use redis::AsyncCommands;
use uuid::Uuid;

use common::{
    adopt_quote, http_get, http_request, miner_key, mint_config, share, signed_mint_request,
    Harness,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_quote_mints_to_its_key_holder_only_and_only_once() {
    let mut harness = Harness::start("mint-flow").await;
    let (secret, locking) = miner_key();
    let create = share(locking, 1000);
    harness.push(&QuoteMessage::Create(create.clone())).await;

    let body = harness.wait_for_state(create.quote_id, "UNPAID").await;
    assert_eq!(body["amount"], 1000);
    assert_eq!(body["unit"], "hash");
    assert_eq!(body["pubkey"], locking.to_string());

    // Not PAID yet: nothing to mint (the wallet sees no mintable amount and stops).
    let owner = harness.wallet().await;
    adopt_quote(&owner, &create, &secret).await;
    let error = owner
        .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .expect_err("an UNPAID quote cannot be minted");
    assert!(matches!(error, cdk::Error::AmountUndefined), "{error:?}");
    // The mint refuses a correctly signed request anyway: the quote is not paid (NUT-04 20001).
    let request = signed_mint_request(&harness, create.quote_id, 1000, &secret);
    let (status, body) = harness.http_post("/v1/mint/ehash", &request).await;
    assert_eq!((status, &body["code"]), (400, &json!(20001)), "{body}");

    harness
        .push(&QuoteMessage::Update(UpdateQuote::paid(vec![
            create.quote_id,
        ])))
        .await;
    harness.wait_for_state(create.quote_id, "PAID").await;

    // Another key cannot mint it (NUT-20).
    let (thief_secret, _) = miner_key();
    let thief = harness.wallet().await;
    adopt_quote(&thief, &create, &thief_secret).await;
    let error = thief
        .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .expect_err("a wallet without the locking key cannot mint");
    assert!(
        matches!(error, cdk::Error::SignatureMissingOrInvalid),
        "{error:?}"
    );

    // The key holder mints exactly the quote's amount.
    let proofs = owner
        .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .expect("the key holder mints a PAID quote");
    let minted: u64 = proofs.iter().map(|proof| u64::from(proof.amount)).sum();
    assert_eq!(minted, 1000);
    harness.wait_for_state(create.quote_id, "ISSUED").await;
    let metrics = harness.server().metrics().clone();
    assert_eq!(metrics.quotes_paid.get(), 1);
    assert_eq!(
        metrics.mint_requests.get(),
        1,
        "only the key holder's mint succeeded"
    );

    // The proofs are real: the mint accepts them in a swap, which spends them.
    owner
        .swap(
            None,
            SplitTarget::default(),
            proofs.clone(),
            None,
            false,
            false,
        )
        .await
        .expect("the minted proofs verify in a swap");
    let states = owner.check_proofs_spent(proofs).await.unwrap();
    assert!(states
        .iter()
        .all(|state| state.state == cdk::nuts::State::Spent));
    assert_eq!(u64::from(owner.total_balance().await.unwrap()), 1000);

    // Minting twice is refused.
    let error = owner
        .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .expect_err("an ISSUED quote cannot be minted again");
    assert!(matches!(error, cdk::Error::AmountUndefined), "{error:?}");
    // The mint refuses a correctly signed request anyway: the quote is issued (20002).
    let request = signed_mint_request(&harness, create.quote_id, 1000, &secret);
    let (status, body) = harness.http_post("/v1/mint/ehash", &request).await;
    assert_eq!((status, &body["code"]), (400, &json!(20002)), "{body}");

    assert_eq!(harness.pending_count().await, 0, "every entry acknowledged");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_create_makes_one_quote_and_bad_messages_are_dead_lettered() {
    let mut harness = Harness::start("mint-idempotent").await;
    let (_, locking) = miner_key();
    let create = share(locking, 7);
    let message = QuoteMessage::Create(create.clone());
    harness.push(&message).await;
    harness.push(&message).await;
    harness.push_raw("{not json").await;
    harness.push_raw(r#"{"v":99,"kind":"create"}"#).await;
    let next = share(locking, 9);
    harness.push(&QuoteMessage::Create(next.clone())).await;

    harness.wait_for_state(next.quote_id, "UNPAID").await;
    let book = hashpool_mint::QuoteBook::new(harness.server().mint().clone());
    let quotes = book.quotes_for_key(&locking).await.unwrap();
    let mut ids: Vec<String> = quotes.iter().map(|quote| quote.id.to_string()).collect();
    let mut expected = vec![create.quote_id.to_string(), next.quote_id.to_string()];
    ids.sort();
    expected.sort();
    assert_eq!(
        ids, expected,
        "one quote per share, however often its create arrives"
    );

    let dead: redis::streams::StreamRangeReply = harness
        .redis
        .xrange_all(ehash::dead_letter_stream(&harness.stream))
        .await
        .unwrap();
    let reasons: Vec<String> = dead
        .ids
        .iter()
        .map(|entry| entry.get::<String>("reason").unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("not valid JSON"), "{reasons:?}");
    assert!(reasons[1].contains("version 99"), "{reasons:?}");
    assert_eq!(harness.server().metrics().dead_letters.get(), 2);
    assert_eq!(harness.pending_count().await, 0);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_before_create_is_retried_not_lost() {
    let mut harness = Harness::start("mint-reorder").await;
    let (_, locking) = miner_key();
    let create = share(locking, 3);
    harness
        .push(&QuoteMessage::Update(UpdateQuote::paid(vec![
            create.quote_id,
        ])))
        .await;
    // The mint has read the update, found no quote for it, and left it pending: the create
    // below arrives after its update, for certain.
    let metrics = harness.server().metrics().clone();
    wait_for("the update left pending to retry", async || {
        metrics.retries.get() >= 1
    })
    .await;
    assert_eq!(harness.pending_count().await, 1);
    harness.push(&QuoteMessage::Create(create.clone())).await;
    harness.wait_for_state(create.quote_id, "PAID").await;
    harness.wait_all_acknowledged().await;
    harness.stop().await;
}

/// Reads every entry waiting on the harness's stream as consumer `name` of the mint's group,
/// acknowledging none (a mint that read them and died); returns how many it read.
async fn read_as(harness: &mut Harness, name: &str) -> usize {
    let options = redis::streams::StreamReadOptions::default()
        .group(ehash::MINT_CONSUMER_GROUP, name)
        .count(100);
    let read: redis::streams::StreamReadReply = harness
        .redis
        .xread_options(&[&harness.stream], &[">"], &options)
        .await
        .unwrap();
    read.keys.iter().map(|key| key.ids.len()).sum()
}

/// `server`'s store holds each of `creates`' quotes, once, and no other quote for `locking`.
async fn assert_stored_once(server: &MintServer, locking: &LockingPubkey, creates: &[CreateQuote]) {
    let book = hashpool_mint::QuoteBook::new(server.mint().clone());
    let mut stored: Vec<Uuid> = book
        .quotes_for_key(locking)
        .await
        .unwrap()
        .iter()
        .map(|quote| Uuid::parse_str(&quote.id.to_string()).unwrap())
        .collect();
    let mut expected: Vec<Uuid> = creates.iter().map(|create| create.quote_id).collect();
    stored.sort();
    expected.sort();
    assert_eq!(stored, expected, "every quote stored exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_read_by_a_consumer_that_died_are_claimed_and_stored_once() {
    let mut harness = Harness::start("mint-crash").await;
    // Once the mint has made its group, stop it, as if its process were gone.
    harness.wait_for_consumer_group().await;
    harness.stop().await;

    let (_, locking) = miner_key();
    let creates: Vec<CreateQuote> = (0..5).map(|i| share(locking, 10 + i)).collect();
    for create in &creates {
        harness.push(&QuoteMessage::Create(create.clone())).await;
    }
    // A consumer reads them all and dies before acknowledging any.
    assert_eq!(read_as(&mut harness, "crashed-mint").await, 5);
    assert_eq!(harness.pending_count().await, 5);

    // A new mint process on the same store and stream claims and applies them.
    let restarted = MintServer::start(mint_config(
        harness.dir.path(),
        &harness.stream,
        "replacement-mint",
    ))
    .await
    .unwrap();
    harness.wait_all_acknowledged().await;
    assert_stored_once(&restarted, &locking, &creates).await;
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_mint_applies_every_entry_it_had_read_before_claims_are_due() {
    let mut harness = Harness::start("mint-own-pending").await;
    harness.wait_for_consumer_group().await;
    harness.stop().await;

    let (_, locking) = miner_key();
    let creates: Vec<CreateQuote> = (0..10).map(|i| share(locking, 10 + i)).collect();
    for create in &creates {
        harness.push(&QuoteMessage::Create(create.clone())).await;
    }
    // The mint read them all (a read ahead of its store) under its own name, and died.
    assert_eq!(read_as(&mut harness, "same-mint").await, 10);

    // Started again under the same name, reading 4 at a time, with claims an hour away: its own
    // pending entries, more than one read's worth, are read again from the oldest.
    let mut config = mint_config(harness.dir.path(), &harness.stream, "same-mint");
    config.redis.batch_size = 4;
    config.redis.claim_idle_ms = 3_600_000;
    let restarted = MintServer::start(config).await.unwrap();
    harness.wait_all_acknowledged().await;
    assert_stored_once(&restarted, &locking, &creates).await;
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_input_gets_cashu_errors() {
    let mut harness = Harness::start("mint-http").await;
    let base = harness.server().url();

    let (status, body) = http_request(
        "POST",
        &format!("{base}/v1/mint/quote/ehash"),
        Some(r#"{"amount":5,"unit":"hash"}"#),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 20003, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("pool"));

    let (status, body) =
        http_request("POST", &format!("{base}/v1/mint/ehash"), Some("{nope")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 10000, "not JSON: {body}");

    let unknown = Uuid::new_v4();
    let (status, body) = http_get(&format!("{base}/v1/mint/quote/ehash/{unknown}")).await;
    assert_eq!(status, 400, "{body}");
    // Cashu has no code for an unknown quote; cdk answers with its generic one.
    assert_eq!(
        (&body["code"], body["detail"].as_str()),
        (&json!(50000), Some("Unknown quote"))
    );

    // A body over the limit: on the routes that carry quotes and outputs it is "too many"
    // (11015, which a cdk wallet takes as a definitive refusal and releases its quotes); on
    // others it is malformed.
    let huge = format!("{{\"quote\":\"{}\"}}", "x".repeat(300 * 1024));
    for route in [
        "/v1/mint/ehash",
        "/v1/mint/ehash/batch",
        "/v1/restore",
        "/v1/swap",
    ] {
        let (status, body) = http_request("POST", &format!("{base}{route}"), Some(&huge)).await;
        assert_eq!(status, 413, "{route}: {body}");
        assert_eq!(body["code"], 11015, "{route}: {body}");
        assert!(
            body["detail"].as_str().unwrap().contains("max_batch_size"),
            "{body}"
        );
    }
    let (status, body) =
        http_request("POST", &format!("{base}/v1/ehash/quotes"), Some(&huge)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], hashpool_mint::http::MALFORMED_REQUEST);

    let (status, body) = http_get(&format!("{base}/health")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let (status, body) = http_get(&format!("{base}/v1/info")).await;
    assert_eq!(status, 200);
    let nut04 = &body["nuts"]["4"]["methods"];
    assert!(
        nut04
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["method"] == "ehash" && m["unit"] == "hash"),
        "{body}"
    );
    harness.stop().await;
}

fn signed_lookup(secret: &SecretKey, timestamp: u64) -> String {
    let key = LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    let signature = secret
        .sign(ehash::lookup_message(&key, timestamp).as_bytes())
        .unwrap();
    serde_json::json!({
        "pubkey": key.to_string(),
        "timestamp": timestamp,
        "signature": signature.to_string(),
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_lookup_lists_a_keys_quotes_and_refuses_stale_replayed_or_forged_requests() {
    let mut harness = Harness::start("mint-lookup").await;
    let (secret, locking) = miner_key();
    let (_, stranger) = miner_key();
    let mine = share(locking, 5);
    let paid = share(locking, 6);
    let theirs = share(stranger, 7);
    for create in [&mine, &paid, &theirs] {
        harness.push(&QuoteMessage::Create(create.clone())).await;
    }
    harness
        .push(&QuoteMessage::Update(UpdateQuote::paid(vec![
            paid.quote_id,
        ])))
        .await;
    harness.wait_for_state(paid.quote_id, "PAID").await;
    harness.wait_for_state(theirs.quote_id, "UNPAID").await;

    let url = format!("{}/v1/ehash/quotes", harness.server().url());
    let now = cdk::util::unix_time();
    let request = signed_lookup(&secret, now);
    let (status, body) = http_request("POST", &url, Some(&request)).await;
    assert_eq!(status, 200, "{body}");
    let listed: Vec<(String, String, u64)> = body["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|quote| {
            (
                quote["quote"].as_str().unwrap().to_owned(),
                quote["state"].as_str().unwrap().to_owned(),
                quote["amount"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![
        (mine.quote_id.to_string(), "UNPAID".to_owned(), 5),
        (paid.quote_id.to_string(), "PAID".to_owned(), 6),
    ];
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    expected.sort();
    assert_eq!(
        listed_sorted, expected,
        "only this key's quotes, with states"
    );

    let (status, body) = http_request("POST", &url, Some(&request)).await;
    assert_eq!(status, 400, "a replayed lookup is refused: {body}");
    assert_eq!(body["code"], 20008);
    assert!(body["detail"].as_str().unwrap().contains("already used"));

    let (status, body) =
        http_request("POST", &url, Some(&signed_lookup(&secret, now - 3600))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("fresh"));

    // Someone else's signature over this key is refused.
    let (forger, _) = miner_key();
    let mut forged: serde_json::Value = serde_json::from_str(&signed_lookup(&forger, now)).unwrap();
    forged["pubkey"] = locking.to_string().into();
    let (status, body) = http_request("POST", &url, Some(&forged.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], 20008);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_answers_in_pages_that_cover_every_quote_once() {
    let mut harness = Harness::start("mint-lookup-pages").await;
    let (secret, locking) = miner_key();
    let creates: Vec<CreateQuote> = (0..7).map(|i| share(locking, 1 + i)).collect();
    for create in &creates {
        harness.push(&QuoteMessage::Create(create.clone())).await;
    }
    for create in &creates {
        harness.wait_for_state(create.quote_id, "UNPAID").await;
    }
    let url = format!("{}/v1/ehash/quotes", harness.server().url());
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let mut request: serde_json::Value =
            serde_json::from_str(&signed_lookup(&secret, cdk::util::unix_time())).unwrap();
        request["limit"] = 3.into();
        if let Some(after) = &after {
            request["after"] = after.clone().into();
        }
        let (status, body) = http_request("POST", &url, Some(&request.to_string())).await;
        assert_eq!(status, 200, "{body}");
        let page: Vec<String> = body["quotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|quote| quote["quote"].as_str().unwrap().to_owned())
            .collect();
        pages.push(page);
        match body["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    let listed: Vec<String> = pages.concat();
    let mut expected: Vec<String> = creates.iter().map(|c| c.quote_id.to_string()).collect();
    expected.sort();
    assert_eq!(listed, expected, "every quote once, in id order");

    // Without page fields (an older wallet) the first page, at most LOOKUP_PAGE_MAX.
    let (status, body) = http_request(
        "POST",
        &url,
        Some(&signed_lookup(&secret, cdk::util::unix_time())),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["quotes"].as_array().unwrap().len(), 7);
    assert!(body.get("next").is_none(), "{body}");
    harness.stop().await;
}
