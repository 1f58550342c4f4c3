//! Shared by the mint's integration tests: the machine's Redis, the mint (cdk, SQLite store,
//! stream consumer, HTTP API) started in-process on a free port, a minimal HTTP client, and cdk
//! wallets talking HTTP to the mint. The tests play the pool by appending quote messages to a
//! stream of their own.

// Each test file compiles this module on its own and uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use cdk::nuts::{CurrencyUnit, PaymentMethod, SecretKey};
use cdk::wallet::Wallet;
use cdk::Amount;
use ehash::{CreateQuote, LockingPubkey, QuoteMessage, ReleasePolicy};
use hashpool_mint::config::ConsumerConfig;
use hashpool_mint::{MintConfig, MintServer};
use hashpool_testkit::{eventually, wait_for};
use redis::AsyncCommands;
use tempfile::TempDir;
use uuid::Uuid;

pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A mint on its own store and stream, listening on a free port.
pub fn mint_config(dir: &Path, stream: &str, consumer_name: &str) -> MintConfig {
    let mint = MintConfig::ephemeral(dir, stream.to_owned());
    MintConfig {
        redis: ConsumerConfig {
            consumer_name: Some(consumer_name.to_owned()),
            claim_idle_ms: 300,
            ..mint.redis
        },
        ..mint
    }
}

pub struct Harness {
    pub server: Option<MintServer>,
    pub stream: String,
    pub redis: redis::aio::MultiplexedConnection,
    pub dir: TempDir,
}

impl Harness {
    pub async fn start(test: &str) -> Self {
        Self::start_with(test, |_| {}).await
    }

    /// A mint started with `configure`'s changes to the tests' configuration.
    pub async fn start_with(test: &str, configure: impl FnOnce(&mut MintConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stream = format!("{}quotes", hashpool_testkit::unique_redis_prefix(test));
        let mut config = mint_config(dir.path(), &stream, &format!("{test}-mint"));
        configure(&mut config);
        let server = MintServer::start(config).await.expect("the mint starts");
        let redis = redis::Client::open(REDIS_URL)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        Self {
            server: Some(server),
            stream,
            redis,
            dir,
        }
    }

    pub fn server(&self) -> &MintServer {
        self.server.as_ref().expect("the mint is running")
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    pub async fn push(&mut self, message: &QuoteMessage) {
        self.push_raw(&message.to_json()).await;
    }

    /// Appends `messages` in one round trip, as the pool publishes a batch: the mint finds them
    /// all waiting.
    pub async fn push_all(&mut self, messages: &[QuoteMessage]) {
        let mut pipe = redis::pipe();
        for message in messages {
            pipe.xadd(
                &self.stream,
                "*",
                &[(ehash::STREAM_FIELD, message.to_json())],
            )
            .ignore();
        }
        pipe.query_async::<()>(&mut self.redis).await.unwrap();
    }

    pub async fn push_raw(&mut self, json: &str) {
        let _: String = self
            .redis
            .xadd(&self.stream, "*", &[(ehash::STREAM_FIELD, json)])
            .await
            .unwrap();
    }

    pub async fn http_get(&self, path: &str) -> (u16, serde_json::Value) {
        http_get(&format!("{}{path}", self.server().url())).await
    }

    pub async fn http_post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        http_request(
            "POST",
            &format!("{}{path}", self.server().url()),
            Some(body),
        )
        .await
    }

    pub async fn wait_for_state(&self, quote_id: Uuid, state: &str) -> serde_json::Value {
        eventually(format!("quote {quote_id} to be {state}"), async || {
            let (status, body) = self
                .http_get(&format!("/v1/mint/quote/ehash/{quote_id}"))
                .await;
            (status == 200 && quote_state(&body) == state).then_some(body)
        })
        .await
    }

    /// Waits until the mint has made its consumer group on the stream.
    pub async fn wait_for_consumer_group(&mut self) {
        let stream = self.stream.clone();
        let redis = &mut self.redis;
        wait_for("the mint's consumer group", async || {
            let groups: redis::RedisResult<redis::streams::StreamInfoGroupsReply> =
                redis.xinfo_groups(&stream).await;
            groups.is_ok_and(|reply| {
                reply
                    .groups
                    .iter()
                    .any(|group| group.name == ehash::MINT_CONSUMER_GROUP)
            })
        })
        .await;
    }

    /// A wallet with a fresh random seed and an empty in-memory store.
    pub async fn wallet(&self) -> Wallet {
        let seed: [u8; 64] = rand::random::<[[u8; 32]; 2]>().concat().try_into().unwrap();
        self.wallet_with_seed(seed).await
    }

    /// A wallet with the given seed and an empty in-memory store.
    pub async fn wallet_with_seed(&self, seed: [u8; 64]) -> Wallet {
        self.wallet_in(CurrencyUnit::custom(ehash::UNIT), seed)
            .await
    }

    /// A wallet for `unit` with the given seed and an empty in-memory store.
    pub async fn wallet_in(&self, unit: CurrencyUnit, seed: [u8; 64]) -> Wallet {
        let store = cdk_sqlite::wallet::memory::empty().await.unwrap();
        Wallet::new(&self.server().url(), unit, Arc::new(store), seed, None).unwrap()
    }

    pub async fn pending_count(&mut self) -> usize {
        let reply: redis::streams::StreamPendingReply = self
            .redis
            .xpending(&self.stream, ehash::MINT_CONSUMER_GROUP)
            .await
            .unwrap();
        reply.count()
    }

    /// Waits until the mint has acknowledged every entry it read.
    pub async fn wait_all_acknowledged(&mut self) {
        wait_for("every entry acknowledged", async || {
            self.pending_count().await == 0
        })
        .await;
    }

    /// Has the pool create a quote for `amount` locked to `secret`'s key and release it, then
    /// registers it in `wallet` with its NUT-20 key. Returns the quote once it is PAID.
    pub async fn paid_quote(
        &mut self,
        wallet: &Wallet,
        secret: &SecretKey,
        amount: u64,
    ) -> CreateQuote {
        let locking = LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
        let create = share(locking, amount);
        self.push(&QuoteMessage::Create(create.clone())).await;
        self.push(&QuoteMessage::Update(ehash::UpdateQuote::paid(vec![
            create.quote_id,
        ])))
        .await;
        self.wait_for_state(create.quote_id, "PAID").await;
        adopt_quote(wallet, &create, secret).await;
        create
    }
}

/// UNPAID / PAID / ISSUED from a NUT-04 quote body: cdk's custom-method responses carry
/// amount_paid and amount_issued rather than a state field.
pub fn quote_state(body: &serde_json::Value) -> &'static str {
    if let Some(state) = body["state"].as_str() {
        return match state {
            "PAID" => "PAID",
            "ISSUED" => "ISSUED",
            _ => "UNPAID",
        };
    }
    let paid = body["amount_paid"].as_u64().unwrap_or(0);
    let issued = body["amount_issued"].as_u64().unwrap_or(0);
    match (paid, issued) {
        (0, _) => "UNPAID",
        (paid, issued) if issued >= paid => "ISSUED",
        _ => "PAID",
    }
}

