//! Listening and accepting: what every role with a port does the same way.

use std::future::Future;
use std::net::SocketAddr;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::stopped;

#[derive(Debug, Error)]
#[error("cannot listen on {address}: {source}")]
pub struct ListenError {
    pub address: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds `address`; returns the listener and the address it got (the port the system chose
/// for port 0), so start-up reports a taken port and tests can listen anywhere.
pub async fn listen(address: SocketAddr) -> Result<(TcpListener, SocketAddr), ListenError> {
    let error = |source| ListenError { address, source };
    let listener = TcpListener::bind(address).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// What becomes of open connections when [`accept_until_stopped`] stops accepting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStop {
    /// Wait for each to finish: they watch the same shutdown and close themselves.
    Finish,
    /// Abort them: some may be waiting on a peer that never answers.
    Abort,
}

/// Accepts connections until `shutdown` says stop, serving each with `serve` on a task of its
/// own. A failed accept (out of file descriptors, a connection reset before it was taken) is
/// logged and the loop goes on.
pub async fn accept_until_stopped<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    on_stop: OnStop,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve(stream, peer));
            }
            Err(error) => tracing::warn!(%error, "accept failed"),
        }
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    match on_stop {
        OnStop::Finish => while connections.join_next().await.is_some() {},
        OnStop::Abort => connections.shutdown().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn serves_each_connection_until_stopped() {
        let (listener, address) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_ne!(address.port(), 0);
        let (stop, shutdown) = watch::channel(false);
        let served = Arc::new(AtomicUsize::new(0));
        let counter = served.clone();
        let accepting = tokio::spawn(accept_until_stopped(
            listener,
            shutdown,
            OnStop::Finish,
            move |_, _| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            },
        ));
        for _ in 0..3 {
            let _ = TcpStream::connect(address).await.unwrap();
        }
        while served.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        stop.send(true).unwrap();
        accepting.await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_names_the_address() {
        let (_held, address) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let error = listen(address).await.unwrap_err();
        assert_eq!(error.address, address);
        assert!(error.to_string().contains(&address.to_string()));
    }
}
