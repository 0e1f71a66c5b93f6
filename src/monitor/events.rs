//! The event history of one machine: the last [`KEEP`] wakes, sleeps and refusals, newest first,
//! and the stretches it spent asleep, kept in a file beside the cache file so that they survive a
//! restart (see "Monitoring" in docs/behaviour.md).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Events kept per machine.
pub const KEEP: usize = 100;
/// Asleep stretches older than this are dropped.
const STRETCH_DAYS: u64 = 8;

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One thing that happened to a machine.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// `wake_requested`, `awake`, `wake_failed`, `wake_sent`, `sleep_sent`, `asleep`,
    /// `sleep_ignored`, `queue_full`.
    pub kind: String,
    /// `work`, `manual` or `wake_interval` for wakes; `manual` for a sleep asked for by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The API key's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Seconds the wake took, for `awake`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_s: Option<f64>,
    /// Anything else worth showing (sleep methods, held requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Event {
    pub fn new(kind: &str) -> Event {
        Event {
            at: unix_now(),
            kind: kind.to_string(),
            ..Event::default()
        }
    }
}

/// What the file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Newest first.
    pub events: VecDeque<Event>,
    /// Finished asleep stretches, `[from, to]` in Unix seconds, oldest first.
    pub asleep: Vec<(u64, u64)>,
}

impl History {
    pub fn push(&mut self, event: Event) {
        self.events.push_front(event);
        self.events.truncate(KEEP);
    }

    pub fn stretch(&mut self, from: u64, to: u64) {
        let horizon = to.saturating_sub(STRETCH_DAYS * 86_400);
        self.asleep.retain(|&(_, end)| end >= horizon);
        if to > from {
            self.asleep.push((from, to));
        }
    }

    /// Seconds asleep since `since` (Unix), counting an ongoing stretch that began at `open`.
    pub fn asleep_since(&self, since: u64, open: Option<u64>, now: u64) -> u64 {
        let ongoing = open.map(|o| (o, now));
        let all = self.asleep.iter().chain(ongoing.iter());
        all.map(|&(a, b)| b.saturating_sub(a.max(since))).sum()
    }

    /// Wake cycles asked for since `since` (as far as the kept events reach).
    pub fn wakes_since(&self, since: u64) -> usize {
        self.events
            .iter()
            .filter(|e| e.at >= since && e.kind == "wake_requested")
            .count()
    }
}

/// The history file of a cache file: `cache.json` → `cache.events.json`.
pub fn file_for(cache: &Path) -> PathBuf {
    let stem = cache.file_stem().unwrap_or_default().to_string_lossy();
    cache.with_file_name(format!("{stem}.events.json"))
}

/// The history in `path`; a missing or unreadable file gives an empty one (with a warning).
pub fn read(path: &Path) -> History {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable event history");
            History::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => History::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the event history");
            History::default()
        }
    }
}

/// Writes `history` to `path` through a temp file and a rename.
pub fn write(path: &Path, history: &History) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(history).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_and_stretches() {
        let mut h = History::default();
        for i in 0..150 {
            h.push(Event {
                at: i,
                kind: "wake_requested".into(),
                ..Event::default()
            });
        }
        assert_eq!(h.events.len(), KEEP);
        assert_eq!(h.events.front().map(|e| e.at), Some(149));
        assert_eq!(h.wakes_since(140), 10);
        h.stretch(100, 200);
        assert_eq!(h.asleep_since(150, Some(300), 400), 50 + 100);
        let dir = tempfile::tempdir().unwrap();
        let file = file_for(&dir.path().join("cache.json"));
        assert!(file.ends_with("cache.events.json"));
        write(&file, &h).unwrap();
        assert_eq!(read(&file).events, h.events);
    }
}
