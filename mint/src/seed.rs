//! The mint's seed: every keyset derives from it, so it is made once, kept owner-only, and never
//! logged.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

pub const SEED_LEN: usize = 64;

#[derive(Debug, Error)]
pub enum SeedError {
    #[error("cannot read seed file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create seed file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("seed file {path} must hold {SEED_LEN} bytes as hex")]
    Malformed { path: PathBuf },
    #[error("seed file {path} is readable by others (mode {mode:o}); run `chmod 600` on it")]
    TooOpen { path: PathBuf, mode: u32 },
}

/// Reads the seed at `path`, or creates it (random, mode 0600) if the file does not exist.
pub fn load_or_create_seed(path: &Path) -> Result<[u8; SEED_LEN], SeedError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            let mode = fs::metadata(path)
                .map_err(|source| SeedError::Read {
                    path: path.to_owned(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(SeedError::TooOpen {
                    path: path.to_owned(),
                    mode,
                });
            }
            let mut seed = [0u8; SEED_LEN];
            hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| SeedError::Malformed {
                path: path.to_owned(),
            })?;
            Ok(seed)
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_seed(path),
        Err(source) => Err(SeedError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn create_seed(path: &Path) -> Result<[u8; SEED_LEN], SeedError> {
    let create_error = |source| SeedError::Create {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(create_error)?;
    }
    let mut seed = [0u8; SEED_LEN];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    // create_new: never overwrite a seed another process just wrote.
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(create_error)?;
    file.write_all(hex::encode(seed).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(create_error)?;
    tracing::info!(path = %path.display(), "created a new mint seed");
    Ok(seed)
}

#[cfg(test)]
mod tests {
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
            Err(SeedError::TooOpen { mode: 0o644, .. })
        ));
        fs::write(&path, "abcd").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            load_or_create_seed(&path),
            Err(SeedError::Malformed { .. })
        ));
    }
}
