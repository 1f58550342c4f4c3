//! A minimal HTTP/1.1 client for tests: one request per connection, the status and the body.
//! (A test that checks what a service answers to raw input needs no more than this.)

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `method path` with `headers` and `body` to `address`; the status and the body.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("the service listens");
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("the request is sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("the service answers");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    (status, body)
}

/// POSTs JSON `body` with `headers`; the status and the JSON answer (`null` if not JSON).
pub async fn post_json(
    address: SocketAddr,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, serde_json::Value) {
    let (status, body) = http_request(address, "POST", path, headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// GETs `path`; the status and the JSON answer (`null` if not JSON).
pub async fn get_json(address: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_request(address, "GET", path, &[], "").await;
    (status, serde_json::from_str(&body).unwrap_or_default())
}
