//! Start-up plumbing shared by every hashpool process.

mod config;
mod logging;

pub use config::{load_config, ConfigError};
pub use logging::{init_logging, LogGuard, LoggingError};
