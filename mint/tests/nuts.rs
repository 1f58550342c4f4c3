//! The NUTs the mint advertises, each checked against the real thing: the machine's Redis, the
//! mint started in-process, and cdk wallets (or a raw websocket) talking to it over the network.
//! NUT-06 info, NUT-09 restore, NUT-11 P2PK, NUT-12 DLEQ, NUT-17 websocket, NUT-19 cached
//! responses.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cdk::amount::{FeeAndAmounts, SplitTarget};
use cdk::nuts::nut17::{deserialize_payload_for_kind, Kind};
use cdk::nuts::{
    BlindedMessage, Id, Keys, KeysResponse, MintQuoteCustomResponse, NotificationPayload,
    PreMintSecrets, Proofs, RestoreRequest, RestoreResponse, SpendingConditions, SwapRequest,
    SwapResponse,
};
use cdk::wallet::{ReceiveOptions, SendOptions};
use cdk::Amount;
use ehash::{QuoteMessage, UpdateQuote};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use common::{miner_key, share, Harness};

/// The `hash` keyset as `GET /v1/keys` serves it.
async fn hash_keyset(harness: &Harness) -> (Id, Keys) {
    let (status, body) = harness.http_get("/v1/keys").await;
    assert_eq!(status, 200, "{body}");
    let keys: KeysResponse = serde_json::from_value(body).unwrap();
    let keyset = keys
        .keysets
        .into_iter()
        .find(|keyset| keyset.unit.to_string() == ehash::UNIT)
        .expect("the mint serves a hash keyset");
    (keyset.id, keyset.keys)
}

