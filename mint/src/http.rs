//! The mint's HTTP API: cdk-axum's standard cashu routes plus ours, with every error a cashu
//! error body (`{"code", "detail"}`) rather than a bare status or a 500.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cdk::error::{ErrorCode, ErrorResponse};
use cdk::nuts::nut19::{CachedEndpoint, Method as CachedMethod, Path as CachedPath};
use cdk_axum::cache::HttpCache;

use crate::backend::HTTP_QUOTES_REFUSED;
use crate::lookup::{
    quote_state, LookupVerifier, QuoteLookupRequest, QuoteLookupResponse, QuoteSummary,
};
use crate::metrics::MintMetrics;
use crate::quotes::QuoteBook;
use crate::MintError;
use ehash::lookup::LOOKUP_PAGE_MAX;

/// Error code for requests the mint cannot parse (bad JSON, wrong shape, oversized body). The
/// NUTs define no code for this; 10000 sits before the proof-verification codes.
pub const MALFORMED_REQUEST: u16 = 10_000;

/// NUT-19: how long cdk-axum keeps the response of a successful swap or mint, so a wallet that
/// lost the answer can send the same request again and get the same signatures.
pub const RESPONSE_CACHE_SECS: u64 = 60;

/// The endpoints whose cached responses (NUT-19) the mint advertises in its info.
///
/// cdk-axum caches the mint routes too, and a wallet's saga recovery replays a mint request and
/// gets the cached answer whether or not it is advertised. They are not advertised because of
/// what a cdk 0.18.3 wallet does with an advertised endpoint: after a dropped connection it
/// re-sends the request in-process for the TTL, and if the mint restarted meanwhile (the cache
/// is in memory) the answer is "quote already issued", which the wallet takes as a definitive
/// refusal: it drops the request's record and the ecash the mint did issue is never restored.
/// Unadvertised, a dropped mint request stays recorded and recovery restores it (NUT-09).
pub fn cached_endpoints() -> Vec<CachedEndpoint> {
    vec![CachedEndpoint::new(CachedMethod::Post, CachedPath::Swap)]
}

/// The largest error body we read back when turning a framework rejection into a cashu error.
const REJECTION_TEXT_LIMIT: usize = 4096;

#[derive(Clone)]
struct AppState {
    metrics: Arc<MintMetrics>,
    book: QuoteBook,
    lookups: Arc<LookupVerifier>,
    max_body_bytes: usize,
}

/// cdk-axum's routes for unit `hash` and method `ehash`, plus the signed quote lookup,
/// `/health` and `/metrics`.
pub async fn router(
    book: QuoteBook,
    metrics: Arc<MintMetrics>,
    max_body_bytes: usize,
) -> Result<Router, MintError> {
    let ttl = std::time::Duration::from_secs(RESPONSE_CACHE_SECS);
    let cashu = cdk_axum::create_mint_router_with_custom_cache(
        book.mint().clone(),
        HttpCache::new(ttl, ttl, None),
        vec![ehash::PAYMENT_METHOD.to_owned()],
        false,
    )
    .await
    .map_err(|error| MintError::Router(error.to_string()))?;
    let state = AppState {
        metrics: metrics.clone(),
        book,
        lookups: Arc::new(LookupVerifier::default()),
        max_body_bytes,
    };
    let ours = Router::new()
        .route("/health", get(health))
        .route(OPENAPI_PATH, get(openapi))
        .route("/v1/ehash/quotes", post(lookup_quotes))
        .with_state(state.clone())
        .merge(hashpool_service::metrics::route(Arc::new(
            metrics.registry(),
        )));
    Ok(cashu
        .merge(ours)
        .layer(middleware::from_fn(refuse_http_quotes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            drain_oversized,
        ))
        .layer(middleware::from_fn_with_state(state, cashu_errors))
        .layer(DefaultBodyLimit::max(max_body_bytes)))
}

/// How much of an oversized request body the mint reads (and discards) before refusing it.
const DRAIN_FACTOR: usize = 16;

/// Refuses a request whose declared body is over the limit with 413, after reading it (up to
/// [`DRAIN_FACTOR`] times the limit, discarded as it comes).
///
/// Refused unread, the body is still in flight when the mint answers and closes the connection:
/// the client's write then fails with a reset, often before it reads the 413, and it cannot tell
/// a refusal from a lost request. A cdk wallet then keeps the request's quotes reserved, and its
/// next recovery replays the same oversized request into the same race.
async fn drain_oversized(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_none_or(|length| length <= state.max_body_bytes) {
        return next.run(request).await;
    }
    let cap = state.max_body_bytes.saturating_mul(DRAIN_FACTOR);
    let mut body = request.into_body().into_data_stream();
    let mut drained = 0usize;
    while drained <= cap {
        match futures::StreamExt::next(&mut body).await {
            Some(Ok(chunk)) => drained += chunk.len(),
            _ => break,
        }
    }
    StatusCode::PAYLOAD_TOO_LARGE.into_response()
}

