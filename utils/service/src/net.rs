//! Listening and accepting: what every role with a port does the same way.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
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

/// Connections the kernel may hold completed and waiting for `accept`. The usual 128 (std's and
/// tokio's) overflows under a burst of connects, a flood or a farm reconnecting after a restart:
/// past it the kernel drops handshakes, and each client retries a second or more later, honest
/// ones too. Linux caps this at `net.core.somaxconn` (4096 by default since 5.4); the connection
/// limits, not the queue, decide who is served.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `address`; returns the listener and the address it got (the port the system chose
/// for port 0), so start-up reports a taken port and tests can listen anywhere.
pub async fn listen(address: SocketAddr) -> Result<(TcpListener, SocketAddr), ListenError> {
    let error = |source| ListenError { address, source };
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    // As `TcpListener::bind` does: a restarted process binds its port again at once.
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(address).map_err(error)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(error)?;
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

/// How many connections a listener serves at once: in all, and from one IP address. A
/// connection over either is closed as soon as it is accepted, before a byte is read, so a
/// flood from a few addresses cannot take the slots (or the file descriptors) honest miners
/// need, and the process stays up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    /// Room for a large farm behind one NAT address, below a raised file-descriptor limit.
    fn default() -> Self {
        Self {
            max_connections: 20_000,
            max_connections_per_ip: 2_000,
        }
    }
}

/// Raises this process's open-files soft limit to its hard limit, as Go's runtime does at
/// start: every connection is a descriptor, and the usual soft default (1,024) is far below the
/// connections a pool serves; past it accepts fail for everyone. Logs and returns the limit now
/// in force (`None`, logged as a warning, if it cannot be read or raised).
pub fn raise_open_files_limit() -> Option<u64> {
    let raised = rlimit::Resource::NOFILE
        .get()
        .and_then(|(_, hard)| rlimit::increase_nofile_limit(hard));
    match raised {
        Ok(limit) => {
            tracing::info!(limit, "open files limit (connections and files together)");
            Some(limit)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open files limit; connections beyond it will be refused");
            None
        }
    }
}

/// How long the loop rests after a failed accept: out of file descriptors, accepting again at
/// once fails again at once, and the loop would spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Refusals are logged the first time and then once every this many.
const REFUSALS_PER_LOG: u64 = 1_000;

/// The connections open now, in all and by address.
#[derive(Debug, Default)]
struct OpenConnections {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
    refused: u64,
}

