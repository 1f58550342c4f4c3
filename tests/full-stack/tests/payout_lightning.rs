//! Payout epochs over real Lightning: the pool and the mint in-process with the mint's own LDK
//! node, a second LDK node as the payer, real Redis and the pinned bitcoind.
//!
//! Shares wait in epoch 1 as `sat` quotes; the pool's block closes it; the payer pays the mint
//! node's BOLT12 payout offer; the mint's watcher tells the pool (signed callback, nobody in the
//! loop); the pool releases the epoch; the mint checks the release against the payment it
//! received and pays the quotes; the miner's wallet mints exactly the payout, then withdraws part
//! of it to the payer's BOLT11 invoice (NUT-05 melt), and the same proofs cannot be melted again.

use std::collections::HashMap;

use cdk::nuts::Proofs;
use ehash::ReleasePolicy;
use hashpool_mint::config::{LightningConfig, PayoutCallbackConfig};
use hashpool_mint::{MintConfig, MintServer};
use hashpool_pool::Pool;
use hashpool_testkit::{free_port, post_json, wait_for, wait_for_within};
use hashpool_wallet::{MinerWallet, WalletDir, WalletKeys, WalletUnit};
use ldk_node::bitcoin::hashes::Hash;
use ldk_node::lightning_invoice::{Bolt11InvoiceDescription, Description};
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use redis::AsyncCommands;

mod common;

use common::lightning::{fund, listen_address, open_channel, start_node, CHAIN_SYNC};
use common::{mine_shares, redis_connection, Regtest};

