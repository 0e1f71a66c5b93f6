//! The metadata cache: tags, version and show answers, their age, and the cache file (see "Cache"
//! in docs/behaviour.md).

mod file;
mod show;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::monitor::events::unix_now;

pub use file::{check_writable, resolve, FileError, ReadError};
pub use show::show_key;

/// What is cached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Tags,
    Version,
    /// `/api/show` for one model (and verbosity).
    Show(String),
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Tags => f.write_str("/api/tags"),
            Key::Version => f.write_str("/api/version"),
            Key::Show(m) => write!(f, "/api/show {m}"),
        }
    }
}

/// Ollama's answer was not UTF-8 text: it is not cached (and the older entry is not its answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Ollama's answer to {key} is not UTF-8 text; it is not cached")]
pub struct NotText {
    pub key: Key,
}

/// One cached answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub body: String,
    pub content_type: String,
    /// Unix seconds when Ollama gave this answer.
    pub stored_at: u64,
    /// Marked stale by a pull, create, copy or delete (see "Invalidation" in docs/behaviour.md).
    #[serde(default)]
    pub invalidated: bool,
}

impl Entry {
    pub fn age(&self) -> Duration {
        Duration::from_secs(unix_now().saturating_sub(self.stored_at))
    }

    /// Fresh: younger than `max_age` and not invalidated.
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        !self.invalidated && self.age() < max_age
    }
}

/// The entries, each shared with the requests that use it: a lookup copies no answer. In the file
/// an `Arc<Entry>` is written and read as the `Entry` itself.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Entries {
    #[serde(default)]
    tags: Option<Arc<Entry>>,
    #[serde(default)]
    version: Option<Arc<Entry>>,
    #[serde(default)]
    show: HashMap<String, Arc<Entry>>,
    /// The backend's MAC and broadcast, once learned (see "Learning the MAC").
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::learn::record::lenient"
    )]
    learned: Option<crate::learn::Learned>,
}

impl Entries {
    fn get_mut(&mut self, key: &Key) -> Option<&mut Arc<Entry>> {
        match key {
            Key::Tags => self.tags.as_mut(),
            Key::Version => self.version.as_mut(),
            Key::Show(m) => self.show.get_mut(m),
        }
    }

    fn put(&mut self, key: Key, entry: Arc<Entry>) {
        match key {
            Key::Tags => self.tags = Some(entry),
            Key::Version => self.version = Some(entry),
            Key::Show(m) => {
                self.show.insert(m, entry);
            }
        }
    }
}

/// The cache, shared by every request; persisted to CACHE_FILE by a background task.
pub struct Cache {
    entries: Mutex<Entries>,
    changed: Notify,
    /// CACHE_FILE, or the file its symbolic link pointed to at start.
    file: Option<PathBuf>,
}

impl Cache {
    /// An empty cache, or the one in `file` (a missing, unreadable or corrupt file only warns).
    /// Temp files left beside it by interrupted writes are removed. A symbolic link is followed
    /// once, here; one that cannot be followed (dangling, a loop) is an error.
    pub fn load(file: Option<PathBuf>) -> Result<Self, FileError> {
        let file = file.as_deref().map(file::resolve).transpose()?;
        let entries = match file.as_deref() {
            Some(path) => {
                file::remove_orphans(path);
                file::read(path)
            }
            None => Entries::default(),
        };
        Ok(Cache {
            entries: Mutex::new(entries),
            changed: Notify::new(),
            file,
        })
    }

    /// The model list (`/api/tags`) stored in the cache file `path`, without loading the cache
    /// (for `doctor`): `None` when the file has none yet.
    pub fn stored_model_list(path: &std::path::Path) -> Result<Option<Arc<Entry>>, ReadError> {
        file::load(path).map(|e| e.tags)
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let e = self.lock();
        match key {
            Key::Tags => e.tags.clone(),
            Key::Version => e.version.clone(),
            Key::Show(m) => e.show.get(m).cloned(),
        }
    }

