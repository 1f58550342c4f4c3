//! Owner-only files for secrets (the mint's seed, a wallet's mnemonic): created once with mode
//! 0600, never overwritten, and refused when others can read them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SecretFileError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create secret file {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {0} already exists")]
    Exists(PathBuf),
    #[error("secret file {path} is readable by others (mode {mode:o}); run `chmod 600` on it")]
    TooOpen { path: PathBuf, mode: u32 },
}

/// The trimmed contents of the secret at `path`, or `None` if there is no such file.
pub fn read_secret(path: &Path) -> Result<Option<String>, SecretFileError> {
    let read_error = |source| SecretFileError::Read {
        path: path.to_owned(),
        source,
    };
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(read_error(source)),
    };
    let mode = fs::metadata(path).map_err(read_error)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(Some(text.trim().to_owned()))
}

/// Writes a new secret at `path` (mode 0600, parent directories created). Fails with
/// [`SecretFileError::Exists`] if the file exists, so a secret another process wrote is never
/// replaced; and the file appears whole or not at all, so a process racing this one never reads
/// it half-written.
pub fn create_secret(path: &Path, contents: &str) -> Result<(), SecretFileError> {
    let create_error = |source| SecretFileError::Create {
        path: path.to_owned(),
        source,
    };
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(create_error)?;
    // Unique per writer, so racing writers (processes or threads) never share a staging file.
    static WRITERS: AtomicU64 = AtomicU64::new(0);
    let staging = dir.join(format!(
        ".{}.{}-{}.new",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        WRITERS.fetch_add(1, Ordering::Relaxed)
    ));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut file| {
            file.write_all(contents.as_bytes())?;
            file.sync_all()
        })
        // A hard link never replaces an existing file: the atomic "create if absent".
        .and_then(|()| fs::hard_link(&staging, path));
    let _ = fs::remove_file(&staging);
    match written {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(SecretFileError::Exists(path.to_owned()))
        }
        Err(source) => Err(create_error(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_read_back_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/secret");
        assert!(read_secret(&path).unwrap().is_none());
        create_secret(&path, "words\n").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret(&path).unwrap().as_deref(), Some("words"));
        assert!(matches!(
            create_secret(&path, "other"),
            Err(SecretFileError::Exists(_))
        ));
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        assert_eq!(read_secret(&path).unwrap().as_deref(), Some("words"));
    }

    #[test]
    fn refuses_a_secret_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create_secret(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(SecretFileError::TooOpen { mode: 0o644, .. })
        ));
    }
}