const SECRET: &str = "the operator's payout callback secret";
const CHANNEL_SAT: u64 = 1_000_000;
const PAYOUT_MSAT: u64 = 50_000_000;
const WITHDRAW_SAT: u64 = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bolt12_payout_is_minted_in_sats_and_withdrawn_over_lightning() {
    let chain = Regtest::start("full-stack-lightning");
    let dir = chain.dir.path();
    let secret_file = dir.join("payout-secret");
    hashpool_service::create_secret(&secret_file, SECRET).unwrap();
    let pool_http = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));

    // The mint with its node, calling the pool's payout endpoint.
    let mint_p2p = listen_address();
    let mut mint_config = MintConfig::ephemeral(dir, chain.stream.clone());
    mint_config.lightning = Some(LightningConfig {
        storage_dir: dir.join("mint-ldk"),
        listen_address: match &mint_p2p {
            ldk_node::lightning::ln::msgs::SocketAddress::TcpIpV4 { addr, port } => {
                std::net::SocketAddr::from((*addr, *port))
            }
            other => panic!("{other}"),
        },
        bitcoind_rpc_port: chain.node.rpc_port(),
        bitcoind_cookie_file: chain.node.cookie_file(),
        offer_file: dir.join("payout-offer"),
        payout_callback: Some(PayoutCallbackConfig {
            url: format!("http://{pool_http}/payout"),
            secret_file: secret_file.clone(),
        }),
        ..LightningConfig::default()
    });
    let mint = MintServer::start(mint_config).await.unwrap();
    let mint_node = mint.lightning().unwrap().node();

    // The payer opens a channel to the mint; the mint's node then makes its payout offer.
    let payer = start_node(&chain.node, &dir.join("payer-ldk"));
    fund(&chain.node, &[&payer, &mint_node]).await;
    open_channel(&chain.node, &payer, &mint_node, mint_p2p, CHANNEL_SAT).await;
    let mut offer = None;
    wait_for_within("the mint's payout offer", CHAIN_SYNC, async || {
        offer = mint.payouts().offer().await.unwrap();
        offer.is_some()
    })
    .await;
    let offer: ldk_node::lightning::offers::offer::Offer = offer.unwrap().parse().unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("payout-offer"))
            .unwrap()
            .trim(),
        offer.to_string()
    );

    // The pool, on the chain as it is now: its first share's block closes epoch 1.
    let mut config = chain.pool_config();
    config.http_address = pool_http;
    config.release_policy = ReleasePolicy::PayoutEpoch;
    config.payout.callback_secret_file = Some(secret_file);
    config.bitcoind.template_poll_ms = 600_000;
    let pool = Pool::start(config).await.unwrap();
    let wallet_dir = WalletDir::new(dir.join("wallet"));
    let keys = WalletKeys::create(&wallet_dir, None).unwrap();
    mine_shares(&pool, &keys.pubkey(), 3).await;
    wait_for("epoch 1 closed by the pool's block", async || {
        pool.metrics().blocks_found.get() == 1
    })
    .await;
    let quotes_metrics = pool.quote_metrics().clone();
    wait_for("every create published", async || {
        quotes_metrics.buffered() == 0
    })
    .await;
    let epoch_one: HashMap<String, u64> = redis_connection()
        .await
        .hgetall(ehash::epoch_totals_key(&chain.stream, 1))
        .await
        .unwrap();

    // The payout: a BOLT12 payment to the offer, naming its epoch. Nothing else is done by hand.
    payer
        .bolt12_payment()
        .send_using_amount(&offer, PAYOUT_MSAT, None, Some("epoch:1".to_owned()), None)
        .unwrap();
    wait_for_within("the mint pays epoch 1", CHAIN_SYNC, async || {
        mint.metrics().quotes_paid.get() == epoch_one["quotes"]
    })
    .await;
    let payout = PAYOUT_MSAT / 1000;

    let wallet = MinerWallet::open_in(&wallet_dir, &mint.url(), WalletUnit::Sat)
        .await
        .unwrap();
    let minted = wallet.mint_paid().await.unwrap();
    assert_eq!(minted.amount, payout, "the miner mints exactly the payout");
    assert_eq!(minted.quotes as u64, epoch_one["quotes"]);
    assert_eq!(wallet.balance().await.unwrap(), payout);

    // Withdraw to the payer's invoice: the payer receives it, the change comes back.
    let invoice = payer
        .bolt11_payment()
        .receive(
            WITHDRAW_SAT * 1000,
            &Bolt11InvoiceDescription::Direct(Description::new("withdrawal".to_owned()).unwrap()),
            3600,
        )
        .unwrap();
    let spent: Proofs = wallet.cdk().get_unspent_proofs().await.unwrap();
    let paid = wallet.withdraw(&invoice.to_string()).await.unwrap();
    assert_eq!(paid.amount, WITHDRAW_SAT);
    assert_eq!(paid.fee_paid, 0, "a direct channel routes for free");
    assert_eq!(wallet.balance().await.unwrap(), payout - WITHDRAW_SAT);
    let invoice_hash = invoice.payment_hash().to_byte_array();
    let received = payer.list_payments_with_filter(|payment| {
        payment.direction == PaymentDirection::Inbound
            && matches!(payment.kind, PaymentKind::Bolt11 { hash, .. } if hash.0 == invoice_hash)
    });
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].status, PaymentStatus::Succeeded);
    assert_eq!(received[0].amount_msat, Some(WITHDRAW_SAT * 1000));

    // The melted proofs are spent: a second melt with them is refused (NUT-05, code 11001).
    let second = payer
        .bolt11_payment()
        .receive(
            1000,
            &Bolt11InvoiceDescription::Direct(Description::new("again".to_owned()).unwrap()),
            3600,
        )
        .unwrap();
    let (status, quote) = post_json(
        mint.http_address(),
        "/v1/melt/quote/bolt11",
        &[],
        &serde_json::json!({ "request": second.to_string(), "unit": "sat" }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{quote}");
    let (status, refused) = post_json(
        mint.http_address(),
        "/v1/melt/bolt11",
        &[],
        &serde_json::json!({ "quote": quote["quote"], "inputs": spent }).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["code"], 11001, "{refused}");

    // The mint recorded the payment it was paid with, bound to the epoch it released.
    let payments = mint_node.list_payments_with_filter(|payment| {
        payment.direction == PaymentDirection::Inbound
            && matches!(payment.kind, PaymentKind::Bolt12Offer { .. })
    });
    assert_eq!(payments.len(), 1);
    let PaymentKind::Bolt12Offer {
        hash: Some(hash), ..
    } = payments[0].kind
    else {
        panic!("{payments:?}")
    };
    assert_eq!(
        mint.payouts()
            .received_msat(&hex::encode(hash.0))
            .await
            .unwrap(),
        Some(PAYOUT_MSAT)
    );

    payer.stop().unwrap();
    pool.shutdown().await;
    mint.shutdown().await;
}