    /// Keeps a successful answer from Ollama and returns it as stored. An answer that is not
    /// UTF-8 text is not kept (warning, with the key): the older entry stays, but is no answer.
    pub fn store(&self, key: Key, body: Bytes, content_type: &str) -> Result<Arc<Entry>, NotText> {
        let Ok(text) = std::str::from_utf8(&body) else {
            tracing::warn!(key = %key, len = body.len(), "Ollama's answer is not UTF-8 text; not cached");
            return Err(NotText { key });
        };
        let now = unix_now();
        let (entry, changed) = {
            let mut e = self.lock();
            match e.get_mut(&key) {
                // The same answer again (the common case): only its age changes, not persisted.
                // Copied only if a request still holds the old one.
                Some(old) if old.body == text && old.content_type == content_type => {
                    let was_invalidated = old.invalidated;
                    if old.stored_at != now || was_invalidated {
                        let entry = Arc::make_mut(old);
                        entry.stored_at = now;
                        entry.invalidated = false;
                    }
                    (Arc::clone(old), was_invalidated)
                }
                _ => {
                    let entry = Arc::new(Entry {
                        body: text.to_string(),
                        content_type: content_type.to_string(),
                        stored_at: now,
                        invalidated: false,
                    });
                    e.put(key, Arc::clone(&entry));
                    (entry, true)
                }
            }
        };
        if changed {
            self.changed.notify_one();
        }
        Ok(entry)
    }

    /// What was learned about the backend's network card, if anything.
    pub fn learned(&self) -> Option<crate::learn::Learned> {
        self.lock().learned.clone()
    }

    /// Keeps `learned` (persisted) unless the same card at the same place is known already: the
    /// time it was first learned stays. True when the record changed.
    pub fn set_learned(&self, learned: crate::learn::Learned) -> bool {
        {
            let mut e = self.lock();
            if e.learned.as_ref().is_some_and(|old| old.same_as(&learned)) {
                return false;
            }
            e.learned = Some(learned);
        }
        self.changed.notify_one();
        true
    }

    /// Drops the record of the backend's card (persisted): it is not this backend's any more.
    /// True when there was one.
    pub fn clear_learned(&self) -> bool {
        if self.lock().learned.take().is_none() {
            return false;
        }
        self.changed.notify_one();
        true
    }

    /// The model list changed on Ollama (pull, create, copy, delete): marks the cached list and
    /// show answers stale (see "Invalidation" in docs/behaviour.md).
    pub fn invalidate_models(&self) {
        {
            let mut e = self.lock();
            if let Some(t) = e.tags.as_mut() {
                Arc::make_mut(t).invalidated = true;
            }
            e.show
                .values_mut()
                .for_each(|s| Arc::make_mut(s).invalidated = true);
        }
        self.changed.notify_one();
    }

