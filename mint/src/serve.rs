//! Serving the HTTP API: our own accept loop and hyper's HTTP/1.1 connections, instead of
//! `axum::serve`, for the limits a public port needs.
//!
//! `axum::serve` takes every connection the listener hands it and waits on each for as long as
//! the client likes: a client that opens thousands of connections, or sends a request header a
//! byte a second (slow-loris), holds them and their file descriptors until the process runs out
//! and honest wallets are refused. Here:
//! - connections are admitted within [`ConnectionLimits`] (in all and per IP address), as the
//!   pool's and the translator's are, by [`accept_until_stopped`];
//! - a connection must deliver each request's whole header within `header_read_timeout`, counted
//!   from the moment the server waits for it (when the connection opens, and after each response
//!   on a kept-alive one), or it is closed. An idle connection is closed by the same timer.
//!
//! HTTP/1.1 only: cashu wallets speak it over plain HTTP, and the NUT-17 websocket is an
//! HTTP/1.1 upgrade. (`axum::serve` also took HTTP/2 with prior knowledge, which nothing here
//! uses and whose slow clients the header timeout would not cover.)

use std::time::Duration;

use axum::Router;
use hashpool_service::{accept_until_stopped, stopped, ConnectionLimits, OnStop};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Serves `app` on `listener` until `shutdown` says stop; then stops accepting, lets requests in
/// flight finish and closes idle connections (as `axum::serve`'s graceful shutdown does).
pub async fn serve_http(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    header_read_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    // hyper's timeouts need a timer; without one the header timeout is not enforced.
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let connections_shutdown = shutdown.clone();
    accept_until_stopped(
        listener,
        shutdown,
        OnStop::Finish,
        limits,
        move |stream, peer| {
            let connection = http
                .serve_connection(
                    TokioIo::new(stream),
                    TowerToHyperService::new(app.clone()),
                )
                // NUT-17: the websocket route upgrades the connection.
                .with_upgrades();
            let mut shutdown = connections_shutdown.clone();
            async move {
                tokio::pin!(connection);
                let served = tokio::select! {
                    served = connection.as_mut() => served,
                    () = stopped(&mut shutdown) => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                // A timed-out header, a reset or a malformed request ends only this connection:
                // routine on a public port, so not a warning.
                if let Err(error) = served {
                    tracing::debug!(%peer, %error, timeout = error.is_timeout(), "HTTP connection ended");
                }
            }
        },
    )
    .await;
}
