//! The unit across its whole range: a quote for a share at any power-of-two target, from
//! difficulty 2^-20 to 2^20 and up to the largest the unit expresses, mints exactly the expected
//! hashes its target proves, in units of 2^12 hashes. Quotes go through the real stream to the
//! mint; a cdk wallet mints them over HTTP.

mod common;

use std::sync::Arc;

use cdk::amount::SplitTarget;
use cdk::nuts::CurrencyUnit;
use cdk::wallet::{Wallet, WalletBuilder};
use common::{miner_key, Harness};
use ehash::{credited_work, expected_hashes, ShareWork, HASHES_PER_UNIT_LOG2};

/// A cdk wallet of the harness's mint with a fresh seed, without cdk's request pacing (it mints
/// one quote at a time here).
async fn fresh_wallet(harness: &Harness) -> Wallet {
    WalletBuilder::new()
        .mint_url(harness.server().url().parse().unwrap())
        .unit(CurrencyUnit::custom(ehash::UNIT))
        .localstore(Arc::new(cdk_sqlite::wallet::memory::empty().await.unwrap()))
        .seed(rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap())
        .without_rate_limiting()
        .build()
        .unwrap()
}

/// Mints `quotes` in `wallet`; returns the wallet's balance.
async fn mint_all(wallet: &Wallet, quotes: &[ehash::CreateQuote]) -> u64 {
    for quote in quotes {
        wallet
            .mint(&quote.quote_id.to_string(), SplitTarget::default(), None)
            .await
            .unwrap();
    }
    u64::from(wallet.total_balance().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_share_size_mints_exactly_the_hashes_it_proves() {
    let mut harness = Harness::start("unit-range").await;

    // Difficulty 2^-20 (2^12 hashes) to 2^20 (2^52 hashes): one share of each.
    let wallet = fresh_wallet(&harness).await;
    let (secret, _) = miner_key();
    let mut proven: u128 = 0;
    let mut quotes = Vec::new();
    for log2 in 12..=52 {
        let target = ShareWork::from_log2(log2).unwrap().target();
        let amount = credited_work(target.to_le_bytes());
        quotes.push(harness.paid_quote(&wallet, &secret, amount).await);
        proven += expected_hashes(target);
    }
    let minted = mint_all(&wallet, &quotes).await;
    assert_eq!(
        u128::from(minted) << HASHES_PER_UNIT_LOG2,
        proven,
        "minted units times 2^12 are the proven hashes, exactly"
    );
    assert_eq!(proven, (1u128 << 53) - (1u128 << 12));

    // The largest share the unit expresses: 2^74 hashes, 2^62 units.
    let wallet = fresh_wallet(&harness).await;
    let (secret, _) = miner_key();
    let target = ShareWork::MAX.target();
    let quote = harness
        .paid_quote(&wallet, &secret, credited_work(target.to_le_bytes()))
        .await;
    let minted = mint_all(&wallet, &[quote]).await;
    assert_eq!(minted, 1 << 62);
    assert_eq!(
        u128::from(minted) << HASHES_PER_UNIT_LOG2,
        expected_hashes(target)
    );
}
