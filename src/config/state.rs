//! Where the cache file goes when CACHE_FILE is not set: the service's state directory under
//! systemd, else the user's XDG state directory (see "Cache file" in docs/behaviour.md).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::parse::ConfigError;

/// The environment variables that name a state directory.
#[derive(Debug, Clone, Default)]
pub struct StateDirs {
    /// `STATE_DIRECTORY`, set by systemd for a unit with `StateDirectory=` (the first of its list).
    pub state_directory: Option<PathBuf>,
    /// `XDG_STATE_HOME` (ignored unless absolute, as the XDG specification says).
    pub xdg_state_home: Option<PathBuf>,
    /// `HOME`.
    pub home: Option<PathBuf>,
}

/// Where the cache is kept, and whether the proxy chose the place itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFile {
    /// `CACHE_FILE=` (empty): in memory only.
    Off,
    /// CACHE_FILE as given.
    Given(PathBuf),
    /// The default place (its directory is made at start).
    Default(PathBuf),
    /// Not set, and no default place: `serve` refuses to start ([`CacheFile::placed`]); commands
    /// that keep no cache (`sleep`) do not mind.
    Unplaced,
}

impl CacheFile {
    /// The file, if the cache is persisted.
    pub fn path(&self) -> Option<&Path> {
        match self {
            CacheFile::Off | CacheFile::Unplaced => None,
            CacheFile::Given(p) | CacheFile::Default(p) => Some(p),
        }
    }

    /// The error that stops `serve` when there is no place for the cache.
    pub fn placed(&self) -> Result<(), ConfigError> {
        match self {
            CacheFile::Unplaced => Err(ConfigError {
                flag: "--cache-file",
                env: "CACHE_FILE",
                value: None,
                reason: "not set, and no default place for it: none of STATE_DIRECTORY, \
                         XDG_STATE_HOME or HOME is set (to an absolute path); set CACHE_FILE to a \
                         file, or CACHE_FILE= (empty) to keep the cache in memory only"
                    .into(),
            }),
            _ => Ok(()),
        }
    }
}

fn absolute(value: Option<OsString>) -> Option<PathBuf> {
    value.map(PathBuf::from).filter(|p| p.is_absolute())
}

impl StateDirs {
    /// From this process's environment.
    pub fn from_env() -> StateDirs {
        let state_directory = std::env::var_os("STATE_DIRECTORY").and_then(|v| {
            // systemd separates several directories with ':'; the first is this unit's own.
            let first = v.to_str().map_or(v.clone(), |s| {
                OsString::from(s.split(':').next().unwrap_or_default())
            });
            absolute(Some(first))
        });
        StateDirs {
            state_directory,
            xdg_state_home: absolute(std::env::var_os("XDG_STATE_HOME")),
            home: absolute(std::env::var_os("HOME")),
        }
    }

    /// Only `XDG_STATE_HOME=dir`: for tests and tools that keep the proxy's state in a place of
    /// their own.
    pub fn xdg(dir: &Path) -> StateDirs {
        StateDirs {
            xdg_state_home: Some(dir.to_path_buf()),
            ..StateDirs::default()
        }
    }

    /// `$STATE_DIRECTORY/cache.json`, else `$XDG_STATE_HOME/ollama-proxy/cache.json`, else
    /// `$HOME/.local/state/ollama-proxy/cache.json`.
    pub fn default_cache_file(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.state_directory {
            return Some(dir.join("cache.json"));
        }
        let state = self
            .xdg_state_home
            .clone()
            .or_else(|| self.home.as_ref().map(|h| h.join(".local/state")))?;
        Some(state.join("ollama-proxy").join("cache.json"))
    }
}

/// CACHE_FILE's value (flag, variable or file), or the default place; an empty value is off.
pub(super) fn cache_file(value: Option<PathBuf>, dirs: &StateDirs) -> CacheFile {
    match value {
        Some(p) if p.as_os_str().is_empty() => CacheFile::Off,
        Some(p) => CacheFile::Given(p),
        None => dirs
            .default_cache_file()
            .map_or(CacheFile::Unplaced, CacheFile::Default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs(state: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> StateDirs {
        StateDirs {
            state_directory: state.map(PathBuf::from),
            xdg_state_home: xdg.map(PathBuf::from),
            home: home.map(PathBuf::from),
        }
    }

    #[test]
    fn systemd_then_xdg_then_home() {
        let all = dirs(Some("/var/lib/ollama-proxy"), Some("/x"), Some("/home/u"));
        let path = |d: &StateDirs| cache_file(None, d);
        assert_eq!(
            path(&all),
            CacheFile::Default("/var/lib/ollama-proxy/cache.json".into())
        );
        assert_eq!(
            path(&dirs(None, Some("/x"), Some("/home/u"))),
            CacheFile::Default("/x/ollama-proxy/cache.json".into())
        );
        assert_eq!(
            path(&dirs(None, None, Some("/home/u"))),
            CacheFile::Default("/home/u/.local/state/ollama-proxy/cache.json".into())
        );
    }

    #[test]
    fn given_off_or_a_clear_error() {
        let all = dirs(Some("/s"), None, None);
        assert_eq!(
            cache_file(Some("/c.json".into()), &all),
            CacheFile::Given("/c.json".into())
        );
        assert_eq!(cache_file(Some("".into()), &all), CacheFile::Off);
        assert_eq!(
            cache_file(Some("".into()), &StateDirs::default()),
            CacheFile::Off
        );
        assert!(CacheFile::Off.placed().is_ok());
        let none = cache_file(None, &StateDirs::default());
        assert_eq!(none, CacheFile::Unplaced);
        let err = none.placed().unwrap_err().to_string();
        assert!(err.contains("CACHE_FILE=") && err.contains("HOME"), "{err}");
        assert_eq!(CacheFile::Off.path(), None);
        assert_eq!(CacheFile::Unplaced.path(), None);
    }

    #[test]
    fn relative_directories_do_not_count() {
        assert_eq!(absolute(Some("relative/dir".into())), None);
        assert_eq!(absolute(Some("".into())), None);
        assert_eq!(absolute(Some("/abs".into())), Some("/abs".into()));
    }
}
