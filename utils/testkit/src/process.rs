//! The project's own binaries run as real processes, for tests that cross process boundaries
//! (and kill them).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A workspace binary, built by `cargo build --workspace --bins` (bin/test does this first).
/// `HASHPOOL_BIN_DIR` overrides where to look; otherwise the cargo target dir's `debug/`.
pub fn workspace_binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("HASHPOOL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| crate::workspace_root().join("target"))
                .join("debug")
        });
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (bin/test does)",
        path.display()
    );
    path
}

/// A child process whose stdout and stderr go to a log file; killed when dropped.
pub struct Process {
    name: String,
    command: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts `program args…`, appending its output to `log`.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> std::io::Result<Self> {
        let mut process = Self {
            name: name.to_owned(),
            command: program.to_owned(),
            args: args.to_vec(),
            log: log.to_owned(),
            child: None,
        };
        process.start()?;
        Ok(process)
    }

    /// Starts it again with the same command line, after [`Process::kill`] or
    /// [`Process::terminate`].
    pub fn start(&mut self) -> std::io::Result<()> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        self.child = Some(
            Command::new(&self.command)
                .args(&self.args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?,
        );
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL (`kill -9`): no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal_and_wait("-TERM", grace)
    }

    /// SIGINT (Ctrl-C), then SIGKILL if it has not exited within `grace`.
    pub fn interrupt(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.signal_and_wait("-INT", grace)
    }

    /// Sends `signal`; returns its exit status if it exits within `grace`, else kills it and
    /// returns `None`.
    fn signal_and_wait(&mut self, signal: &str, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Whether it is still running (false once it has exited on its own).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Everything it has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
