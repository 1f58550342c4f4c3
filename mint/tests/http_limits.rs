//! The mint's HTTP connection limits against the real thing: the mint started in-process (the
//! machine's Redis, its own stream), and raw TCP clients that behave as a flood does. A
//! slow-loris or idle connection is closed once the header timeout passes while ordinary
//! requests keep answering; connections over the per-address or total cap are closed at once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hashpool_mint::{MintConfig, MintServer};
use hashpool_service::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for a connection to be closed before calling it held.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

async fn start_mint(
    test: &str,
    dir: &std::path::Path,
    configure: impl FnOnce(&mut MintConfig),
) -> MintServer {
    let stream = format!("{}quotes", hashpool_testkit::unique_redis_prefix(test));
    let mut config = common::mint_config(dir, &stream, &format!("{test}-mint"));
    configure(&mut config);
    MintServer::start(config).await.expect("the mint starts")
}

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all loopback).
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Reads until the server closes `stream`: `Ok(bytes read)`, or `Err` if it is still open after
/// `bound`. A reset counts as closed.
async fn closed_within(stream: &mut TcpStream, bound: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut received = Vec::new();
    let read_to_end = async {
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => received.extend_from_slice(&buffer[..read]),
            }
        }
    };
    match tokio::time::timeout(bound, read_to_end).await {
        Ok(()) => Ok(received),
        Err(_) => Err(received),
    }
}

/// Sends `GET /health` on a kept-alive connection and reads the whole response (header and its
/// Content-Length of body); returns the status line.
async fn health_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: mint\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|value| value.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
        let read = tokio::time::timeout(CLOSE_BOUND, stream.read(&mut buffer))
            .await
            .expect("the mint answers")
            .unwrap();
        assert_ne!(read, 0, "closed instead of answering");
        response.extend_from_slice(&buffer[..read]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_and_idle_connections_are_closed_after_the_header_timeout_while_requests_answer()
{
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = Duration::from_millis(500);
    let server = start_mint("http-slowloris", dir.path(), |config| {
        config.header_read_timeout_ms = header_timeout.as_millis() as u64;
    })
    .await;
    let address = server.http_address();

    // Slow-loris: a request header that never ends, a byte every 50 ms.
    let opened = Instant::now();
    let mut slow = TcpStream::connect(address).await.unwrap();
    slow.write_all(b"GET /v1/info HTTP/1.1\r\nHost: mint\r\nX-Slow: ")
        .await
        .unwrap();
    let (mut slow_reader, mut slow_writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        let mut sent = 0usize;
        while slow_writer.write_all(b"a").await.is_ok() {
            sent += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    });
    let mut idle = TcpStream::connect(address).await.unwrap();

    // Meanwhile an ordinary request answers.
    let (status, info) = common::http_get(&format!("{}/v1/info", server.url())).await;
    assert_eq!(status, 200, "{info}");

    // Both are closed without a response, not before the timeout and well within the bound
    // (the trickle kept the slow one busy; bytes do not restart the timer).
    let mut buffer = [0u8; 64];
    let slow_read = tokio::time::timeout(CLOSE_BOUND, slow_reader.read(&mut buffer))
        .await
        .unwrap_or_else(|_| panic!("slow-loris held open past {CLOSE_BOUND:?}"));
    // Closed (0) or reset, without a response to a header that never ended.
    assert!(matches!(slow_read, Ok(0) | Err(_)), "{slow_read:?}");
    assert!(
        opened.elapsed() >= header_timeout,
        "closed before the header timeout: {:?}",
        opened.elapsed()
    );
    let trickled = tokio::time::timeout(CLOSE_BOUND, trickle)
        .await
        .expect("writes fail once closed")
        .unwrap();
    assert!(trickled >= 2, "the slow client trickled {trickled} bytes");
    let idle_closed = closed_within(&mut idle, CLOSE_BOUND).await;
    assert_eq!(
        idle_closed,
        Ok(Vec::new()),
        "idle connection closed, nothing sent"
    );

    // And the mint still answers.
    let (status, _) = common::http_get(&format!("{}/health", server.url())).await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_or_total_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_mint("http-caps", dir.path(), |config| {
        config.connections = ConnectionLimits {
            max_connections: 4,
            max_connections_per_ip: 2,
        };
    })
    .await;
    let address = server.http_address();

    // Each held connection is answered, so it was admitted, and kept alive (the default header
    // timeout, 10 s, is longer than this test).
    async fn admitted(from: &str, address: SocketAddr) -> TcpStream {
        let mut stream = connect_from(from, address).await;
        assert_eq!(
            health_on(&mut stream).await,
            "HTTP/1.1 200 OK",
            "from {from}"
        );
        stream
    }
    let mut held = vec![
        admitted("127.0.0.2", address).await,
        admitted("127.0.0.2", address).await,
        admitted("127.0.0.3", address).await,
    ];

    // A third from 127.0.0.2 is over its address's cap (3 of 4 in all): closed at once, before a
    // byte is read.
    let mut over_ip = connect_from("127.0.0.2", address).await;
    assert_eq!(
        closed_within(&mut over_ip, CLOSE_BOUND).await,
        Ok(Vec::new())
    );

    // A fourth address fills the total; a fifth is over it.
    held.push(admitted("127.0.0.4", address).await);
    let mut over_total = connect_from("127.0.0.5", address).await;
    assert_eq!(
        closed_within(&mut over_total, CLOSE_BOUND).await,
        Ok(Vec::new())
    );

    // The admitted connections are still served.
    for stream in &mut held {
        assert_eq!(health_on(stream).await, "HTTP/1.1 200 OK");
    }

    // Once one of 127.0.0.2's connections ends, the address is served again. The accept loop
    // counts a connection out when its task ends, a moment after the client closed it, so the
    // first retries may still be refused.
    drop(held.remove(0));
    let served_again = hashpool_testkit::eventually("127.0.0.2 served again", async || {
        let mut stream = connect_from("127.0.0.2", address).await;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: mint\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        String::from_utf8_lossy(&response)
            .starts_with("HTTP/1.1 200 OK")
            .then_some(())
    })
    .await;
    assert_eq!(served_again, ());

    // Shutdown closes the idle kept-alive connections at once rather than waiting out their
    // header timeout.
    tokio::time::timeout(CLOSE_BOUND, server.shutdown())
        .await
        .expect("the mint stops with idle connections open");
    for stream in &mut held {
        assert_eq!(closed_within(stream, CLOSE_BOUND).await, Ok(Vec::new()));
    }
}
