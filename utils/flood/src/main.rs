//! `flood`: a bounded connection flood against a hashpool process on this machine (see the
//! library's documentation). Prints what happened to the connections: how many opened, how many
//! the target closed and after how long, how many it held. Stops at `--seconds`, or earlier on
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use hashpool_flood::{percentile, FloodPlan, Mode, Protocol};

#[derive(Parser)]
#[command(
    about = "A bounded, loopback-only connection flood (idle, slow-loris, half-finished handshakes)"
)]
struct Args {
    /// The target's address: loopback only.
    #[arg(long)]
    target: SocketAddr,
    /// What the target speaks: sv2 (the pool), sv1 (the translator), http (the mint).
    #[arg(long, value_enum)]
    protocol: Protocol,
    #[arg(long, value_enum, default_value = "mix")]
    mode: Mode,
    /// Connections held at once.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// How long the flood lasts.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Source addresses to spread the connections over, from 127.0.0.2 up (1: all from
    /// 127.0.0.2, to see a per-address cap).
    #[arg(long, default_value_t = 10)]
    sources: usize,
    /// Milliseconds between the bytes a slow-loris connection sends.
    #[arg(long, default_value_t = 1000)]
    byte_interval_ms: u64,
    /// A connection slot connects at most once per this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    redial_interval_ms: u64,
    /// Connects in flight at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Also print the connections open at each second.
    #[arg(long)]
    timeline: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = FloodPlan {
        target: args.target,
        protocol: args.protocol,
        mode: args.mode,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
        sources: args.sources,
        byte_interval: Duration::from_millis(args.byte_interval_ms),
        redial_interval: Duration::from_millis(args.redial_interval_ms),
        connect_concurrency: args.connect_concurrency,
    };
    plan.sources()?;
    // Every connection is a descriptor.
    let files = hashpool_service::raise_open_files_limit();
    if files.is_some_and(|limit| limit < args.connections as u64 + 64) {
        anyhow::bail!(
            "the open files limit ({}) is below {} connections: raise ulimit -n",
            files.unwrap_or_default(),
            args.connections
        );
    }
    println!(
        "flood: {} {:?} {:?}, {} connections from {} source addresses for {} s",
        args.target, args.protocol, args.mode, args.connections, args.sources, args.seconds
    );
    // SIGINT or SIGTERM ends the flood early, with its report: a script stops it when it has
    // measured what it came for.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        let _ = stop.send(true);
        // The sender lives on until the process ends: a dropped sender also means stop.
        std::future::pending::<()>().await;
    });
    let report = hashpool_flood::run(plan, stopping, |ramp| {
        // A script waits for this line before it measures.
        println!(
            "ramped after {:.1} s: {} open",
            ramp.after.as_secs_f64(),
            ramp.open
        );
    })
    .await?;

    if args.timeline {
        for (second, open) in report.timeline.iter().enumerate() {
            println!("{second} s: {open} open");
        }
    }
    let close_ms = |p| percentile(&report.close_after_ms, p) as f64 / 1000.0;
    println!(
        "opened {}, connect failures {}, closed by the target {} ({} within 1 s of opening), held to the end {}",
        report.opened,
        report.connect_failed,
        report.closed_by_target,
        report.closed_at_once,
        report.held_at_end
    );
    if report.closed_by_target > 0 {
        println!(
            "closed after: p50 {:.2} s, p99 {:.2} s, max {:.2} s; first close {:.1} s into the flood",
            close_ms(0.5),
            close_ms(0.99),
            close_ms(1.0),
            report.first_close.unwrap_or_default().as_secs_f64()
        );
    }
    println!(
        "open after the ramp: min {}, mean {:.0}, max {}",
        report.open_min(),
        report.open_mean(),
        report.open_max()
    );
    // One line of key=value pairs, for scripts.
    println!(
        "summary opened={} connect_failed={} closed_by_target={} closed_at_once={} held_to_end={} open_min={} open_mean={:.0} open_max={} close_p50_s={:.2} close_max_s={:.2} ramp_s={:.1}",
        report.opened,
        report.connect_failed,
        report.closed_by_target,
        report.closed_at_once,
        report.held_at_end,
        report.open_min(),
        report.open_mean(),
        report.open_max(),
        close_ms(0.5),
        close_ms(1.0),
        report.ramp.map_or(f64::NAN, |ramp| ramp.after.as_secs_f64())
    );
    Ok(())
}
