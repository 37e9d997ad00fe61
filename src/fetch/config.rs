//! Fetch settings: the config file, then the environment on top of it
//! (docs/fetch.md). Command-line flags are applied by the caller on top of
//! the result (e.g. `--offline` sets `offline`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::mirror::{Mirrors, APT_DIR_ENV};

pub const CONFIG_ENV: &str = "IMGREP_CONFIG";
pub const OFFLINE_ENV: &str = "IMGREP_OFFLINE";
pub const SOURCE_DIRS_ENV: &str = "IMGREP_SOURCE_DIRS";
pub const FALLBACK_MIRRORS_ENV: &str = "IMGREP_MIRRORS";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Parse {
        path: PathBuf,
        error: toml::de::Error,
    },
    #[error("{var}={value:?}: expected 0 or 1")]
    Bool { var: &'static str, value: String },
}

/// The config file (`$IMGREP_CONFIG`, else `<config dir>/imgrep/config.toml`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    #[serde(default)]
    fetch: FetchSection,
    #[serde(default)]
    mirrors: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FetchSection {
    #[serde(default)]
    source_dirs: Vec<PathBuf>,
    #[serde(default)]
    fallback_mirrors: Vec<String>,
    offline: Option<bool>,
    /// Seconds without progress before a connection is abandoned.
    timeout: Option<u64>,
}

/// Everything the fetcher needs besides the store.
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Local source directories, searched before any network access.
    pub source_dirs: Vec<PathBuf>,
    /// Content-addressed mirrors tried after the recipe's URLs: a file pin
    /// is fetched from `<base>/sha256/<hex>`, a tree pin from
    /// `<base>/<file name of each of its URLs>`.
    pub fallback_mirrors: Vec<String>,
    pub mirrors: Mirrors,
    /// Never touch the network.
    pub offline: bool,
    /// Connect timeout and the longest silence while reading.
    pub timeout: Duration,
    /// Progress bars on stderr (drawn only when it is a terminal).
    pub progress: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        FetchConfig {
            source_dirs: Vec::new(),
            fallback_mirrors: Vec::new(),
            mirrors: Mirrors::default(),
            offline: false,
            timeout: Duration::from_secs(60),
            progress: true,
        }
    }
}

impl FetchConfig {
    /// Reads the config file and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::load_from(std::env::vars().collect())
    }

    /// Reads the config file named by `env` (or the default one) and
    /// applies `env` on top.
    pub fn load_from(env: BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let path = match env.get(CONFIG_ENV).filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => dirs::config_dir().map(|d| d.join("imgrep/config.toml")),
        };
        let file = match path {
            Some(p) => read_config(&p, env.contains_key(CONFIG_ENV))?,
            None => ConfigFile::default(),
        };
        let mut cfg = FetchConfig {
            source_dirs: file.fetch.source_dirs,
            fallback_mirrors: file.fetch.fallback_mirrors,
            offline: file.fetch.offline.unwrap_or(false),
            timeout: Duration::from_secs(file.fetch.timeout.unwrap_or(60)),
            ..FetchConfig::default()
        };
        if let Some(v) = env.get(SOURCE_DIRS_ENV) {
            cfg.source_dirs = std::env::split_paths(v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect();
        }
        if let Some(v) = env.get(FALLBACK_MIRRORS_ENV) {
            cfg.fallback_mirrors = v.split_whitespace().map(str::to_owned).collect();
        }
        if let Some(v) = env.get(OFFLINE_ENV) {
            cfg.offline = match v.as_str() {
                "1" => true,
                "0" | "" => false,
                _ => {
                    return Err(ConfigError::Bool {
                        var: OFFLINE_ENV,
                        value: v.clone(),
                    })
                }
            };
        }
        let apt_dir = env.get(APT_DIR_ENV).map(PathBuf::from);
        cfg.mirrors = Mirrors::new(env, file.mirrors, apt_dir);
        Ok(cfg)
    }
}

/// A missing default config file is no config; a missing file that the
/// user named is an error.
fn read_config(path: &Path, named: bool) -> Result<ConfigFile, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => {
            return Ok(ConfigFile::default())
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                error: source,
            })
        }
    };
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        error: source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(
            &cfg_path,
            "[fetch]\nsource-dirs = [\"/a\", \"/b\"]\noffline = true\ntimeout = 5\n\
             [mirrors]\ngnu = [\"http://127.0.0.1:9/gnu\"]\n",
        )
        .unwrap();
        let mut env = BTreeMap::new();
        env.insert(CONFIG_ENV.to_owned(), cfg_path.display().to_string());
        let cfg = FetchConfig::load_from(env.clone()).unwrap();
        assert_eq!(cfg.source_dirs, [Path::new("/a"), Path::new("/b")]);
        assert!(cfg.offline);
        assert_eq!(cfg.timeout, Duration::from_secs(5));
        assert_eq!(
            cfg.mirrors.resolve("mirror://gnu/x").unwrap(),
            ["http://127.0.0.1:9/gnu/x"]
        );

        env.insert(OFFLINE_ENV.to_owned(), "0".to_owned());
        env.insert(SOURCE_DIRS_ENV.to_owned(), "/c:/d".to_owned());
        let cfg = FetchConfig::load_from(env.clone()).unwrap();
        assert!(!cfg.offline);
        assert_eq!(cfg.source_dirs, [Path::new("/c"), Path::new("/d")]);

        env.insert(OFFLINE_ENV.to_owned(), "yes".to_owned());
        assert!(FetchConfig::load_from(env.clone()).is_err());

        std::fs::write(&cfg_path, "[fetch]\nsource_dir = []\n").unwrap();
        env.remove(OFFLINE_ENV);
        let err = FetchConfig::load_from(env).unwrap_err().to_string();
        assert!(
            err.contains("config.toml") && err.contains("source_dir"),
            "{err}"
        );
    }
}