    /// Writes the cache file now (atomically). No-op without a file.
    pub async fn flush(&self) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let snapshot = self.lock().clone();
        let result = tokio::task::spawn_blocking(move || file::write(&path, &snapshot)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the cache file"),
            Err(e) => tracing::warn!(error = %e, "cache writer failed"),
        }
    }

    /// Persists every change until `stop` is cancelled, then once more.
    pub async fn persist(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if self.file.is_none() {
            return;
        }
        loop {
            tokio::select! {
                _ = self.changed.notified() => self.flush().await,
                _ = stop.cancelled() => break,
            }
        }
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = "application/json";

    #[tokio::test]
    async fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let cache = Cache::load(Some(path.clone())).unwrap();
        assert!(cache.get(&Key::Tags).is_none());
        let tags = Bytes::from_static(br#"{"models":[]}"#);
        cache.store(Key::Tags, tags, JSON).unwrap();
        let show = Key::Show("m:latest".into());
        cache
            .store(show.clone(), Bytes::from_static(b"{}"), JSON)
            .unwrap();
        cache.flush().await;
        let again = Cache::load(Some(path)).unwrap();
        assert_eq!(again.get(&Key::Tags).unwrap().body, r#"{"models":[]}"#);
        assert!(again.get(&show).is_some());
        let fresh = |c: &Cache| c.get(&Key::Tags).unwrap().is_fresh(Duration::from_secs(60));
        assert!(fresh(&again));
        again.invalidate_models();
        assert!(!fresh(&again));
    }

    #[tokio::test]
    async fn the_learned_record_is_kept_beside_the_answers_and_old_files_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        // A file written before learning existed.
        let old = r#"{"tags":{"body":"{}","content_type":"application/json","stored_at":1},"version":null,"show":{}}"#;
        std::fs::write(&path, old).unwrap();
        let cache = Cache::load(Some(path.clone())).unwrap();
        assert!(cache.get(&Key::Tags).is_some());
        assert!(cache.learned().is_none());
        let learned = crate::learn::Learned {
            ip: "192.168.1.50".parse().unwrap(),
            mac: "02:00:5e:10:20:30".parse().unwrap(),
            interface: "eth0".into(),
            broadcast: "192.168.1.255".parse().unwrap(),
            learned_at: 1_700_000_000,
        };
        assert!(cache.set_learned(learned.clone()));
        let again = crate::learn::Learned {
            learned_at: 1_800_000_000,
            ..learned.clone()
        };
        assert!(!cache.set_learned(again));
        cache.flush().await;
        let reloaded = Cache::load(Some(path.clone())).unwrap();
        assert_eq!(reloaded.learned(), Some(learned.clone()));
        assert!(reloaded.get(&Key::Tags).is_some());
        assert_eq!(crate::learn::record::read(&path).unwrap(), Some(learned));
        // Forgotten: gone from the file too, the answers stay.
        assert!(reloaded.clear_learned());
        assert!(!reloaded.clear_learned());
        reloaded.flush().await;
        assert_eq!(crate::learn::record::read(&path).unwrap(), None);
        assert!(Cache::load(Some(path.clone()))
            .unwrap()
            .get(&Key::Tags)
            .is_some());
        // A broken record costs only itself.
        let broken = old.replace(r#""show":{}"#, r#""show":{},"learned":{"mac":"nope"}"#);
        std::fs::write(&path, broken).unwrap();
        let reloaded = Cache::load(Some(path)).unwrap();
        assert!(reloaded.learned().is_none());
        assert!(reloaded.get(&Key::Tags).is_some());
    }

    #[test]
    fn bad_files_only_warn_but_a_dangling_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(Cache::load(Some(path)).unwrap().get(&Key::Tags).is_none());
        let a_dir = Cache::load(Some(dir.path().to_path_buf())).unwrap();
        assert!(a_dir.get(&Key::Tags).is_none());
        // A link that cannot be followed is not a missing file: it is refused.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(dir.path().join("gone/cache.json"), &link).unwrap();
        assert!(Cache::load(Some(link)).is_err());
    }

    #[test]
    fn store_returns_what_it_kept_and_refuses_non_text() {
        let cache = Cache::load(None).unwrap();
        let old = cache
            .store(Key::Tags, Bytes::from_static(b"old"), JSON)
            .unwrap();
        assert_eq!(old.body, "old");
        let again = cache
            .store(Key::Tags, Bytes::from_static(b"old"), JSON)
            .unwrap();
        assert_eq!(again.body, "old");
        let new = cache
            .store(Key::Tags, Bytes::from_static(b"new"), JSON)
            .unwrap();
        assert_eq!(new.body, "new");
        let err = cache.store(Key::Tags, Bytes::from_static(b"\xff\xfe"), JSON);
        assert_eq!(err.unwrap_err(), NotText { key: Key::Tags });
        // The older entry stays cached (for a sleeping Ollama), but it was not the answer.
        assert_eq!(cache.get(&Key::Tags).unwrap().body, "new");
    }

    #[test]
    fn age_and_freshness() {
        let e = Entry {
            body: String::new(),
            content_type: String::new(),
            stored_at: unix_now() - 100,
            invalidated: false,
        };
        assert!(e.age() >= Duration::from_secs(100));
        assert!(!e.is_fresh(Duration::from_secs(60)));
        assert!(e.is_fresh(Duration::from_secs(600)));
    }
}
