//! The dashboard's web page: one HTML page for the pool (`/`) and for each miner
//! (`/miner/{pubkey}`), its script and style, and uPlot (vendored, see `web/vendor/README.md`).
//! Compiled into the binary, so the page needs no build step and no files beside the pool.

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../web/index.html");
const APP_JS: &str = include_str!("../../web/app.js");
const STYLE_CSS: &str = include_str!("../../web/style.css");
const UPLOT_JS: &str = include_str!("../../web/vendor/uplot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../../web/vendor/uplot.min.css");

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

pub fn router() -> Router {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    const CSS: &str = "text/css; charset=utf-8";
    Router::new()
        .route("/", get(|| async { asset(HTML, INDEX) }))
        .route("/miner/{pubkey}", get(|| async { asset(HTML, INDEX) }))
        .route("/static/app.js", get(|| async { asset(JS, APP_JS) }))
        .route("/static/style.css", get(|| async { asset(CSS, STYLE_CSS) }))
        .route(
            "/static/uplot.iife.min.js",
            get(|| async { asset(JS, UPLOT_JS) }),
        )
        .route(
            "/static/uplot.min.css",
            get(|| async { asset(CSS, UPLOT_CSS) }),
        )
}
