//! The cache file: where it really is, reading it, writing it atomically through an exclusive temp
//! file, and removing the temp files an interrupted write left behind (see "Cache file" in
//! docs/behaviour.md).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::Entries;

/// Why CACHE_FILE cannot be used at all: a refusal at start (a missing or corrupt file only warns).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("CACHE_FILE {} is a symbolic link to {} that cannot be followed", link.display(), target.display())]
    Unresolvable {
        link: PathBuf,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The path to read and write: `path` itself, or the file its symbolic link points to, resolved
/// once so that writes replace the target and leave the link in place.
pub fn resolve(path: &Path) -> Result<PathBuf, FileError> {
    let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return Ok(path.to_path_buf());
    }
    let target = std::fs::read_link(path).unwrap_or_default();
    let resolved = std::fs::canonicalize(path).map_err(|source| FileError::Unresolvable {
        link: path.to_path_buf(),
        target,
        source,
    })?;
    tracing::info!(link = %path.display(), target = %resolved.display(), "CACHE_FILE is a symbolic link; writing to its target");
    Ok(resolved)
}

/// The directory the cache file (and its temp files) live in.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Temp files are `.<name>.<random>.tmp` beside the cache file.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("cache");
    format!(".{name}.")
}

const TEMP_SUFFIX: &str = ".tmp";

/// A temp file of ours: the prefix, a non-empty alphanumeric middle (random, or a pid in older
/// versions), the suffix. Nothing else in the directory matches.
fn is_ours(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
        .is_some_and(|mid| !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Removes the temp files that writes interrupted by a crash or SIGKILL left beside `path`.
pub fn remove_orphans(path: &Path) {
    let dir = dir_of(path);
    let prefix = temp_prefix(path);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot look for leftover cache temp files");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = name.to_str().is_some_and(|n| is_ours(n, &prefix));
        // A directory is never one of ours; a link of that name is removed, never followed.
        if !ours || entry.file_type().map_or(true, |t| t.is_dir()) {
            continue;
        }
        let orphan = entry.path();
        match std::fs::remove_file(&orphan) {
            Ok(()) => {
                tracing::info!(path = %orphan.display(), "removed a temp file left by an interrupted cache write")
            }
            Err(e) => {
                tracing::warn!(path = %orphan.display(), error = %e, "cannot remove a leftover cache temp file")
            }
        }
    }
}

/// Why the cache file gave no entries.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no such file yet")]
    Missing,
    #[error("cannot read it: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("not a cache file (corrupt): {0}")]
    Corrupt(#[source] serde_json::Error),
}

/// The entries in `path`, or why there are none.
pub(super) fn load(path: &Path) -> Result<Entries, ReadError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(ReadError::Corrupt),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(ReadError::Missing),
        Err(e) => Err(ReadError::Unreadable(e)),
    }
}

/// The entries in `path`; a missing, unreadable or corrupt file is empty (and warns, but missing).
pub fn read(path: &Path) -> Entries {
    match load(path) {
        Ok(entries) => {
            tracing::info!(path = %path.display(), "loaded the metadata cache");
            entries
        }
        Err(ReadError::Missing) => Entries::default(),
        Err(e @ ReadError::Corrupt(_)) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a corrupt cache file");
            Entries::default()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the cache file; starting empty");
            Entries::default()
        }
    }
}

/// Whether the proxy could write `path`: creates (and removes) a temp file where [`write`] would.
/// The error names the directory.
pub fn check_writable(path: &Path) -> Result<(), String> {
    let dir = dir_of(path);
    tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            // tempfile's error names the random temp file; the system's own reason is enough.
            let e = e
                .raw_os_error()
                .map_or(e, std::io::Error::from_raw_os_error);
            format!("cannot create a file in {}: {e}", dir.display())
        })
}

/// A new temp file (created exclusively: never an existing file or link), fsync, rename over
/// `path`, fsync the directory. A failed write removes its temp file.
pub fn write(path: &Path, entries: &Entries) -> std::io::Result<()> {
    let dir = dir_of(path);
    let json = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .suffix(TEMP_SUFFIX)
        // As `File::create`: 0666 less the umask (tempfile's default would be 0600).
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(&json)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_temp_names() {
        let p = ".cache.json.";
        assert!(is_ours(".cache.json.a1B2c3.tmp", p));
        assert!(is_ours(".cache.json.12345.tmp", p));
        assert!(!is_ours(".cache.json..tmp", p));
        assert!(!is_ours(".cache.json.bak.a1B2c3.tmp", p));
        assert!(!is_ours(".cache.json.a1B2c3.tmp.keep", p));
        assert!(!is_ours("cache.json", p));
        assert!(!is_ours(".other.json.a1B2c3.tmp", p));
        assert!(!is_ours(".cache.json.a b.tmp", p));
    }

    #[test]
    fn orphans_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        std::fs::write(&target, b"keep").unwrap();
        std::fs::write(dir.path().join(".cache.json.4242.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join(".cache.json.Ab12Cd.tmp"), b"x").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".cache.json.Zz99.tmp")).unwrap();
        std::fs::create_dir(dir.path().join(".cache.json.d1r.tmp")).unwrap();
        std::fs::write(dir.path().join(".cache.json.bak.tmp.x"), b"x").unwrap();
        std::fs::write(&path, b"{}").unwrap();
        remove_orphans(&path);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".cache.json.bak.tmp.x", ".cache.json.d1r.tmp", "cache.json"]
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    #[test]
    fn links_are_resolved_once_and_dangling_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.json");
        assert_eq!(resolve(&plain).unwrap(), plain);
        let target = dir.path().join("target.json");
        std::fs::write(&target, b"{}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink("target.json", &link).unwrap();
        assert_eq!(resolve(&link).unwrap(), target.canonicalize().unwrap());
        let dangling = dir.path().join("dangling.json");
        std::os::unix::fs::symlink("absent/x.json", &dangling).unwrap();
        let err = resolve(&dangling).unwrap_err().to_string();
        assert!(
            err.contains("dangling.json") && err.contains("absent/x.json"),
            "{err}"
        );
    }

    #[test]
    fn a_write_leaves_no_temp_file_and_replaces_the_target_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        write(&path, &Entries::default()).unwrap();
        write(&path, &Entries::default()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&std::fs::read(&path).unwrap()).is_ok()
        );
    }
}
