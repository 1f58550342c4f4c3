//! The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core
//! (`tests/browser/dashboard.mjs`), on a pool with the real `mining-device` binary mining to it.
//! The pool page shows the miner; the miner page, reached by pasting its key, lists its worker
//! and its share count rises while the device mines. Screenshots go to `$HASHPOOL_SCREENSHOTS`
//! (`just screenshots` refreshes the ones in docs/), else to the test's own directory.

use std::path::PathBuf;
use std::process::Command;

use hashpool_pool::Pool;
use hashpool_testkit::{wait_for, workspace_binary, Process};

mod common;

use common::Regtest;

/// A key of the test's own (any compressed point will do: the page never mints).
const KEY: &str = "03d01115d548e7561b15c38f004d734633687cf4419620095bc5b0f47070afe85a";
const WORKER: &str = "bitaxe-601";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_and_miner_pages_show_a_mining_device_in_chromium() {
    let chain = Regtest::start("dashboard-browser");
    let pool = Pool::start(chain.pool_config()).await.unwrap();
    let logs = chain.dir.path().join("logs");
    let mut device = Process::spawn(
        "mining-device",
        &workspace_binary("mining-device"),
        &[
            "--pool".into(),
            pool.sv2_address().to_string(),
            "--identity".into(),
            format!("{KEY}.{WORKER}"),
            "--nominal-hashrate".into(),
            "100000".into(),
            "--log-dir".into(),
            logs.display().to_string(),
        ],
        &chain.dir.path().join("mining-device.out"),
    )
    .unwrap();
    let metrics = pool.metrics().clone();
    wait_for("the device's first accepted share", async || {
        metrics.shares_accepted.get() > 0
    })
    .await;

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let screenshots = std::env::var_os("HASHPOOL_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| chain.dir.path().join("screenshots"));
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(root.join("tests/browser/dashboard.mjs"))
            .args(["--url", &format!("http://{}", pool.http_address())])
            .args(["--pubkey", KEY, "--worker", WORKER, "--screenshots"])
            .arg(&screenshots)
            .output()
            .map(|output| (output, pool, screenshots))
    })
    .await
    .unwrap()
    .expect("node runs (bin/setup-browser installs node, Chromium and playwright-core)");
    let (output, pool, screenshots) = output;
    let report = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the browser test failed\n{report}");
    for page in ["pool.png", "miner.png"] {
        let size = std::fs::metadata(screenshots.join(page)).map(|meta| meta.len());
        assert!(
            size.as_ref().is_ok_and(|size| *size > 10_000),
            "{page}: {size:?}\n{report}"
        );
    }
    device.kill();
    pool.shutdown().await;
}
