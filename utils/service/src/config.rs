use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
}

/// Loads a process config from TOML. Without a path the type's defaults are used, so every
/// process runs as it is; a path that cannot be read is an error, never a silent default.
pub fn load_config<T: DeserializeOwned + Default>(path: Option<&Path>) -> Result<T, ConfigError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, PartialEq, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        port: u16,
        name: String,
    }

    #[test]
    fn no_path_means_defaults() {
        assert_eq!(load_config::<Sample>(None).unwrap(), Sample::default());
    }

    #[test]
    fn reads_partial_toml_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.toml");
        std::fs::write(&path, "port = 7\n").unwrap();
        let sample: Sample = load_config(Some(&path)).unwrap();
        assert_eq!(sample.port, 7);
        assert_eq!(sample.name, "");
    }

    #[test]
    fn missing_file_and_typos_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.toml");
        let error = load_config::<Sample>(Some(&missing)).unwrap_err();
        assert!(matches!(error, ConfigError::Read { .. }));
        assert!(error.to_string().contains("absent.toml"));

        let typo = dir.path().join("typo.toml");
        std::fs::write(&typo, "prot = 7\n").unwrap();
        let error = load_config::<Sample>(Some(&typo)).unwrap_err();
        assert!(matches!(error, ConfigError::Parse { .. }));
        assert!(error.to_string().contains("prot"));
    }
}
