//! Payout-epoch ecash in the wallet: the same mnemonic and key hold `sat` beside `hash`, and
//! `--unit sat` mints an epoch's quotes once its payout is released, exactly the payout.

mod common;

use std::time::Duration;

use cdk::cdk_database::MintQuotesDatabase;
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

/// The mint killed -9 as soon as it has paid some of an epoch's quotes (each is paid in its own
/// store transaction), usually part-way through the release, and started again: it applies the
/// release again from the stream, every quote is paid its one share, the epoch adds up to
/// exactly the payout, and the wallet mints exactly it. (Whether the kill lands part-way or just
/// after the last quote depends on the machine; the outcome must be the same either way.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mint_killed_mid_release_pays_the_epoch_exactly_once_after_restart() {
    const QUOTES: usize = 3000;
    let mut stack = Stack::start("wallet-sat-killed").await;
    let works: Vec<u64> = (0..QUOTES as u64).map(|i| 1 + i % 7).collect();
    let payout = 1_000_003;
    stack.pay_epoch(5, &works, payout).await;

    // One connection to the mint's store, so each look at it is quick.
    let store = cdk_sqlite::MintSqliteDatabase::new(stack.mint_store())
        .await
        .unwrap();
    wait_for_within(
        "the release under way",
        Duration::from_secs(120),
        async || {
            let quotes = store.get_mint_quotes().await.unwrap();
            quotes.iter().any(|quote| quote.amount_paid().value() > 0)
        },
    )
    .await;
    stack.kill_mint();
    let partly = mint_side(&stack.mint_store(), &stack.locking).await;
    assert!(partly.paid > 0 && partly.paid <= payout, "{partly:?}");
    eprintln!("killed with {} of {payout} sat paid", partly.paid);

    stack.restart_mint().await;
    stack.wait_stream_applied(Duration::from_secs(120)).await;
    let minted = stack.wallet_ok(&["--unit", "sat", "mint"]);
    assert!(
        minted.starts_with(&format!("minted {payout} sat from {QUOTES} quotes")),
        "{minted}"
    );
    assert_settled(&stack, QUOTES, payout).await;
}