fn total(proofs: &Proofs) -> u64 {
    proofs.iter().map(|proof| u64::from(proof.amount)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut06_info_advertises_exactly_what_the_mint_serves() {
    let mut harness = Harness::start("nut06").await;
    let (status, info) = harness.http_get("/v1/info").await;
    assert_eq!(status, 200, "{info}");
    let nuts = &info["nuts"];

    let advertised: BTreeSet<&str> = nuts
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "4", "5", "7", "8", "9", "10", "11", "12", "14", "17", "19", "20", "29",
    ]
    .into();
    assert_eq!(advertised, expected, "{nuts}");

    // NUT-04: one method, ehash, for unit hash (ehash quotes) and sat (payout-epoch quotes).
    assert_eq!(nuts["4"]["disabled"], false, "{nuts}");
    let methods: Vec<(&str, &str)> = nuts["4"]["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|method| {
            (
                method["method"].as_str().unwrap(),
                method["unit"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(methods, [("ehash", "hash"), ("ehash", "sat")], "{nuts}");
    // NUT-05: nothing to melt into.
    assert_eq!(nuts["5"], json!({"methods": [], "disabled": true}));

    let supported: BTreeMap<&str, bool> = ["7", "8", "9", "10", "11", "12", "14", "20"]
        .into_iter()
        .map(|nut| (nut, nuts[nut]["supported"].as_bool().unwrap()))
        .collect();
    let expected_supported: BTreeMap<&str, bool> = [
        ("7", true),
        // NUT-08 is the melt fee return: no melts, no fee return.
        ("8", false),
        ("9", true),
        ("10", true),
        ("11", true),
        ("12", true),
        ("14", true),
        ("20", true),
    ]
    .into();
    assert_eq!(supported, expected_supported, "{nuts}");

    // NUT-17: the quote kind of our method and proof states, per unit; no melt quotes.
    assert_eq!(
        nuts["17"],
        json!({"supported": [{
            "method": "ehash",
            "unit": "hash",
            "commands": ["ehash_mint_quote", "proof_state"],
        }, {
            "method": "ehash",
            "unit": "sat",
            "commands": ["ehash_mint_quote", "proof_state"],
        }]})
    );
    // NUT-19: the advertised cached endpoints, with the TTL (mint routes are cached but not
    // advertised, see `cached_endpoints`).
    assert_eq!(nuts["19"]["ttl"], hashpool_mint::http::RESPONSE_CACHE_SECS);
    let cached: BTreeSet<(String, String)> = nuts["19"]["cached_endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|endpoint| {
            (
                endpoint["method"].as_str().unwrap().to_owned(),
                endpoint["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected_cached: BTreeSet<(String, String)> = [("POST", "/v1/swap")]
        .into_iter()
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    assert_eq!(cached, expected_cached);
    // NUT-29: batch minting of ehash quotes, as many per batch as the body limit takes.
    let keyset =
        harness.server().mint().get_active_keysets()[&cdk::nuts::CurrencyUnit::custom(ehash::UNIT)];
    let expected = hashpool_mint::limits::BatchWireSize::measure(keyset)
        .max_batch_size(hashpool_mint::MintConfig::default().max_body_bytes)
        .unwrap();
    assert_eq!(
        nuts["29"],
        json!({"max_batch_size": expected, "methods": ["ehash"]})
    );

    // What is not advertised is refused with a cashu error, not served and not a 500.
    let (status, body) = harness
        .http_post(
            "/v1/melt/quote/ehash",
            r#"{"request":"anything","unit":"hash"}"#,
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // cdk answers an unsupported payment method with its generic code.
    assert_eq!(body["code"], 50000, "{body}");
    let (status, body) = harness.http_get("/v1/keys").await;
    assert_eq!(status, 200);
    assert_eq!(body["keysets"].as_array().unwrap().len(), 2, "{body}");
    let units: BTreeSet<&str> = body["keysets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|keyset| keyset["unit"].as_str().unwrap())
        .collect();
    assert_eq!(
        units,
        BTreeSet::from(["hash", "sat"]),
        "one keyset per unit: hash for ehash, sat for payout epochs: {body}"
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut09_restore_recovers_exactly_the_unspent_balance() {
    let mut harness = Harness::start("nut09").await;
    let seed: [u8; 64] = rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap();
    let (secret, _) = miner_key();
    let original = harness.wallet_with_seed(seed).await;
    let first = harness.paid_quote(&original, &secret, 1000).await;
    let second = harness.paid_quote(&original, &secret, 24).await;
    // NUT-29: both quotes in one batch request.
    let proofs = original
        .batch_mint(
            &[&first.quote_id.to_string(), &second.quote_id.to_string()],
            SplitTarget::default(),
            None,
            Some(
                [
                    (first.quote_id.to_string(), secret.clone()),
                    (second.quote_id.to_string(), secret.clone()),
                ]
                .into(),
            ),
        )
        .await
        .expect("a batch mint of two PAID quotes");
    assert_eq!(total(&proofs), 1024);

    // Spend part of it: another wallet receives 300, which swaps the sent proofs.
    let token = original
        .prepare_send(Amount::from(300), SendOptions::default())
        .await
        .unwrap()
        .confirm(None)
        .await
        .unwrap();
    let receiver = harness.wallet().await;
    let received = receiver
        .receive(&token.to_string(), ReceiveOptions::default())
        .await
        .unwrap();
    assert_eq!(u64::from(received), 300);
    assert_eq!(u64::from(original.total_balance().await.unwrap()), 724);

    // The same seed with an empty store gets back what is unspent, and only that.
    let restored_wallet = harness.wallet_with_seed(seed).await;
    assert_eq!(u64::from(restored_wallet.total_balance().await.unwrap()), 0);
    let restored = restored_wallet.restore().await.expect("NUT-09 restore");
    assert_eq!(u64::from(restored.unspent), 724, "{restored:?}");
    assert_eq!(u64::from(restored.pending), 0, "{restored:?}");
    assert!(
        u64::from(restored.spent) >= 300,
        "the proofs the receiver swapped are known spent: {restored:?}"
    );
    assert_eq!(
        u64::from(restored_wallet.total_balance().await.unwrap()),
        724
    );

    // The restored proofs are real: the mint accepts them in a swap.
    let proofs = restored_wallet
        .get_unspent_proofs()
        .await
        .expect("restored proofs are in the store");
    assert_eq!(total(&proofs), 724);
    restored_wallet
        .swap(None, SplitTarget::default(), proofs, None, false, false)
        .await
        .expect("restored proofs swap");
    assert_eq!(
        u64::from(restored_wallet.total_balance().await.unwrap()),
        724
    );

    // A stranger's seed restores nothing.
    let stranger = harness.wallet().await;
    let nothing = stranger.restore().await.unwrap();
    assert_eq!(
        (
            u64::from(nothing.unspent),
            u64::from(nothing.spent),
            u64::from(nothing.pending)
        ),
        (0, 0, 0)
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut12_every_signature_carries_a_dleq_proof_that_verifies() {
    let mut harness = Harness::start("nut12").await;
    let (status, info) = harness.http_get("/v1/info").await;
    assert_eq!(status, 200);
    assert_eq!(info["nuts"]["12"]["supported"], true, "{info}");
    let (keyset_id, keys) = hash_keyset(&harness).await;

    // Minted proofs: each DLEQ verifies against the key of its amount, and only that key.
    let (secret, _) = miner_key();
    let wallet = harness.wallet().await;
    let create = harness.paid_quote(&wallet, &secret, 1000).await;
    let proofs = wallet
        .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .unwrap();
    assert_eq!(total(&proofs), 1000);
    assert!(proofs.len() > 1);
    for proof in &proofs {
        assert_eq!(proof.keyset_id, keyset_id);
        assert!(proof.dleq.is_some(), "minted proof without DLEQ: {proof:?}");
        let key = keys.amount_key(proof.amount).unwrap();
        proof
            .verify_dleq(key)
            .unwrap_or_else(|error| panic!("DLEQ of a {} proof: {error}", proof.amount));
        let wrong_key = keys
            .amount_key(Amount::from(u64::from(proof.amount) * 2))
            .unwrap();
        assert!(
            proof.verify_dleq(wrong_key).is_err(),
            "a DLEQ verifies only against the signing key"
        );
    }

    // Swap signatures (raw NUT-03), checked against the blinded messages we sent.
    let fees: FeeAndAmounts = (0, (0..64).map(|bit| 1u64 << bit).collect()).into();
    let outputs = PreMintSecrets::random(
        keyset_id,
        Amount::from(1000),
        &SplitTarget::default(),
        &fees,
    )
    .unwrap();
    let request = SwapRequest::new(proofs.clone(), outputs.blinded_messages());
    let body = serde_json::to_string(&request).unwrap();
    let (status, response) = harness.http_post("/v1/swap", &body).await;
    assert_eq!(status, 200, "{response}");
    let swapped: SwapResponse = serde_json::from_value(response).unwrap();
    assert_signatures_verify(&swapped.signatures, &outputs.blinded_messages(), &keys);

    // NUT-19: the same swap sent again (a wallet that lost the answer) gets the same
    // signatures from the cache instead of "already spent".
    let (status, replay) = harness.http_post("/v1/swap", &body).await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(
        serde_json::from_value::<SwapResponse>(replay).unwrap(),
        swapped
    );
    // A different swap of the same inputs is refused: they are spent (NUT-07 code 11001).
    let other =
        PreMintSecrets::random(keyset_id, Amount::from(1000), &SplitTarget::None, &fees).unwrap();
    let (status, refused) = harness
        .http_post(
            "/v1/swap",
            &serde_json::to_string(&SwapRequest::new(proofs, other.blinded_messages())).unwrap(),
        )
        .await;
    assert_eq!(
        (status, &refused["code"]),
        (400, &json!(11001)),
        "{refused}"
    );

    // Restored signatures (NUT-09) carry DLEQ proofs as well.
    let restore = RestoreRequest {
        outputs: outputs.blinded_messages(),
    };
    let (status, response) = harness
        .http_post("/v1/restore", &serde_json::to_string(&restore).unwrap())
        .await;
    assert_eq!(status, 200, "{response}");
    let restored: RestoreResponse = serde_json::from_value(response).unwrap();
    assert_eq!(restored.signatures.len(), outputs.blinded_messages().len());
    assert_signatures_verify(&restored.signatures, &restored.outputs, &keys);
    harness.stop().await;
}

fn assert_signatures_verify(
    signatures: &[cdk::nuts::BlindSignature],
    outputs: &[BlindedMessage],
    keys: &Keys,
) {
    assert_eq!(signatures.len(), outputs.len());
    for (signature, output) in signatures.iter().zip(outputs) {
        assert_eq!(signature.amount, output.amount);
        let key = keys.amount_key(signature.amount).unwrap();
        signature
            .verify_dleq(key, output.blinded_secret)
            .unwrap_or_else(|error| panic!("DLEQ of a {} signature: {error}", signature.amount));
        let other_message = outputs
            .iter()
            .find(|other| other.blinded_secret != output.blinded_secret)
            .unwrap();
        assert!(signature
            .verify_dleq(key, other_message.blinded_secret)
            .is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut11_p2pk_locked_ecash_needs_the_key() {
    let mut harness = Harness::start("nut11").await;
    let (secret, _) = miner_key();
    let sender = harness.wallet().await;
    let create = harness.paid_quote(&sender, &secret, 64).await;
    sender
        .mint(&create.quote_id.to_string(), SplitTarget::default(), None)
        .await
        .unwrap();

    let (lock, _) = miner_key();
    let token = sender
        .prepare_send(
            Amount::from(40),
            SendOptions {
                conditions: Some(SpendingConditions::new_p2pk(lock.public_key(), None)),
                ..SendOptions::default()
            },
        )
        .await
        .unwrap()
        .confirm(None)
        .await
        .unwrap()
        .to_string();

    let thief = harness.wallet().await;
    let error = thief
        .receive(&token, ReceiveOptions::default())
        .await
        .expect_err("P2PK-locked ecash without the key");
    assert!(
        matches!(
            error,
            cdk::Error::NUT11(cdk::nuts::nut11::Error::SignaturesNotProvided)
        ),
        "{error:?}"
    );
    assert_eq!(u64::from(thief.total_balance().await.unwrap()), 0);

    let owner = harness.wallet().await;
    let received = owner
        .receive(
            &token,
            ReceiveOptions {
                p2pk_signing_keys: vec![lock],
                ..ReceiveOptions::default()
            },
        )
        .await
        .expect("the key holder receives");
    assert_eq!(u64::from(received), 40);
    harness.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text message from the mint, within 10 s.
async fn next_message(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the mint sends within 10 s")
            .expect("the websocket stays open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

async fn subscribe(
    socket: &mut Socket,
    request_id: u64,
    kind: &str,
    sub_id: &str,
    filters: &[String],
) {
    let request = json!({
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscribe",
        "params": {"kind": kind, "subId": sub_id, "filters": filters},
    });
    socket
        .send(Message::Text(request.to_string().into()))
        .await
        .unwrap();
    let answer = next_message(socket).await;
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": request_id, "result": {"status": "OK", "subId": sub_id}})
    );
}

/// The payload of the next notification, checked to be for `sub_id`.
async fn next_notification(socket: &mut Socket, sub_id: &str) -> Value {
    let message = next_message(socket).await;
    assert_eq!(message["method"], "subscribe", "{message}");
    assert_eq!(message["params"]["subId"], sub_id, "{message}");
    message["params"]["payload"].clone()
}

/// The next `ehash_mint_quote` notification for `sub_id`, decoded as a cdk wallet decodes it.
/// (cdk 0.18.3 sends a custom method's quote as `[method, quote]`, not the bare quote object.)
async fn quote_notification(socket: &mut Socket, sub_id: &str) -> MintQuoteCustomResponse<String> {
    let payload = next_notification(socket, sub_id).await;
    let kind = Kind::Custom(format!("{}_mint_quote", ehash::PAYMENT_METHOD));
    match deserialize_payload_for_kind::<String, serde_json::Error>(&kind, payload.clone()) {
        Ok(NotificationPayload::CustomMintQuoteResponse(method, response)) => {
            assert_eq!(method, ehash::PAYMENT_METHOD, "{payload}");
            response
        }
        other => panic!("not an ehash quote notification: {other:?} from {payload}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nut17_websocket_pushes_quote_and_proof_states() {
    let mut harness = Harness::start("nut17").await;
    let url = format!("ws://{}/v1/ws", harness.server().http_address());
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("the websocket upgrade");

    // The wallet subscribes before the pool has even created the quote.
    let (secret, locking) = miner_key();
    let create = share(locking, 1000);
    let quote_id = create.quote_id.to_string();
    subscribe(
        &mut socket,
        0,
        "ehash_mint_quote",
        "my-quote",
        std::slice::from_ref(&quote_id),
    )
    .await;

    harness.push(&QuoteMessage::Create(create.clone())).await;
    let unpaid = quote_notification(&mut socket, "my-quote").await;
    assert_eq!(unpaid.quote, quote_id);
    assert_eq!(unpaid.amount, Some(Amount::from(1000)));
    assert_eq!(
        (unpaid.amount_paid, unpaid.amount_issued),
        (Amount::ZERO, Amount::ZERO),
        "UNPAID: {unpaid:?}"
    );
    assert_eq!(
        unpaid.pubkey.map(|key| key.to_hex()),
        Some(locking.to_string())
    );
    assert_eq!(
        unpaid.unit.map(|unit| unit.to_string()).as_deref(),
        Some("hash")
    );

    harness
        .push(&QuoteMessage::Update(UpdateQuote::paid(vec![
            create.quote_id,
        ])))
        .await;
    let paid = quote_notification(&mut socket, "my-quote").await;
    assert_eq!(paid.quote, quote_id);
    assert_eq!(
        (paid.amount_paid, paid.amount_issued),
        (Amount::from(1000), Amount::ZERO),
        "PAID: {paid:?}"
    );
    // Both notifications came from the mint's own SQLite writer, which wrote both batches.
    let writer = harness.server().quotes().sqlite_writer().unwrap();
    assert_eq!(writer.committed(), 2);

    // The key holder mints: the quote becomes ISSUED.
    let wallet = harness.wallet().await;
    common::adopt_quote(&wallet, &create, &secret).await;
    let proofs = wallet
        .mint(&quote_id, SplitTarget::default(), None)
        .await
        .unwrap();
    let issued = quote_notification(&mut socket, "my-quote").await;
    assert_eq!(issued.quote, quote_id);
    assert_eq!(
        (issued.amount_paid, issued.amount_issued),
        (Amount::from(1000), Amount::from(1000)),
        "ISSUED: {issued:?}"
    );

    // Proof states: the minted proofs become SPENT when swapped.
    let ys: Vec<String> = proofs
        .iter()
        .map(|proof| proof.y().unwrap().to_hex())
        .collect();
    subscribe(&mut socket, 1, "proof_state", "my-proofs", &ys).await;
    wallet
        .swap(None, SplitTarget::default(), proofs, None, false, false)
        .await
        .unwrap();
    let mut spent = BTreeSet::new();
    while spent.len() < ys.len() {
        let state = next_notification(&mut socket, "my-proofs").await;
        let y = state["Y"].as_str().unwrap().to_owned();
        assert!(ys.contains(&y), "{state}");
        match state["state"].as_str().unwrap() {
            "SPENT" => {
                spent.insert(y);
            }
            "PENDING" => {}
            other => panic!("unexpected proof state {other}: {state}"),
        }
    }
    harness.stop().await;
}
