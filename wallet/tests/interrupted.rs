//! Mint requests whose outcome is unknown: the mint killed -9 mid-batch, the wallet killed -9
//! after sending a batch, a batch the mint refuses as too large, and `wallet watch` across a mint
//! restart. Each time the next run ends with exactly the paid total, nothing reserved, nothing
//! minted twice (checked in the mint's store and the wallet's proofs).

mod common;

use std::time::{Duration, Instant};

use std::sync::atomic::Ordering;

use hashpool_testkit::wait_for_within;

use common::{assert_settled, share_amounts, wait_for_output, wallet_side, CuttingProxy, Stack};

/// Enough quotes for several batches at the mint's advertised size.
const QUOTES: usize = 1500;

/// `wallet mint` as an older wallet that ignored the mint's advertised size: 1000 quotes is
/// over the mint's 256 KiB body limit.
const OVERSIZED_MINT: [&str; 5] = [
    "mint",
    "--batch-size",
    "1000",
    "--max-request-bytes",
    "100000000",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_killed_mid_batch_then_the_next_mint_recovers_exactly() {
    let mut stack = Stack::start("wallet-mint-killed").await;
    let total = stack.pay_quotes(&share_amounts(QUOTES)).await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;

    // Kill the mint as soon as the first batch is done: the wallet is then preparing or sending
    // the next one.
    let mut wallet = stack.spawn_wallet("mint-1", &["mint"]);
    wait_for_output(&mut wallet, "minted a batch of", Duration::from_secs(120)).await;
    stack.kill_mint();
    wait_for_within(
        "the wallet to give up",
        Duration::from_secs(120),
        async || !wallet.is_running(),
    )
    .await;
    assert!(
        wallet.output().contains("cannot reach the mint"),
        "{}",
        wallet.output()
    );
    let interrupted = wallet_side(&stack.wallet_dir()).await;
    assert_eq!(
        interrupted.incomplete_sagas, 1,
        "a batch was in flight when the mint died: {interrupted:?}"
    );
    assert!(interrupted.reserved_quotes > 0, "{interrupted:?}");
    assert!(interrupted.unspent < total);

    // While the mint is down the wallet says what is mid-recovery.
    let balance = stack.wallet(&["balance"]);
    let stderr = String::from_utf8_lossy(&balance.stderr);
    assert!(
        stderr.contains("recovering: 1 interrupted mint request"),
        "{stderr}"
    );

    stack.restart_mint().await;
    let report = stack.wallet_ok(&["mint"]);
    assert!(
        report.contains(&format!("balance {total} hash")),
        "{report}"
    );
    assert_settled(&stack, QUOTES, total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_killed_after_sending_a_batch_then_the_next_mint_recovers_exactly() {
    let mut stack = Stack::start("wallet-killed").await;
    let total = stack.pay_quotes(&share_amounts(QUOTES)).await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;

    // Kill the wallet as soon as the mint has answered its first batch: the wallet is then
    // reading the signatures, or has sent the next batch.
    let mut wallet = stack.spawn_wallet("mint-1", &["mint"]);
    wait_for_within(
        "a batch at the mint",
        Duration::from_secs(120),
        async || {
            assert!(wallet.is_running(), "{}", wallet.output());
            stack.mint_metric("hashpool_mint_mint_requests_total").await > 0
        },
    )
    .await;
    wallet.kill();
    let interrupted = wallet_side(&stack.wallet_dir()).await;
    assert_eq!(
        interrupted.incomplete_sagas, 1,
        "the wallet died with a batch sent: {interrupted:?}"
    );
    assert!(interrupted.unspent < total);

    let report = stack.wallet_ok(&["mint"]);
    assert!(
        report.contains(&format!("balance {total} hash")),
        "{report}"
    );
    assert_settled(&stack, QUOTES, total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_too_large_is_split_and_nothing_stays_reserved() {
    let mut stack = Stack::start("wallet-too-large").await;
    let started = Instant::now();
    let total = stack.pay_quotes(&share_amounts(QUOTES)).await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;
    eprintln!("{QUOTES} quotes applied in {:.1?}", started.elapsed());
    let started = Instant::now();

    // A wallet that ignores the mint's advertised size, as an older one did.
    let output = stack.wallet(&OVERSIZED_MINT);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("wallet mint in {:.1?}:\n{stderr}", started.elapsed());
    assert!(output.status.success(), "{stderr}");
    assert!(
        stack
            .mint_metric("hashpool_mint_http_responses_total{status=\"413\"}")
            .await
            >= 1,
        "the mint refused the oversized batch with 413"
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("balance {total} hash")),
        "{stderr}"
    );
    assert_settled(&stack, QUOTES, total).await;
}

/// The wallet of the issue: a batch far over the mint's body limit was sent and the answer never
/// came (here the connection drops mid-request), so cdk's saga stayed `MintRequested` with those
/// quotes reserved. The next `wallet mint` replays it, the mint refuses it as too large (11015),
/// cdk releases the quotes, and everything is minted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_oversized_batch_whose_answer_was_lost_is_released_and_minted() {
    let mut stack = Stack::start("wallet-stuck-oversized").await;
    let total = stack.pay_quotes(&share_amounts(QUOTES)).await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;
    let proxy = CuttingProxy::start(&stack.mint_url).await;

    proxy.cut_over.store(200 * 1024, Ordering::SeqCst);
    let output = stack.wallet_via(&proxy.url, &OVERSIZED_MINT).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("cannot reach the mint"), "{stderr}");
    let stuck = wallet_side(&stack.wallet_dir()).await;
    assert_eq!(stuck.incomplete_sagas, 1, "{stuck:?}");
    assert!(
        stuck.reserved_quotes > 297,
        "more quotes reserved than the mint takes in a batch: {stuck:?}"
    );
    assert_eq!(stuck.unspent, 0);

    proxy.cut_over.store(0, Ordering::SeqCst);
    let output = stack.wallet_via(&proxy.url, &["mint"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(&format!("balance {total} hash")),
        "{stdout}"
    );
    assert_settled(&stack, QUOTES, total).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_watch_mints_everything_across_a_mint_restart() {
    let mut stack = Stack::start("wallet-watch").await;
    let first = stack.pay_quotes(&share_amounts(QUOTES)).await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;

    let logs = stack.dir.path().join("watch-logs");
    let mut watch = stack.spawn_wallet(
        "watch",
        &[
            "watch",
            "--interval",
            "1",
            "--log-dir",
            &logs.display().to_string(),
        ],
    );
    wait_for_output(&mut watch, "minted a batch", Duration::from_secs(120)).await;
    stack.kill_mint();
    // Shares keep coming while the mint is down; they wait in the stream.
    let second = stack.pay_quotes(&share_amounts(300)).await;
    wait_for_output(&mut watch, "will retry", Duration::from_secs(60)).await;
    stack.restart_mint().await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;

    let total = first + second;
    // watch logs its balance after each pass that minted something.
    let all_minted = format!("balance={total} ");
    wait_for_output(&mut watch, &all_minted, Duration::from_secs(180)).await;
    // `wallet balance` reads the store watch writes; SQLite takes the second reader.
    assert_eq!(
        stack.wallet_ok(&["balance"]).trim(),
        format!("{total} hash")
    );
    watch.terminate(Duration::from_secs(10));
    // The mint died under a batch in flight, which watch resolved after the restart.
    assert!(
        watch
            .output()
            .contains("interrupted mint requests resolved"),
        "{}",
        watch.output()
    );
    assert_settled(&stack, QUOTES + 300, total).await;
}