impl OpenConnections {
    /// Counts a new connection from `ip`, or says which limit it is over.
    fn admit(&mut self, ip: IpAddr, limits: &ConnectionLimits) -> Result<(), &'static str> {
        if self.total >= limits.max_connections {
            return Err("max_connections");
        }
        let from_ip = self.by_ip.entry(ip).or_default();
        if *from_ip >= limits.max_connections_per_ip {
            return Err("max_connections_per_ip");
        }
        *from_ip += 1;
        self.total += 1;
        Ok(())
    }

    fn closed(&mut self, ip: IpAddr) {
        self.total -= 1;
        if let Some(from_ip) = self.by_ip.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// Accepts connections until `shutdown` says stop, serving each within `limits` with `serve` on
/// a task of its own. A failed accept (out of file descriptors, a connection reset before it
/// was taken) is logged and the loop goes on after a pause.
pub async fn accept_until_stopped<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    on_stop: OnStop,
    limits: ConnectionLimits,
    mut serve: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    let mut open = OpenConnections::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&mut shutdown) => break,
        };
        // Reap finished connections first, so the counts are current.
        while let Some(finished) = connections.try_join_next() {
            if let Ok(ip) = finished {
                open.closed(ip);
            }
        }
        match accepted {
            Ok((stream, peer)) => match open.admit(peer.ip(), &limits) {
                Ok(()) => {
                    let served = serve(stream, peer);
                    connections.spawn(async move {
                        served.await;
                        peer.ip()
                    });
                }
                Err(limit) => {
                    open.refused += 1;
                    if open.refused % REFUSALS_PER_LOG == 1 {
                        tracing::warn!(%peer, limit, refused_total = open.refused, "connection refused: over the limit");
                    }
                    drop(stream);
                }
            },
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
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
            ConnectionLimits::default(),
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

    #[test]
    fn connections_are_admitted_within_both_limits_and_counted_out_when_closed() {
        let limits = ConnectionLimits {
            max_connections: 3,
            max_connections_per_ip: 2,
        };
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "127.0.0.2".parse().unwrap(),
            "127.0.0.3".parse().unwrap(),
            "127.0.0.4".parse().unwrap(),
        );
        let mut open = OpenConnections::default();
        assert_eq!(open.admit(a, &limits), Ok(()));
        assert_eq!(open.admit(a, &limits), Ok(()));
        assert_eq!(open.admit(a, &limits), Err("max_connections_per_ip"));
        assert_eq!(open.admit(b, &limits), Ok(()));
        assert_eq!(open.admit(c, &limits), Err("max_connections"));
        open.closed(a);
        assert_eq!(open.admit(c, &limits), Ok(()));
        open.closed(a);
        open.closed(b);
        open.closed(c);
        assert_eq!(open.total, 0);
        assert!(open.by_ip.is_empty(), "no entry left for a closed address");
    }

    /// Over the per-address limit a connection is closed at once; another address and, once a
    /// connection ends, the same address are served again.
    #[tokio::test]
    async fn a_flood_from_one_address_leaves_room_for_others() {
        use tokio::io::AsyncReadExt;

        let (listener, address) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let (stop, shutdown) = watch::channel(false);
        let (release, released) = watch::channel(false);
        let limits = ConnectionLimits {
            max_connections: 100,
            max_connections_per_ip: 2,
        };
        let accepting = tokio::spawn(accept_until_stopped(
            listener,
            shutdown,
            OnStop::Abort,
            limits,
            move |mut stream, _| {
                let mut released = released.clone();
                async move {
                    // Held open until released, then closed.
                    let _ = released.wait_for(|released| *released).await;
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                }
            },
        ));
        let from = |ip: &str| {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(format!("{ip}:0").parse().unwrap()).unwrap();
            socket.connect(address)
        };
        let mut held = vec![
            from("127.0.0.2").await.unwrap(),
            from("127.0.0.2").await.unwrap(),
        ];
        // The third from 127.0.0.2 is closed without a byte.
        let mut refused = from("127.0.0.2").await.unwrap();
        let mut buffer = [0u8; 1];
        assert_eq!(
            refused.read(&mut buffer).await.unwrap(),
            0,
            "closed at once"
        );
        // Another address is served (held open, not closed).
        let mut other = from("127.0.0.3").await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(200), other.read(&mut buffer)).await;
        assert!(read.is_err(), "held open, not closed: {read:?}");
        // Once 127.0.0.2's connections end, it is served again.
        release.send(true).unwrap();
        for stream in &mut held {
            assert_eq!(stream.read(&mut buffer).await.unwrap(), 0);
        }
        release.send(false).unwrap();
        // The loop counts a connection out when its task has ended, which can be a moment after
        // the client sees it closed: a retry may be refused once more.
        let mut served_again = false;
        for _ in 0..100 {
            let mut again = from("127.0.0.2").await.unwrap();
            let read =
                tokio::time::timeout(Duration::from_millis(200), again.read(&mut buffer)).await;
            if read.is_err() {
                served_again = true;
                break;
            }
        }
        assert!(
            served_again,
            "127.0.0.2 is served again once its connections ended"
        );
        stop.send(true).unwrap();
        accepting.await.unwrap();
    }

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_limit() {
        let raised = raise_open_files_limit();
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!((raised, soft), (Some(hard), hard));
    }

    /// A burst of connects larger than the usual backlog of 128 is queued whole: every one is
    /// accepted at once, none waits for the client's retry a second later.
    #[tokio::test]
    async fn a_burst_of_connects_is_queued_not_dropped() {
        let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(4096);
        // Three times the usual backlog, within the system's cap (and a 1,024 descriptor limit).
        let burst = 400.min(somaxconn.saturating_sub(1));
        let (listener, address) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let burst_then_accept = async {
            let connects: Vec<_> = (0..burst)
                .map(|_| tokio::spawn(TcpStream::connect(address)))
                .collect();
            let mut clients = Vec::with_capacity(burst);
            for connect in connects {
                clients.push(connect.await.unwrap().unwrap());
            }
            let mut accepted = Vec::with_capacity(burst);
            for _ in 0..burst {
                accepted.push(listener.accept().await.unwrap());
            }
            (clients, accepted)
        };
        // A dropped handshake is retried after a second at the earliest.
        let queued = tokio::time::timeout(Duration::from_millis(900), burst_then_accept).await;
        assert!(
            queued.is_ok(),
            "{burst} connects were not all queued: some were dropped and retried"
        );
    }

    #[tokio::test]
    async fn a_taken_port_names_the_address() {
        let (_held, address) = listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let error = listen(address).await.unwrap_err();
        assert_eq!(error.address, address);
        assert!(error.to_string().contains(&address.to_string()));
    }
}
