//! `/metrics` (Prometheus text), `/stats` (JSON), the dashboard (`/`, `/api/v1`) and, when
//! configured, `POST /payout` and `GET /epochs` on the pool's HTTP address.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ehash::callback;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::dashboard::{ApiContext, Dashboard};
use crate::metrics::PoolMetrics;
use crate::payout::PayoutDesk;
use crate::publisher::PublisherMetrics;

#[derive(Clone)]
struct Counters {
    pool: Arc<PoolMetrics>,
    quotes: Arc<PublisherMetrics>,
    dashboard: Arc<Dashboard>,
}

pub async fn serve(
    listener: TcpListener,
    pool: Arc<PoolMetrics>,
    quotes: Arc<PublisherMetrics>,
    payout: Option<Arc<PayoutDesk>>,
    dashboard: ApiContext,
    shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(pool.registry(quotes.clone(), dashboard.dashboard.clone()));
    let counters = Counters {
        pool,
        quotes,
        dashboard: dashboard.dashboard.clone(),
    };
    let mut app = Router::new()
        .route("/stats", get(stats))
        .with_state(counters)
        .merge(hashpool_service::metrics::route(registry))
        .merge(crate::dashboard::router(dashboard));
    if let Some(desk) = payout {
        app = app.merge(
            Router::new()
                .route("/payout", post(payout_callback))
                .route("/epochs", get(epochs))
                .with_state(desk),
        );
    }
    hashpool_service::metrics::serve(listener, app, shutdown).await;
}

/// `POST /payout`: a signed payout notice (see `ehash::callback`).
async fn payout_callback(
    State(desk): State<Arc<PayoutDesk>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let result = desk
        .release(
            header(callback::TIMESTAMP_HEADER),
            header(callback::SIGNATURE_HEADER),
            &body,
            hashpool_service::unix_now(),
        )
        .await;
    match result {
        Ok(released) => Json(released).into_response(),
        Err(error) => {
            tracing::warn!(code = error.code(), %error, "payout callback refused");
            let body = serde_json::json!({"error": error.code(), "detail": error.to_string()});
            (error.status(), Json(body)).into_response()
        }
    }
}

/// `GET /epochs`: the open epoch and the closed ones, each with the payment that paid it.
async fn epochs(State(desk): State<Arc<PayoutDesk>>) -> Response {
    match desk.epochs().await {
        Ok(report) => Json(report).into_response(),
        Err(error) => {
            let body = serde_json::json!({"error": error.code(), "detail": error.to_string()});
            (error.status(), Json(body)).into_response()
        }
    }
}

async fn stats(State(counters): State<Counters>) -> impl IntoResponse {
    Json(counters.pool.stats(&counters.quotes, &counters.dashboard))
}
