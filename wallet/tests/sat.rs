//! Payout-epoch ecash in the wallet: the same mnemonic and key hold `sat` beside `hash`, and
//! `--unit sat` mints an epoch's quotes once its payout is released, exactly the payout.

mod common;

use std::time::Duration;

use common::Stack;

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
