//! Payout epochs over real Lightning: the pool and the mint in-process with the mint's own LDK
//! node, a second LDK node as the payer, real Redis and the pinned bitcoind.
//!
//! Two miners' shares wait in epochs 1 and 2 as `sat` quotes; the pool's blocks close them (the
//! second after a pool restart); the payer pays the mint node's BOLT12 payout offer once per
//! epoch; the mint's watcher tells the pool (signed callback, nobody in the loop); the pool
//! releases each epoch; the mint checks each release against the payment it received and pays the
//! quotes; each wallet mints exactly its largest-remainder share of each payout; one withdraws
//! to the payer's BOLT11 invoice (NUT-05 melt), and the same proofs cannot be melted again.

use std::collections::{BTreeMap, HashMap};

use cdk::nuts::Proofs;
use ehash::{CreateQuote, QuoteMessage, ReleasePolicy};
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
/// Epoch 1's payout and epoch 2's (with msat the pool rounds down).
const PAYOUT_MSAT: [u64; 2] = [30_000_000, 50_000_777];
const WITHDRAW_SAT: u64 = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_miners_mint_their_split_of_each_bolt12_payout_and_withdraw_over_lightning() {
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
    let (status, info) = hashpool_testkit::http_request(
        mint.http_address(),
        "GET",
        "/v1/hashpool/lightning",
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["offer"], offer.to_string());
    assert_eq!(info["node_id"], mint_node.node_id().to_string());
    assert_eq!(info["usable_channels"], 1);

    // The pool, on the chain as it is now. Its template is refreshed only on a restart, so
    // miner A's first share is its block and closes epoch 1; A's and B's later shares are on a
    // stale template (no more blocks) in epoch 2, which B's first share after a restart closes.
    let mut config = chain.pool_config();
    config.http_address = pool_http;
    config.release_policy = ReleasePolicy::PayoutEpoch;
    config.payout.callback_secret_file = Some(secret_file);
    config.bitcoind.template_poll_ms = 600_000;
    let (wallet_a, key_a) = miner_wallet(&dir.join("wallet-a"));
    let (wallet_b, key_b) = miner_wallet(&dir.join("wallet-b"));
    // A consumer group of the test's own, which never reads: the mint trims only what every
    // group acknowledged, so the creates stay on the stream for the test to read.
    let _: () = redis_connection()
        .await
        .xgroup_create_mkstream(&chain.stream, "test-observer", "0")
        .await
        .unwrap();
    let pool = Pool::start(config.clone()).await.unwrap();
    mine_shares(&pool, &key_a, 3).await;
    mine_shares(&pool, &key_b, 3).await;
    wait_for("epoch 1 closed by the pool's block", async || {
        pool.metrics().blocks_found.get() == 1
    })
    .await;
    wait_until_published(&pool).await;
    pool.shutdown().await;
    let pool = Pool::start(config).await.unwrap();
    mine_shares(&pool, &key_b, 1).await;
    wait_for("epoch 2 closed by the restarted pool's block", async || {
        pool.metrics().blocks_found.get() == 1
    })
    .await;
    wait_until_published(&pool).await;

    // Each payout is a BOLT12 payment to the offer naming its epoch; nothing else is done by
    // hand. An epoch is paid by its own payout only.
    let creates = epoch_creates(&chain.stream).await;
    for (epoch, payout_msat) in [(1, PAYOUT_MSAT[0]), (2, PAYOUT_MSAT[1])] {
        payer
            .bolt12_payment()
            .send_using_amount(
                &offer,
                payout_msat,
                None,
                Some(format!("epoch:{epoch}")),
                None,
            )
            .unwrap();
        let paid_so_far: u64 = (1..=epoch).map(|e| creates[&e].len() as u64).sum();
        wait_for_within(
            format!("the mint pays epoch {epoch}"),
            CHAIN_SYNC,
            async || mint.metrics().quotes_paid.get() == paid_so_far,
        )
        .await;
    }

    // Each wallet mints exactly its largest-remainder share of each payout, together the
    // payouts to the sat.
    let expected = expected_sats(&creates);
    let payouts: u64 = PAYOUT_MSAT.iter().map(|msat| msat / 1000).sum();
    assert_eq!(expected.values().sum::<u64>(), payouts);
    for (wallet, key) in [(&wallet_a, key_a), (&wallet_b, key_b)] {
        let wallet = MinerWallet::open_in(wallet, &mint.url(), WalletUnit::Sat)
            .await
            .unwrap();
        let minted = wallet.mint_paid().await.unwrap();
        assert_eq!(minted.amount, expected[&key], "{key}");
        assert_eq!(wallet.balance().await.unwrap(), expected[&key]);
    }
    assert!(expected[&key_a] > 0 && expected[&key_b] > 0);

    let wallet = MinerWallet::open_in(&wallet_a, &mint.url(), WalletUnit::Sat)
        .await
        .unwrap();
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
    assert_eq!(
        wallet.balance().await.unwrap(),
        expected[&key_a] - WITHDRAW_SAT
    );
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

    // The mint recorded each payment it was paid with, as much as its node received.
    let payments = mint_node.list_payments_with_filter(|payment| {
        payment.direction == PaymentDirection::Inbound
            && matches!(payment.kind, PaymentKind::Bolt12Offer { .. })
    });
    assert_eq!(payments.len(), 2);
    for payment in payments {
        let PaymentKind::Bolt12Offer {
            hash: Some(hash), ..
        } = payment.kind
        else {
            panic!("{payment:?}")
        };
        let received = mint.payouts().received_msat(&hex::encode(hash.0)).await;
        assert_eq!(received.unwrap(), payment.amount_msat);
    }

    payer.stop().unwrap();
    pool.shutdown().await;
    mint.shutdown().await;
}

