use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

#[derive(Debug, Error)]
pub enum LoggingError {
    #[error("cannot create log directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open log file {path}: {source}")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the log file writer alive; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops writing the log file"]
pub struct LogGuard {
    _file: WorkerGuard,
    path: PathBuf,
}

impl LogGuard {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Logs to stdout and appends to `<log_dir>/<process>.log` (plain text, so an operator can copy
/// lines out of it). The level comes from `RUST_LOG`, `info` by default.
pub fn init_logging(process: &str, log_dir: &Path) -> Result<LogGuard, LoggingError> {
    std::fs::create_dir_all(log_dir).map_err(|source| LoggingError::CreateDir {
        path: log_dir.to_owned(),
        source,
    })?;
    let path = log_dir.join(format!("{process}.log"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|source| LoggingError::OpenFile {
            path: path.clone(),
            source,
        })?;
    let (file_writer, guard) = tracing_appender::non_blocking(file);

    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with(
            fmt::layer()
                .with_target(true)
                .with_ansi(std::io::stdout().is_terminal()),
        )
        .with(fmt::layer().with_ansi(false).with_writer(file_writer))
        .try_init()
        .map_err(|_| LoggingError::AlreadyInstalled)?;

    Ok(LogGuard { _file: guard, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_plain_lines_to_the_process_log() {
        let dir = tempfile::tempdir().unwrap();
        let guard = init_logging("unit", &dir.path().join("logs")).unwrap();
        tracing::info!(channel_id = 7, "hello from the test");
        let path = guard.path().to_owned();
        drop(guard);
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("hello from the test"), "{text}");
        assert!(text.contains("channel_id=7"));
        assert!(!text.contains('\u{1b}'), "no ANSI escapes in files");
        assert!(matches!(
            init_logging("unit", dir.path()),
            Err(LoggingError::AlreadyInstalled)
        ));
    }
}
