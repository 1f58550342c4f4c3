//! The `translator` binary as an operator runs it: `--config`, a log file, `/metrics`, miners
//! served while the pool is unreachable, and a clean exit on SIGTERM.

#[allow(dead_code)] // each test binary uses part of the shared support
mod support;

use std::process::{Command, Stdio};

use hashpool_testkit::{eventually, free_port, wait_for};
use serde_json::json;
use support::{http_get, Sv1Miner, KEY_A};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_miners_metrics_and_logs_without_a_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (sv1_port, metrics_port, pool_port) = (free_port(), free_port(), free_port());
    let config = dir.path().join("translator.toml");
    std::fs::write(
        &config,
        format!(
            "listen_address = \"127.0.0.1:{sv1_port}\"\nmetrics_address = \"127.0.0.1:{metrics_port}\"\nlog_dir = \"{}\"\n[upstream]\naddress = \"127.0.0.1:{pool_port}\"\nreconnect_delay_ms = 50\nmax_reconnect_delay_ms = 200\n",
            dir.path().join("logs").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_translator"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the translator binary runs");

    let metrics_address = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    wait_for("the translator's /metrics", async || {
        tokio::net::TcpStream::connect(metrics_address)
            .await
            .is_ok()
    })
    .await;
    let metrics = http_get(metrics_address, "/metrics").await;
    assert!(
        metrics.contains("hashpool_translator_upstream_connected 0\n"),
        "{metrics}"
    );

    // No pool: a miner still subscribes and authorizes; its channel waits for the pool.
    let mut miner = Sv1Miner::connect(format!("127.0.0.1:{sv1_port}").parse().unwrap()).await;
    miner.subscribe().await;
    assert_eq!(miner.authorize(KEY_A).await, Ok(json!(true)));
    let (code, _) = miner
        .call(
            "mining.submit",
            json!([KEY_A, "1", "00000000", "00000000", "00000000"]),
        )
        .await
        .unwrap_err();
    assert_eq!(code, 20, "no pool, no shares");

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = eventually("the translator's exit on SIGTERM", async || {
        child.try_wait().unwrap()
    })
    .await;
    assert!(exit.success(), "{exit}");
    let log = std::fs::read_to_string(dir.path().join("logs").join("translator.log")).unwrap();
    assert!(log.contains("translator listening"), "{log}");
    assert!(log.contains("cannot reach the pool"), "{log}");
}
