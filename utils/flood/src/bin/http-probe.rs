//! `http-probe`: an honest HTTP client's latency and answers while something else happens (the
//! flood benchmark runs it against the mint with and without a flood). Prints one line of
//! key=value pairs.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use hashpool_flood::probe::{probe, ProbePlan};

#[derive(Parser)]
struct Args {
    /// The server's address: loopback only.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value = "/v1/info")]
    path: String,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Milliseconds from one request's start to the next's.
    #[arg(long, default_value_t = 50)]
    interval_ms: u64,
    /// A request not answered within this many milliseconds has failed.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = probe(&ProbePlan {
        target: args.target,
        path: args.path,
        duration: Duration::from_secs(args.seconds),
        interval: Duration::from_millis(args.interval_ms),
        timeout: Duration::from_millis(args.timeout_ms),
    })
    .await?;
    println!(
        "summary sent={} ok={} failed={} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        report.sent,
        report.ok,
        report.failed,
        report.percentile_ms(0.5),
        report.percentile_ms(0.99),
        report.percentile_ms(1.0)
    );
    Ok(())
}
