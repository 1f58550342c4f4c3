//! Start-up plumbing shared by every hashpool process.

mod backoff;
mod config;
mod cookie;
pub mod lines;
mod logging;
mod memory;
pub mod metrics;
mod net;
mod secret_file;
mod signal;
mod time;

pub use backoff::Backoff;
pub use config::{load_config, ConfigError};
pub use cookie::{read_cookie, wait_for_cookie, CookieError, COOKIE_WAIT};
pub use logging::{init_logging, LogGuard, LoggingError};
pub use memory::map_large_allocations;
pub use net::{
    accept_until_stopped, listen, raise_open_files_limit, ConnectionLimits, ListenError, OnStop,
};
pub use secret_file::{create_secret, read_secret, SecretFileError};
pub use signal::{stopped, ShutdownSignal};
pub use time::unix_now;

/// This machine's hostname, for default names that must stay the same across restarts.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
