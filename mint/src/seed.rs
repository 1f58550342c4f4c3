//! The mint's seed: every keyset derives from it, so it is made once, kept owner-only, and never
//! logged.

use std::path::{Path, PathBuf};

use hashpool_service::{create_secret, read_secret, SecretFileError};
use thiserror::Error;

pub const SEED_LEN: usize = 64;

#[derive(Debug, Error)]
pub enum SeedError {
    #[error(transparent)]
    File(#[from] SecretFileError),
    #[error("seed file {path} must hold {SEED_LEN} bytes as hex")]
    Malformed { path: PathBuf },
}

/// Reads the seed at `path`, or creates it (random, mode 0600) if the file does not exist.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; SEED_LEN], SeedError> {
    let mut seed = [0u8; SEED_LEN];
    match read_secret(path)? {
        Some(text) => {
            hex::decode_to_slice(&text, &mut seed).map_err(|_| SeedError::Malformed {
                path: path.to_owned(),
            })?;
        }
        None => {
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
            create_secret(path, &hex::encode(seed))?;
            tracing::info!(path = %path.display(), "created a new mint seed");
        }
    }
    Ok(seed)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn creates_once_then_reads_the_same_seed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/seed");
        let first = load_or_create_seed(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create_seed(&path).unwrap(), first);
        assert_ne!(first, [0u8; SEED_LEN]);
    }

    #[test]
    fn refuses_open_permissions_and_bad_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seed");
        load_or_create_seed(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_seed(&path),
            Err(SeedError::File(SecretFileError::TooOpen {
                mode: 0o644,
                ..
            }))
        ));
        fs::write(&path, "abcd").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create_seed(&path),
            Err(SeedError::Malformed { .. })
        ));
    }
}
