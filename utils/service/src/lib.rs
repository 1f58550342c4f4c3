//! Start-up plumbing shared by every hashpool process.

mod config;
mod logging;
mod signal;

pub use config::{load_config, ConfigError};
pub use logging::{init_logging, LogGuard, LoggingError};
pub use signal::shutdown_signal;
