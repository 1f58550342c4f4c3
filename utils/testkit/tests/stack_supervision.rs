//! `bin/stack` keeps each process running: one that crashes is started again while the others
//! keep running, and stopping the stack stops every process it started. Run on a copy of the
//! script beside a justfile of two stand-in processes (real processes, no mocks of the script).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hashpool_testkit::{wait_until, workspace_root};

const JUSTFILE: &str = r#"
set shell := ["bash", "-euo", "pipefail", "-c"]

# Crashes a moment after each start, counting its starts.
run-crasher:
    echo start >> starts; sleep 0.2; exit 3

# Runs until stopped.
run-steady:
    exec sleep 1000
"#;

fn pid_of(dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(dir.join(format!(".data/stack/{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn alive(pid: i32) -> bool {
    Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn starts(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("starts"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

struct Stack(Child);

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_crashed_process_is_restarted_and_stopping_the_stack_stops_them_all() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::fs::copy(
        workspace_root().join("bin/stack"),
        dir.path().join("bin/stack"),
    )
    .unwrap();
    std::fs::write(dir.path().join("justfile"), JUSTFILE).unwrap();
    let mut stack = Stack(
        Command::new("bash")
            .arg(dir.path().join("bin/stack"))
            .args(["crasher", "steady"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bash runs bin/stack"),
    );

    assert!(
        wait_until(Duration::from_secs(30), || pid_of(dir.path(), "steady")
            .is_some()),
        "the steady process started"
    );
    let steady = pid_of(dir.path(), "steady").unwrap();
    // The crasher exits after 0.2 s each time; it is back after 1 s, then 2 s.
    assert!(
        wait_until(Duration::from_secs(30), || starts(dir.path()) >= 3),
        "the crashed process was started again, twice"
    );
    assert!(alive(steady), "the other process kept running");
    assert_eq!(
        pid_of(dir.path(), "steady"),
        Some(steady),
        "and was not restarted"
    );
    assert!(
        stack.0.try_wait().unwrap().is_none(),
        "a crash does not stop the stack"
    );

    Command::new("kill")
        .args(["-TERM", &stack.0.id().to_string()])
        .status()
        .unwrap();
    let status = stack.0.wait().unwrap();
    assert!(
        status.success(),
        "a stop on request is a clean exit: {status}"
    );
    // The stack waited for its supervisors: nothing is left to start anything again.
    let crasher = pid_of(dir.path(), "crasher").unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !alive(steady)
            && !alive(crasher)),
        "stopping the stack stopped its processes"
    );
}
