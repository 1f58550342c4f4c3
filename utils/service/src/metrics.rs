//! `/metrics` for every process: a prometheus-client [`Registry`] served in the Prometheus text
//! format (version 0.0.4), the format `curl` users and every Prometheus version read.

use std::sync::Arc;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A registry whose every metric is named `hashpool_<process>_…`, so the naming scheme is kept by
/// construction rather than by each metric's author.
///
/// `register` ends each help text with a full stop itself; collectors write their own.
pub fn registry(process: &str) -> Registry {
    Registry::with_prefix(format!("hashpool_{process}"))
}

/// The registry's metrics in the Prometheus text format.
///
/// Writing to a `String` cannot fail; an error means a metric refused to encode itself.
pub fn encode(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// `GET /metrics`, serving `registry`; merge it into a process's own router.
pub fn route<S>(registry: Arc<Registry>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { respond(&registry) }
        }),
    )
}

fn respond(registry: &Registry) -> Response {
    match encode(registry) {
        Ok(text) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => {
            tracing::error!("a metric failed to encode; /metrics answers 500");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves `app` (the metrics route, plus whatever else a process answers on that address) on
/// `listener` until `shutdown` says stop.
pub async fn serve(listener: TcpListener, app: Router, mut shutdown: watch::Receiver<bool>) {
    let stop = async move { crate::stopped(&mut shutdown).await };
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(%error, "metrics server failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn names_carry_the_process_prefix_and_counters_end_in_total() {
        let mut registry = registry("demo");
        let counter: Counter = Counter::default();
        registry.register("widgets", "Widgets made", counter.clone());
        counter.inc_by(2);
        let text = encode(&registry).unwrap();
        assert_eq!(
            text,
            "# HELP hashpool_demo_widgets_total Widgets made.\n\
             # TYPE hashpool_demo_widgets_total counter\n\
             hashpool_demo_widgets_total 2\n"
        );
    }
}
