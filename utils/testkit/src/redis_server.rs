use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::free_port;

/// A redis-server of the test's own, on a free port, persisting to an append-only file in a
/// temporary directory so that it can be stopped and restarted with its data. Use it for outage
/// tests; never stop the machine's shared Redis.
pub struct RedisServer {
    port: u16,
    dir: TempDir,
    /// A redis.conf to run with (its port and dir overridden); the test defaults otherwise.
    config: Option<PathBuf>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(None)
    }

    /// A server running `config` (a redis.conf such as the stack's `config/redis.conf`), on a
    /// free port and a temporary directory of its own.
    pub fn start_with_config(config: &Path) -> std::io::Result<Self> {
        Self::start_with(Some(config.to_owned()))
    }

    fn start_with(config: Option<PathBuf>) -> std::io::Result<Self> {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::Builder::new()
                .prefix("hashpool-redis-")
                .tempdir()?,
            config,
            child: None,
        };
        server.restart()?;
        Ok(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port and data (after [`RedisServer::stop`]).
    pub fn restart(&mut self) -> std::io::Result<()> {
        assert!(self.child.is_none(), "already running");
        let mut command = Command::new("redis-server");
        match &self.config {
            Some(config) => command.arg(config),
            None => command.args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]),
        };
        let child = command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        wait_until(Duration::from_secs(10), || ping(self.port))
            .then_some(())
            .ok_or_else(|| std::io::Error::other("redis-server did not answer"))
    }

    /// Stops the server (SIGTERM: it finishes writing its append-only file) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL: no shutdown, nothing flushed that was not already.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
