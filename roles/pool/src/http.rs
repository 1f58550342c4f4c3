//! `/metrics` (Prometheus text) and `/stats` (JSON) on the pool's HTTP address.

use std::sync::Arc;

use axum::extract::State;
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
    shutdown: watch::Receiver<bool>,
) {
    let registry = Arc::new(pool.registry(quotes.clone()));
    let app = Router::new()
        .route("/stats", get(stats))
        .with_state(Counters { pool, quotes })
        .merge(hashpool_service::metrics::route(registry));
    hashpool_service::metrics::serve(listener, app, shutdown).await;
}

async fn stats(State(counters): State<Counters>) -> impl IntoResponse {
    Json(counters.pool.stats(&counters.quotes))
}
