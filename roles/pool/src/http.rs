//! `/metrics` (Prometheus text) and `/stats` (JSON) on the pool's HTTP address.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::PoolMetrics;
use crate::publisher::PublisherMetrics;

#[derive(Clone)]
struct Counters {
    pool: Arc<PoolMetrics>,
    quotes: Arc<PublisherMetrics>,
}

pub async fn serve(
    listener: TcpListener,
    pool: Arc<PoolMetrics>,
    quotes: Arc<PublisherMetrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/stats", get(stats))
        .with_state(Counters { pool, quotes });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "pool HTTP server failed");
    }
}

async fn metrics(State(counters): State<Counters>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        counters.pool.render(&counters.quotes),
    )
}

async fn stats(State(counters): State<Counters>) -> impl IntoResponse {
    Json(counters.pool.stats(&counters.quotes))
}
