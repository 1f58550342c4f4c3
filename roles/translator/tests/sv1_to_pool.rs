//! Sv1 miners through the translator to the real pool: shares become quotes locked to each
//! miner's own key; bad input and a pool restart cost only what they must.

#[allow(dead_code)] // each test binary uses part of the shared support
mod support;

use ehash::ShareWork;
use hashpool_translator::config::DownstreamConfig;
use serde_json::json;
use support::{http_get, Stack, Sv1Miner, KEY_A, KEY_B, TEST_HASHRATE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv1_shares_become_quotes_locked_to_the_miners_key() {
    let stack = Stack::start("translator-quotes").await;
    let mut miner = Sv1Miner::connect(stack.sv1_address()).await;
    miner.configure().await;
    assert_eq!(miner.version_mask, Some(0x1fff_e000), "BIP 320 bits");
    miner.subscribe().await;
    assert_eq!(miner.extranonce1.len(), 4);
    assert_eq!(miner.extranonce2_size, 4);
    let user = format!("{KEY_A}.bitaxe-1");
    assert_eq!(miner.authorize(&user).await, Ok(json!(true)));
    miner.wait_for_work().await;
    assert!(
        miner.job.as_ref().unwrap().clean,
        "the first job replaces any other"
    );

    miner.mine_accepted(3).await;
    let creates = stack.creates_for(KEY_A, 3).await;
    let difficulty = miner.difficulties[0];
    assert!(
        difficulty < 1.0,
        "the test channel is easier than difficulty 1: {difficulty}"
    );
    for create in &creates {
        // The test miner's stated hashrate is far below the pool's minimum difficulty (the least
        // share the unit expresses, 2^12 hashes): each share earns exactly that, 1.
        assert_eq!(create.amount, ShareWork::MIN.amount());
        assert_eq!(create.amount, 1);
        assert_eq!(create.unit, "hash");
    }
    let accepted = stack.translator.metrics().shares("accepted");
    assert!(accepted >= 3, "{accepted}");

    // A suggested difficulty after authorize reaches the pool, which retargets the channel.
    let before = miner.difficulties.len();
    miner
        .call("mining.suggest_difficulty", json!([1.0e-8]))
        .await
        .unwrap();
    miner
        .wait_until("a new difficulty", |m| m.difficulties.len() > before)
        .await;
    // Below the minimum: the miner gets the minimum, 2^-20 (as an Sv1 difficulty of the pool's
    // power-of-two target, within float rounding of it).
    let suggested = *miner.difficulties.last().unwrap();
    let minimum = ShareWork::MIN.difficulty();
    assert!(
        (suggested / minimum - 1.0).abs() < 1e-3,
        "difficulty {suggested} is the minimum {minimum}"
    );
    miner.mine_accepted(1).await;

    // No share is in flight now: the scrape shows exactly the count the translator holds.
    let accepted = stack.translator.metrics().shares("accepted");
    assert!(accepted >= 4, "{accepted}");
    let metrics = http_get(stack.translator.metrics_address(), "/metrics").await;
    for line in [
        "hashpool_translator_downstreams_connected 1\n".to_owned(),
        "hashpool_translator_downstreams_total 1\n".to_owned(),
        "hashpool_translator_upstream_connected 1\n".to_owned(),
        "hashpool_translator_channels_open 1\n".to_owned(),
        format!("hashpool_translator_shares_total{{result=\"accepted\"}} {accepted}\n"),
    ] {
        assert!(metrics.contains(&line), "{line:?} missing from\n{metrics}");
    }
    stack.shutdown().await;
}

/// Bob's suggested difficulty: above the test pool's minimum (2^-20), quick to mine.
const BOB_SUGGESTS: f64 = 1.0 / 65_536.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_miners_each_earn_for_their_own_key() {
    let stack = Stack::start("translator-two").await;
    let mut alice = Sv1Miner::handshake(stack.sv1_address(), KEY_A).await;
    // Bob suggests a difficulty before authorizing, as some firmwares do.
    let mut bob = Sv1Miner::connect(stack.sv1_address()).await;
    bob.configure().await;
    bob.subscribe().await;
    bob.call("mining.suggest_difficulty", json!([BOB_SUGGESTS]))
        .await
        .unwrap();
    bob.authorize(&format!("{KEY_B}.rig2")).await.unwrap();
    assert_ne!(alice.extranonce1, bob.extranonce1);

    alice.mine_accepted(2).await;
    bob.mine_accepted(2).await;
    alice.mine_accepted(1).await;

    let alice_quotes = stack.creates_for(KEY_A, 3).await;
    let bob_quotes = stack.creates_for(KEY_B, 2).await;
    let all = stack.creates().await;
    assert_eq!(
        all.len(),
        alice_quotes.len() + bob_quotes.len(),
        "every quote is locked to one of the two miners, none to the translator"
    );
    for quote in &alice_quotes {
        assert!(
            bob_quotes
                .iter()
                .all(|bob| bob.channel_id != quote.channel_id),
            "one channel per miner"
        );
    }
    let alice_difficulty = alice.difficulties[0];
    let bob_difficulty = bob.difficulties[0];
    // Alice's initial hashrate is below the minimum: she mines at it. Bob's suggestion is above
    // it: he mines at the power of two at or above it (float rounding aside).
    let minimum = ShareWork::MIN.difficulty();
    assert!(
        (alice_difficulty / minimum - 1.0).abs() < 1e-3,
        "the minimum sets {alice_difficulty}"
    );
    assert!(
        (0.999 * BOB_SUGGESTS..=4.0 * BOB_SUGGESTS).contains(&bob_difficulty),
        "the suggestion sets {bob_difficulty}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_username_that_is_not_a_key_is_refused() {
    let stack = Stack::start("translator-bad-user").await;
    let mut miner = Sv1Miner::connect(stack.sv1_address()).await;
    miner.subscribe().await;
    let (code, message) = miner.authorize("bc1qsomeaddress.worker").await.unwrap_err();
    assert_eq!(code, 24);
    assert!(
        message.contains("identity-key-bad-length") && message.contains("public key"),
        "{message}"
    );
    // Uncompressed-prefix key of the right length.
    let (_, message) = miner
        .authorize(&format!("04{}", &KEY_A[2..]))
        .await
        .unwrap_err();
    assert!(message.contains("identity-key-not-compressed"), "{message}");
    // Shares of a refused user are refused; the connection stays usable.
    let (code, _) = miner
        .call(
            "mining.submit",
            json!([
                "bc1qsomeaddress.worker",
                "1",
                "00000000",
                "00000000",
                "00000000"
            ]),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 24);
    assert_eq!(miner.authorize(KEY_A).await, Ok(json!(true)));
    miner.mine_accepted(1).await;
    stack.creates_for(KEY_A, 1).await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_the_pool_refuses_fails_authorize_with_the_pools_reason() {
    // 4 + 8 extranonce bytes: more than the 8 the pool lets a channel roll.
    let stack = Stack::start_with(
        "translator-pool-refuses",
        DownstreamConfig {
            extranonce1_size: 4,
            extranonce2_size: 8,
            initial_hashrate: TEST_HASHRATE,
            ..DownstreamConfig::default()
        },
    )
    .await;
    let mut miner = Sv1Miner::connect(stack.sv1_address()).await;
    miner.subscribe().await;
    let (code, message) = miner.authorize(KEY_A).await.unwrap_err();
    assert_eq!(code, 24);
    assert!(
        message.contains("the pool refused") && message.contains("min-extranonce-size-too-large"),
        "{message}"
    );
    assert_eq!(stack.translator.metrics().channels_open.get(), 0);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_authorizes_is_closed() {
    let stack = Stack::start_with(
        "translator-idle",
        DownstreamConfig {
            initial_hashrate: TEST_HASHRATE,
            authorize_timeout_secs: 1,
            ..DownstreamConfig::default()
        },
    )
    .await;
    let mut miner = Sv1Miner::handshake(stack.sv1_address(), KEY_A).await;
    let mut idle = Sv1Miner::connect(stack.sv1_address()).await;
    idle.subscribe().await;
    assert!(idle.next_message().await.is_none(), "closed after 1 s");
    // The authorized miner outlives the deadline.
    miner.mine_accepted(1).await;
    assert_eq!(stack.translator.metrics().downstreams_dropped.get(), 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_the_miner_that_sent_it() {
    let stack = Stack::start("translator-garbage").await;
    let mut good = Sv1Miner::handshake(stack.sv1_address(), KEY_A).await;
    good.mine_accepted(1).await;

    // Not JSON: that connection is closed.
    let mut garbage = Sv1Miner::connect(stack.sv1_address()).await;
    garbage
        .send_raw(b"{\"id\": 1, \"method\": \xff\xfe garbage\n")
        .await
        .unwrap();
    assert!(garbage.next_message().await.is_none(), "closed");
    let mut not_json = Sv1Miner::connect(stack.sv1_address()).await;
    not_json.send_raw(b"hello pool\n").await.unwrap();
    assert!(not_json.next_message().await.is_none(), "closed");

    // A line over the cap, without a newline: closed without reading it all.
    let mut oversize = Sv1Miner::connect(stack.sv1_address()).await;
    let _ = oversize.send_raw(&vec![b'x'; 64 * 1024]).await;
    assert!(oversize.next_message().await.is_none(), "closed");

    // Unknown methods and bad parameters get JSON-RPC errors; the connection stays.
    let mut confused = Sv1Miner::connect(stack.sv1_address()).await;
    let (code, message) = confused
        .call("mining.frobnicate", json!([]))
        .await
        .unwrap_err();
    assert_eq!(code, 20);
    assert!(message.contains("mining.frobnicate"), "{message}");
    let (code, _) = confused
        .call("mining.authorize", json!([1, 2, 3]))
        .await
        .unwrap_err();
    assert_eq!(code, 20);
    confused.subscribe().await;

    // A submit for a job the translator never sent.
    good.wait_for_work().await;
    let mut params = good.mine();
    params[1] = json!("no-such-job");
    let (code, _) = good.call("mining.submit", params).await.unwrap_err();
    assert_eq!(code, 21);

    // The good miner never noticed.
    good.mine_accepted(2).await;
    stack.creates_for(KEY_A, 3).await;
    let metrics = stack.translator.metrics();
    assert_eq!(metrics.downstreams_dropped.get(), 3);
    assert!(metrics.shares("job-not-found") >= 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_stay_connected_while_the_pool_restarts() {
    let mut stack = Stack::start("translator-restart").await;
    let mut miner = Sv1Miner::handshake(stack.sv1_address(), KEY_A).await;
    miner.mine_accepted(2).await;
    let before = stack.creates_for(KEY_A, 2).await.len();

    stack.stop_pool().await;
    // While the pool is down the miner keeps its connection; its shares are refused.
    hashpool_testkit::wait_for("the translator to notice", async || {
        stack.translator.metrics().upstream_connected.get() == 0
    })
    .await;
    miner.wait_for_work().await;
    let (code, message) = miner.submit_share().await.unwrap_err();
    assert_eq!(code, 20, "{message}");

    stack.restart_pool().await;
    let notifies = miner.notifies;
    miner
        .wait_until("a job on the reopened channel", |m| {
            m.notifies > notifies && m.job.as_ref().is_some_and(|job| job.clean)
        })
        .await;
    miner.mine_accepted(2).await;
    let after = stack.creates_for(KEY_A, before + 2).await;
    assert!(after.len() >= before + 2);
    let metrics = stack.translator.metrics();
    assert!(metrics.upstream_reconnects.get() >= 1);
    assert_eq!(metrics.downstreams_total.get(), 1, "same connection");
    assert_eq!(metrics.downstreams_connected.get(), 1);
    stack.shutdown().await;
}
