//! The benchmark scripts stay runnable: each runs briefly here, on the debug binaries the suite
//! already built, and must print a result row. Their numbers are not checked (speed is measured
//! by running them for real, not asserted in tests), only that the stack they drive works: shares
//! accepted, none rejected, every quote PAID.

use std::process::Command;

use hashpool_testkit::{workspace_binary, workspace_root};

/// Runs `benches/<script>` with `env` on the debug binaries and returns what it printed.
fn run_bench(script: &str, env: &[(&str, &str)]) -> String {
    let bin_dir = workspace_binary("pool").parent().unwrap().to_owned();
    let output = Command::new(workspace_root().join("benches").join(script))
        .env("HASHPOOL_BIN_DIR", bin_dir)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The cells of the table rows (lines starting `| <digit>`) in `output`.
fn rows(output: &str) -> Vec<Vec<String>> {
    output
        .lines()
        .filter(|line| {
            line.starts_with("| ") && line[2..].starts_with(|c: char| c.is_ascii_digit())
        })
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

#[test]
fn pool_load_gets_shares_accepted_on_the_load_signet() {
    let output = run_bench(
        "pool-load",
        &[("BENCH_SECONDS", "2"), ("BENCH_CHANNELS", "2")],
    );
    let rows = rows(&output);
    assert_eq!(rows.len(), 1, "{output}");
    let shares_per_second: f64 = rows[0][1].parse().unwrap();
    assert!(shares_per_second > 0.0, "{output}");
    assert_eq!(rows[0][3], "0", "no share rejected: {output}");
}

#[test]
fn stack_load_ends_with_every_quote_paid() {
    let output = run_bench(
        "stack-load",
        &[("BENCH_SECONDS", "3"), ("BENCH_CHANNELS", "2")],
    );
    let rows = rows(&output);
    assert_eq!(rows.len(), 1, "{output}");
    assert_eq!(rows[0].last().unwrap(), "yes", "{output}");
}

#[test]
fn soak_samples_the_stack_and_moves_the_tip() {
    let output = run_bench(
        "soak",
        &[
            // A block takes ~2^22 hashes, a few seconds of the debug build's hashing on a busy
            // machine: 30 s of asking for one every second makes finding none very unlikely.
            ("BENCH_SECONDS", "30"),
            ("BENCH_CHANNELS", "2"),
            ("BENCH_SAMPLE", "10"),
            ("BENCH_BLOCK_EVERY", "1"),
        ],
    );
    let rows = rows(&output);
    assert!(rows.len() >= 3, "{output}");
    let last = rows.last().unwrap();
    let shares: u64 = last[1].parse().unwrap();
    let blocks: u64 = last[2].parse().unwrap();
    assert!(shares > 0, "{output}");
    assert!(blocks >= 1, "a block found through the pool: {output}");
}

#[test]
fn flood_leaves_every_honest_client_served_and_the_per_address_cap_holds() {
    let output = run_bench(
        "flood",
        &[
            ("BENCH_SECONDS", "2"),
            ("BENCH_CHANNELS", "2"),
            ("BENCH_FLOOD_CONNECTIONS", "300"),
            ("BENCH_CAP_CONNECTIONS", "2100"),
        ],
    );
    // | target | honest client | flood | open | closed | answered | rejected / failed | ...
    let rows: Vec<Vec<String>> = output
        .lines()
        .filter(|line| {
            ["| pool |", "| translator |", "| mint |"]
                .iter()
                .any(|t| line.starts_with(t))
        })
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        rows.len(),
        6,
        "each target without and with a flood: {output}"
    );
    for row in &rows {
        assert_eq!(row[6], "0", "nothing rejected or failed: {output}");
        let answered: f64 = row[5]
            .split_whitespace()
            .next()
            .and_then(|count| count.parse().ok())
            .unwrap_or(0.0);
        assert!(answered > 0.0, "the honest client was answered: {output}");
    }
    for row in rows.iter().filter(|row| row[2] != "none") {
        let mean: f64 = row[3].split(" / ").nth(1).unwrap().parse().unwrap();
        assert!(mean > 0.0, "the flood held connections: {output}");
    }
    // "... opened N, held to the end N, closed by the pool within a second of opening N."
    let cap_line = output
        .lines()
        .find(|line| line.starts_with("Per-address cap"))
        .unwrap_or_else(|| panic!("a per-address line: {output}"));
    let count_after = |label: &str| -> u64 {
        let (_, rest) = cap_line.split_once(label).unwrap();
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(count_after("held to the end") <= 2000, "{cap_line}");
    assert!(
        count_after("within a second of opening") >= 100,
        "the connections over the cap were closed at once: {cap_line}"
    );
    assert!(output.contains("all still running"), "{output}");
}