pub async fn http_get(url: &str) -> (u16, serde_json::Value) {
    http_request("GET", url, None).await
}

/// A minimal HTTP/1.1 client over a TcpStream, so the tests see exactly what a wallet sees.
pub async fn http_request(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.split(' ').nth(1).unwrap().parse().unwrap();
    let (_, payload) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let payload = dechunk(payload);
    let json = serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload));
    (status, json)
}

fn dechunk(payload: &str) -> String {
    // axum answers Connection: close requests with a Content-Length or chunked body.
    let mut out = String::new();
    let mut rest = payload;
    loop {
        let Some((size_line, after)) = rest.split_once("\r\n") else {
            return payload.to_owned();
        };
        let Ok(size) = usize::from_str_radix(size_line.trim(), 16) else {
            return payload.to_owned();
        };
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

pub fn miner_key() -> (SecretKey, LockingPubkey) {
    let secret = SecretKey::generate();
    let locking = LockingPubkey::from_str(&secret.public_key().to_hex()).unwrap();
    (secret, locking)
}

pub fn share(locking: LockingPubkey, amount: u64) -> CreateQuote {
    CreateQuote::for_share(hashpool_testkit::accepted_share(locking, amount, 102))
}

/// A payout-epoch share: a quote in `sat` for `work` units of work, in `epoch`.
pub fn epoch_share(locking: LockingPubkey, work: u64, epoch: u64) -> CreateQuote {
    CreateQuote::for_share_under(
        ReleasePolicy::PayoutEpoch,
        hashpool_testkit::accepted_share(locking, work, epoch),
    )
}

/// Registers an externally created quote in the wallet with its NUT-20 key, as the hashpool
/// wallet does after the signed lookup.
pub async fn adopt_quote(wallet: &Wallet, create: &CreateQuote, secret: &SecretKey) {
    let quote = cdk::wallet::MintQuote::new(
        create.quote_id.to_string(),
        wallet.mint_url.clone(),
        PaymentMethod::Custom(ehash::PAYMENT_METHOD.to_owned()),
        // An epoch quote has no amount until its payout lands.
        (create.unit == ehash::UNIT).then(|| Amount::from(create.amount)),
        wallet.unit.clone(),
        format!("ehash:{}", create.share_hash),
        create.created_at + 3600 * 24 * 365,
        Some(secret.clone()),
    );
    wallet.localstore.add_mint_quote(quote).await.unwrap();
}

/// The body of a NUT-04 mint request for `amount` on `quote_id`, with fresh outputs on the hash
/// keyset and signed with `secret` (NUT-20): what a wallet would send, without the wallet's own
/// checks in front.
pub fn signed_mint_request(
    harness: &Harness,
    quote_id: Uuid,
    amount: u64,
    secret: &SecretKey,
) -> String {
    let keyset_id =
        harness.server().mint().get_active_keysets()[&CurrencyUnit::custom(ehash::UNIT)];
    let amounts: cdk::amount::FeeAndAmounts = (0, (0..64).map(|bit| 1u64 << bit).collect()).into();
    let outputs = cdk::nuts::PreMintSecrets::random(
        keyset_id,
        Amount::from(amount),
        &cdk::amount::SplitTarget::None,
        &amounts,
    )
    .unwrap();
    let mut request = cdk::nuts::MintRequest {
        quote: quote_id.to_string(),
        outputs: outputs.blinded_messages(),
        signature: None,
    };
    request.sign(secret).unwrap();
    serde_json::to_string(&request).unwrap()
}
