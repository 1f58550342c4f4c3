//! bitcoind's RPC cookie: processes that start beside bitcoind wait for it (bitcoind writes it
//! once it is up), and clients that take a user and password read them from it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CookieError {
    #[error("cannot read bitcoind's RPC cookie {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bitcoind's RPC cookie {0} is not user:password")]
    Malformed(PathBuf),
}

/// The RPC user and password in bitcoind's cookie (`__cookie__:<password>`), for clients that
/// cannot read the file themselves.
pub fn read_cookie(path: &Path) -> Result<(String, String), CookieError> {
    let cookie = std::fs::read_to_string(path).map_err(|source| CookieError::Read {
        path: path.to_owned(),
        source,
    })?;
    let (user, password) = cookie
        .trim()
        .split_once(':')
        .ok_or_else(|| CookieError::Malformed(path.to_owned()))?;
    Ok((user.to_owned(), password.to_owned()))
}

/// How long a process waits at start for bitcoind to write its RPC cookie.
pub const COOKIE_WAIT: Duration = Duration::from_secs(120);

/// Waits until `cookie` exists, at most `limit`, logging every 10 s; whether it exists.
pub async fn wait_for_cookie(cookie: &Path, limit: Duration) -> bool {
    let started = Instant::now();
    while !cookie.exists() && started.elapsed() < limit {
        if started.elapsed().as_secs() % 10 == 0 {
            tracing::info!(cookie = %cookie.display(), "waiting for bitcoind's RPC cookie");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    cookie.exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_at_the_first_colon() {
        let dir = tempfile::tempdir().unwrap();
        let cookie = dir.path().join(".cookie");
        std::fs::write(&cookie, "__cookie__:abc:def\n").unwrap();
        assert_eq!(
            read_cookie(&cookie).unwrap(),
            ("__cookie__".to_owned(), "abc:def".to_owned())
        );
        std::fs::write(&cookie, "no-colon").unwrap();
        assert!(matches!(
            read_cookie(&cookie),
            Err(CookieError::Malformed(_))
        ));
        assert!(matches!(
            read_cookie(&dir.path().join("absent")),
            Err(CookieError::Read { .. })
        ));
    }
}
