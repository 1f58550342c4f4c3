//! The `mining-device` binary stops promptly on Ctrl-C (SIGINT) whatever it is waiting on: a pool
//! that refuses connections (reconnect backoff), or one that accepts and never answers the Noise
//! handshake. (Mining on a live pool: tests/full-stack/tests/processes.rs.)

use std::net::TcpListener;
use std::time::Duration;

use hashpool_testkit::{free_port, workspace_binary, Process};

const KEY: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";

/// Runs the device against `address`, waits until `in_state` says it is in the state under test,
/// interrupts it, and checks it exited by itself within a few seconds.
fn interrupt_while(address: &str, in_state: impl Fn(&Process) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--pool",
        address,
        "--identity",
        KEY,
        "--log-dir",
        dir.path().to_str().unwrap(),
    ]
    .map(str::to_owned);
    let mut device = Process::spawn(
        "mining-device",
        &workspace_binary("mining-device"),
        &args,
        &dir.path().join("out.log"),
    )
    .unwrap();
    assert!(
        hashpool_testkit::wait_until(Duration::from_secs(30), || in_state(&device)),
        "never reached the state under test:\n{}",
        device.output()
    );
    let status = device.interrupt(Duration::from_secs(3));
    assert!(
        status.is_some_and(|status| status.success()),
        "the device did not exit on SIGINT within 3 s ({status:?}):\n{}",
        device.output()
    );
}

#[test]
fn exits_on_sigint_while_the_pool_refuses_connections() {
    let address = format!("127.0.0.1:{}", free_port());
    interrupt_while(&address, |device| {
        device.output().contains("pool unreachable")
    });
}

#[test]
fn exits_on_sigint_while_the_pool_never_answers_the_handshake() {
    // Connections are accepted; nobody ever reads from them or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap().to_string();
    let accepted = std::sync::Mutex::new(Vec::new());
    interrupt_while(&address, |_| {
        silent.set_nonblocking(true).unwrap();
        if let Ok((socket, _)) = silent.accept() {
            accepted.lock().unwrap().push(socket);
        }
        !accepted.lock().unwrap().is_empty()
    });
}