/// A miner's wallet directory with its key made, and the key.
fn miner_wallet(dir: &std::path::Path) -> (WalletDir, ehash::LockingPubkey) {
    let wallet = WalletDir::new(dir);
    let key = WalletKeys::create(&wallet, None).unwrap().pubkey();
    (wallet, key)
}

async fn wait_until_published(pool: &Pool) {
    let quotes = pool.quote_metrics().clone();
    wait_for("every create published", async || quotes.buffered() == 0).await;
}

/// The creates on the stream, by epoch.
async fn epoch_creates(stream: &str) -> BTreeMap<u64, Vec<CreateQuote>> {
    let entries: redis::streams::StreamRangeReply =
        redis_connection().await.xrange_all(stream).await.unwrap();
    let mut creates: BTreeMap<u64, Vec<CreateQuote>> = BTreeMap::new();
    for entry in entries.ids {
        let json: String = entry.get(ehash::STREAM_FIELD).unwrap();
        if let QuoteMessage::Create(create) = QuoteMessage::from_json(&json).unwrap() {
            creates.entry(create.epoch).or_default().push(create);
        }
    }
    assert_eq!(creates.keys().copied().collect::<Vec<_>>(), [1, 2]);
    creates
}

/// Each key's sats: every epoch's payout split over its quotes by work (largest remainder).
fn expected_sats(creates: &BTreeMap<u64, Vec<CreateQuote>>) -> HashMap<ehash::LockingPubkey, u64> {
    let mut sats = HashMap::new();
    for (epoch, quotes) in creates {
        let payout = PAYOUT_MSAT[*epoch as usize - 1] / 1000;
        let work: Vec<_> = quotes.iter().map(|q| (q.quote_id, q.amount)).collect();
        let split = ehash::split_payout(payout, &work).unwrap();
        for quote in quotes {
            *sats.entry(quote.locking_pubkey).or_insert(0) += split[&quote.quote_id];
        }
    }
    sats
}