/// Where the mint serves the OpenAPI document of its HTTP API.
pub const OPENAPI_PATH: &str = "/v1/hashpool/openapi.json";

/// The OpenAPI document of the routes this mint serves (kept by hand in `mint/openapi.json`;
/// `mint/tests/schema.rs` runs schemathesis against a live mint with it).
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("../openapi.json"),
    )
        .into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The quotes locked to a key, for a wallet that proves it holds the key.
async fn lookup_quotes(
    State(state): State<AppState>,
    Json(request): Json<QuoteLookupRequest>,
) -> Response {
    let now = cdk::util::unix_time();
    let key = match state.lookups.verify(&request, now) {
        Ok(key) => key,
        Err(error) => {
            return cashu_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::WitnessMissingOrInvalid,
                error.to_string(),
            )
        }
    };
    let limit = request
        .limit
        .unwrap_or(LOOKUP_PAGE_MAX)
        .clamp(1, LOOKUP_PAGE_MAX);
    match state
        .book
        .quotes_for_key_page(&key, request.after.as_deref(), limit)
        .await
    {
        Ok(page) => Json(QuoteLookupResponse {
            pubkey: key.to_string(),
            next: page.next,
            quotes: page
                .quotes
                .iter()
                .map(|quote| QuoteSummary {
                    quote: quote.id.to_string(),
                    state: quote_state(quote.state()),
                    unit: quote.unit.to_string(),
                    amount: quote
                        .amount
                        .as_ref()
                        .map(|amount| amount.value())
                        .unwrap_or(0),
                    amount_paid: quote.amount_paid().value(),
                    amount_issued: quote.amount_issued().value(),
                    created_at: quote.created_time,
                })
                .collect(),
        })
        .into_response(),
        Err(error) => {
            tracing::error!(%error, "quote lookup failed");
            cashu_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unknown(50_000),
                "the mint store is unavailable; try again",
            )
        }
    }
}

pub fn cashu_error(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Response {
    (status, Json(ErrorResponse::new(code, detail.into()))).into_response()
}

/// Quotes are made by the pool, never over HTTP: say so plainly instead of cdk's generic
/// "invalid payment request".
async fn refuse_http_quotes(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if request.method() == Method::POST
        && path.trim_end_matches('/') == format!("/v1/mint/quote/{}", ehash::PAYMENT_METHOD)
    {
        return cashu_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::MintingDisabled,
            HTTP_QUOTES_REFUSED,
        );
    }
    next.run(request).await
}

/// Counts responses by status and gives every error a cashu error body: framework rejections
/// (plain-text 4xx from axum's extractors and the body limit) keep their status with code
/// [`MALFORMED_REQUEST`]; a 5xx keeps its status (the mint's fault, not the request's).
async fn cashu_errors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mint_path = format!("/v1/mint/{}", ehash::PAYMENT_METHOD);
    let is_mint = request.method() == Method::POST
        && (request.uri().path() == mint_path
            || request.uri().path() == format!("{mint_path}/batch"));
    let carries_outputs = is_mint
        || (request.method() == Method::POST
            && matches!(request.uri().path(), "/v1/swap" | "/v1/restore"));
    let response = next.run(request).await;
    if is_mint && response.status().is_success() {
        state.metrics.mint_requests.inc();
    }
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let response = if status.is_server_error() {
        tracing::error!(%status, "internal error answered as a cashu error");
        cashu_error(
            status,
            ErrorCode::Unknown(50_000),
            "internal mint error; the request was not applied",
        )
    } else if status == StatusCode::PAYLOAD_TOO_LARGE && carries_outputs {
        // The body of these requests is, apart from a few fields, arrays the mint bounds
        // (quotes, outputs, inputs), so a body over the limit is "too many": code 11015, which a
        // cdk wallet treats as a definitive refusal and, in saga recovery, as the signal to
        // release the quotes it reserved. A code it does not know would leave them reserved.
        cashu_error(
            status,
            ErrorCode::MaxOutputsExceeded,
            format!(
                "request body over the mint's limit of {} bytes: send fewer quotes or outputs \
                 per request (max_batch_size in /v1/info fits the limit)",
                state.max_body_bytes
            ),
        )
    } else if status.is_client_error() && !is_json {
        let (parts, body) = response.into_parts();
        let text = to_bytes(body, REJECTION_TEXT_LIMIT)
            .await
            .unwrap_or_default();
        let detail = String::from_utf8_lossy(&text).trim().to_owned();
        let detail = if detail.is_empty() {
            parts
                .status
                .canonical_reason()
                .unwrap_or("bad request")
                .to_owned()
        } else {
            detail
        };
        cashu_error(parts.status, ErrorCode::Unknown(MALFORMED_REQUEST), detail)
    } else {
        response
    };
    state.metrics.record_http_status(response.status().as_u16());
    response
}
