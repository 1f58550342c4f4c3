//! The mint's HTTP API in process: the router `mint` serves (cdk-axum's cashu routes, the
//! lookup, and the layers that turn every failure into a cashu error), on a real cdk mint with a
//! SQLite store holding PAID quotes, so that fuzzed bodies naming them reach quote and signature
//! checks rather than stopping at "unknown quote".

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use bitcoin::hashes::Hash;
use cdk::nuts::{CurrencyUnit, Id};
use cdk::Mint;
use ehash::{AcceptedShare, CreateQuote, LockingPubkey, ShareHash, UpdateQuote};
use hashpool_mint::{build_mint, MintConfig, MintMetrics, QuoteBook};
use tempfile::TempDir;
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// The routes a wallet posts a body to. An input's first byte picks one.
pub const ROUTES: [&str; 8] = [
    "/v1/mint/ehash/batch",
    "/v1/mint/ehash",
    "/v1/ehash/quotes",
    "/v1/mint/quote/ehash/check",
    "/v1/swap",
    "/v1/checkstate",
    "/v1/restore",
    "/v1/mint/quote/ehash",
];

/// Secret keys of the miners whose quotes the store holds (fixed, so seeds can sign for them).
pub const MINER_SECRETS: [[u8; 32]; 2] = [[0x11; 32], [0x22; 32]];
/// The mint's seed, fixed so that its keyset ids, which seeds name, are the same in every run.
const MINT_SEED: [u8; 64] = [0x5e; 64];
/// Quotes per miner, each for `1 << index` units of work.
const QUOTES_PER_MINER: u8 = 4;

pub struct MintHttpHarness {
    runtime: Runtime,
    router: Router,
    mint: Arc<Mint>,
    _data: TempDir,
}

impl MintHttpHarness {
    /// The process-wide harness: one mint, its store seeded once.
    pub fn get() -> &'static MintHttpHarness {
        static HARNESS: OnceLock<MintHttpHarness> = OnceLock::new();
        HARNESS.get_or_init(MintHttpHarness::new)
    }

    /// A mint of its own (the same keysets as every other: the seed is fixed).
    #[allow(clippy::new_without_default)] // starting a mint is not a default value
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        let data = tempfile::tempdir().expect("a temporary directory");
        let config = MintConfig::ephemeral(data.path(), "fuzz:quotes".into());
        hashpool_service::create_secret(&config.seed_file, &hex::encode(MINT_SEED))
            .expect("the seed file is written");
        let (router, mint) = runtime.block_on(async {
            let built = build_mint(&config).await.expect("the mint starts");
            let book = QuoteBook::new(built.mint.clone());
            let mut paid = Vec::new();
            for create in paid_quotes() {
                book.create(&create).await.expect("the quote is stored");
                paid.push(create.quote_id);
            }
            book.release(&UpdateQuote::paid(paid))
                .await
                .expect("the quotes are released");
            let router = hashpool_mint::http::router(
                book,
                Arc::new(MintMetrics::default()),
                config.max_body_bytes,
            )
            .await
            .expect("the router builds");
            (router, built.mint)
        });
        Self {
            runtime,
            router,
            mint,
            _data: data,
        }
    }

    /// The mint's active keyset for unit `hash` (seeds build outputs on it).
    pub fn hash_keyset(&self) -> Id {
        self.mint.get_active_keysets()[&CurrencyUnit::custom(ehash::UNIT)]
    }

    /// `input`'s first byte picks a route, the rest is the JSON body posted to it. Whatever the
    /// body, the answer is never a server error, and a refusal is a cashu error body. Returns
    /// the answer's status and body (`None` for an empty input).
    pub fn post(&self, input: &[u8]) -> Option<(StatusCode, serde_json::Value)> {
        let (&route, body) = input.split_first()?;
        let route = ROUTES[usize::from(route) % ROUTES.len()];
        let request = Request::post(route)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("a valid request");
        let (status, body) = self.runtime.block_on(async {
            let response = self
                .router
                .clone()
                .oneshot(request)
                .await
                .expect("the router is infallible");
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("the body is read");
            (status, body)
        });
        assert!(
            !status.is_server_error(),
            "{route} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if status.is_client_error() && status != StatusCode::PAYLOAD_TOO_LARGE {
            assert!(
                json["code"].is_u64() && json["detail"].is_string(),
                "{route} answered {status} without a cashu error: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Some((status, json))
    }
}

/// The miners' PAID quotes, with fixed share hashes (and so fixed quote ids).
pub fn paid_quotes() -> Vec<CreateQuote> {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let mut quotes = Vec::new();
    for (miner, secret) in MINER_SECRETS.iter().enumerate() {
        let secret = bitcoin::secp256k1::SecretKey::from_slice(secret).expect("a valid key");
        let locking = LockingPubkey::from_str(&secret.public_key(&secp).to_string())
            .expect("a compressed key");
        for index in 0..QUOTES_PER_MINER {
            let mut share_hash = [0u8; 32];
            share_hash[0] = miner as u8;
            share_hash[1] = index;
            quotes.push(CreateQuote::for_share(AcceptedShare {
                share_hash: ShareHash::from_byte_array(share_hash),
                locking_pubkey: locking,
                credited_work: 1 << index,
                channel_id: 1,
                job_id: 1,
                template_id: 1,
                epoch: 0,
                accepted_at: 1_764_000_000,
            }));
        }
    }
    quotes
}
