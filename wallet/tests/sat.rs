//! Payout-epoch ecash in the wallet: the same mnemonic and key hold `sat` beside `hash`, and
//! `--unit sat` mints an epoch's quotes once its payout is released, exactly the payout.

mod common;

use std::time::Duration;

use common::{assert_settled, mint_side, Stack};
use hashpool_testkit::wait_for_within;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_epoch_mints_its_payout_in_sats_beside_hash() {
    let mut stack = Stack::start("wallet-sat").await;
    let hash_total = stack.pay_quotes(&[256, 512]).await;
    stack.pay_epoch(3, &[1, 2, 5], 1000).await;
    stack.wait_stream_applied(Duration::from_secs(60)).await;

    let minted = stack.wallet_ok(&["--unit", "sat", "mint"]);
    assert!(
        minted.starts_with("minted 1000 sat from 3 quotes"),
        "{minted}"
    );
    assert_eq!(
        stack.wallet_ok(&["--unit", "sat", "balance"]).trim(),
        "1000 sat"
    );
    // `balance` names the other unit's holdings too (on stderr; stdout stays the one figure).
    let output = stack.wallet(&["balance"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("also held: 1000 sat"), "{stderr}");
    // The hash quotes are the hash wallet's: untouched by the sat run, minted by the default.
    assert_eq!(stack.wallet_ok(&["balance"]).trim(), "0 hash");
    let minted = stack.wallet_ok(&["mint"]);
    assert!(
        minted.starts_with(&format!("minted {hash_total} hash from 2 quotes")),
        "{minted}"
    );
    assert_eq!(
        stack.wallet_ok(&["--unit", "sat", "balance"]).trim(),
        "1000 sat"
    );
}

/// The mint killed -9 part-way through paying an epoch's quotes (each is paid in its own store
/// transaction) and started again: it applies the release again from the stream, every quote is
/// paid its one share, the epoch adds up to exactly the payout, and the wallet mints exactly it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_killed_mid_release_pays_the_epoch_exactly_once_after_restart() {
    const QUOTES: usize = 2000;
    let mut stack = Stack::start("wallet-sat-killed").await;
    let works: Vec<u64> = (0..QUOTES as u64).map(|i| 1 + i % 7).collect();
    let payout = 1_000_003;
    stack.pay_epoch(5, &works, payout).await;

    let (store, locking) = (stack.mint_store(), stack.locking);
    wait_for_within(
        "the release under way",
        Duration::from_secs(120),
        async || mint_side(&store, &locking).await.paid > 0,
    )
    .await;
    stack.kill_mint();
    let partly = mint_side(&store, &locking).await;
    assert!(
        partly.paid > 0 && partly.paid < payout,
        "killed part-way: {partly:?}"
    );

    stack.restart_mint().await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;
    let minted = stack.wallet_ok(&["--unit", "sat", "mint"]);
    assert!(
        minted.starts_with(&format!("minted {payout} sat from {QUOTES} quotes")),
        "{minted}"
    );
    assert_settled(&stack, QUOTES, payout).await;
}
