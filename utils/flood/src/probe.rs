//! An honest HTTP client's view of a server: one plain `GET` at a time, each on a new
//! connection (as a wallet's first request is), timed from connect to the end of the response.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::FloodError;

#[derive(Debug, Clone)]
pub struct ProbePlan {
    pub target: SocketAddr,
    pub path: String,
    pub duration: Duration,
    /// A request starts this long after the previous one started (at once if it took longer).
    pub interval: Duration,
    /// A request not answered within this counts as failed.
    pub timeout: Duration,
}

#[derive(Debug, Default)]
pub struct ProbeReport {
    pub sent: u64,
    /// Answered `200 OK`.
    pub ok: u64,
    /// Not connected, not answered in time, or answered another status.
    pub failed: u64,
    /// Latency of each `200 OK`, in µs, sorted.
    pub latencies_us: Vec<u64>,
}

impl ProbeReport {
    /// The latency below which fraction `p` of the answered requests were, in ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        crate::percentile(&self.latencies_us, p) as f64 / 1000.0
    }
}

/// Sends requests for the plan's duration; loopback targets only.
pub async fn probe(plan: &ProbePlan) -> Result<ProbeReport, FloodError> {
    if !plan.target.ip().is_loopback() {
        return Err(FloodError::NotLoopback(plan.target));
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        plan.path, plan.target
    );
    let mut report = ProbeReport::default();
    let deadline = Instant::now() + plan.duration;
    while Instant::now() < deadline {
        let started = Instant::now();
        report.sent += 1;
        match tokio::time::timeout(plan.timeout, get(plan.target, request.as_bytes())).await {
            Ok(Ok(true)) => {
                report.ok += 1;
                report
                    .latencies_us
                    .push(started.elapsed().as_micros() as u64);
            }
            _ => report.failed += 1,
        }
        tokio::time::sleep_until(started + plan.interval).await;
    }
    report.latencies_us.sort_unstable();
    Ok(report)
}

/// Whether `request` to `target` is answered `200`.
async fn get(target: SocketAddr, request: &[u8]) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect(target).await?;
    stream.write_all(request).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response.starts_with(b"HTTP/1.1 200 "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_a_target_off_this_machine() {
        let plan = ProbePlan {
            target: "192.0.2.1:80".parse().unwrap(),
            path: "/".into(),
            duration: Duration::from_secs(1),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
        };
        assert!(matches!(
            probe(&plan).await,
            Err(FloodError::NotLoopback(_))
        ));
    }
}
