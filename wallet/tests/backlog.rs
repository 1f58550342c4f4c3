//! A backlog of 20,000 PAID quotes, as after a miner's wallet was off for a long while, minted by
//! one `wallet mint` of a wallet that never ran before: the real mint process, the quotes created
//! and released through the stream, the real wallet binary.

mod common;

use std::time::{Duration, Instant};

use common::{assert_settled, share_amounts, Stack};

const BACKLOG: usize = 20_000;

/// Peak resident memory of the largest child process waited for so far, in KiB.
fn children_peak_rss_kib() -> i64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    usage.ru_maxrss
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_20000_quotes_mints_in_one_run_in_bounded_memory() {
    let mut stack = Stack::start("wallet-backlog").await;
    let amounts = share_amounts(BACKLOG);
    let total = stack.pay_quotes(&amounts).await;
    let ingest = Instant::now();
    stack.wait_stream_applied(Duration::from_secs(240)).await;
    let ingest = ingest.elapsed();

    // `wallet quotes` pages through the lookup: every quote listed once, PAID.
    let listed = stack.wallet_ok(&["quotes", "--json"]);
    let listed: Vec<ehash::QuoteSummary> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), BACKLOG);
    let ids: std::collections::HashSet<&str> = listed.iter().map(|q| q.quote.as_str()).collect();
    assert_eq!(ids.len(), BACKLOG, "no quote on two pages");
    assert_eq!(listed.iter().map(|q| q.mintable()).sum::<u64>(), total);

    // `wallet balance` says what is waiting (stderr; stdout stays the figure).
    let balance = stack.wallet(&["balance"]);
    assert_eq!(String::from_utf8_lossy(&balance.stdout).trim(), "0 hash");
    let waiting = String::from_utf8_lossy(&balance.stderr);
    assert!(
        waiting.contains(&format!("waiting: {BACKLOG} PAID quotes ({total} hash)")),
        "{waiting}"
    );

    let started = Instant::now();
    let output = stack.wallet(&["mint"]);
    let elapsed = started.elapsed();
    let peak_rss_kib = children_peak_rss_kib();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stdout.starts_with(&format!("minted {total} hash from {BACKLOG} quotes")),
        "{stdout}"
    );
    let progress_lines = stderr
        .lines()
        .filter(|line| line.starts_with("minted a batch of"))
        .count();
    assert!(progress_lines > 1, "a progress line per batch:\n{stderr}");
    eprintln!(
        "backlog: {BACKLOG} quotes ({total} hash): stream applied in {ingest:.1?}; \
         `wallet mint` {elapsed:.1?} in {progress_lines} batches, peak RSS {} MiB",
        peak_rss_kib / 1024
    );
    // Bounded: a page of the lookup and a batch at a time, not the backlog (measured 23 MiB,
    // see docs/benchmarks.md; the wallet's 25,000 proofs are in its store on disk).
    assert!(
        peak_rss_kib < 64 * 1024,
        "the wallet's peak RSS was {} MiB",
        peak_rss_kib / 1024
    );

    assert_settled(&stack, BACKLOG, total).await;
    let balance = stack.wallet_ok(&["balance"]);
    assert_eq!(balance.trim(), format!("{total} hash"));
}
