//! The event history of one machine: the last [`KEEP`] wakes, sleeps and refusals, newest first,
//! and its daily ledger (wakes and time asleep per day), kept in a file beside the cache file so
//! that they survive a restart (see "Monitoring" in docs/behaviour.md).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ledger::{Ledger, DAY};

/// Events kept per machine.
pub const KEEP: usize = 100;

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
    /// The model the request names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
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
    /// Wakes and time asleep per day.
    #[serde(default)]
    pub ledger: Ledger,
    /// Files written before the ledger kept finished asleep stretches, `[from, to]` in Unix
    /// seconds: read once into the ledger, never written.
    #[serde(default, skip_serializing)]
    asleep: Vec<(u64, u64)>,
}

impl History {
    pub fn push(&mut self, event: Event) {
        self.events.push_front(event);
        self.events.truncate(KEEP);
    }

    /// The history a file held, made plausible at `now` (the file may be crafted, or written
    /// while the wall clock was far ahead): nothing after tomorrow, no backwards asleep stretch, at
    /// most [`KEEP`] events, model names cut as they are recorded. A file without a ledger (written before it existed): its asleep
    /// stretches and kept wake events make one, as far as they reach.
    fn settle(&mut self, now: u64) {
        let latest = now.saturating_add(DAY);
        self.events.retain(|e| e.at <= latest);
        self.events.truncate(KEEP);
        // Files from before model names were cut.
        for model in self.events.iter_mut().filter_map(|e| e.model.as_mut()) {
            if let std::borrow::Cow::Owned(cut) = crate::routing::shown(model) {
                *model = cut;
            }
        }
        let stretches = std::mem::take(&mut self.asleep);
        if self.ledger.is_empty() {
            let plausible = stretches
                .into_iter()
                .filter(|&(f, t)| f <= t && t <= latest);
            for (from, to) in plausible {
                self.ledger.asleep(from, to);
            }
            let wakes = self.events.iter().rev();
            for e in wakes.filter(|e| e.kind == "wake_requested") {
                self.ledger.wake(e.at);
            }
        }
        self.ledger = std::mem::take(&mut self.ledger).loaded(now);
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
        Ok(bytes) => match serde_json::from_slice::<History>(&bytes) {
            Ok(mut h) => {
                h.settle(unix_now());
                h
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable event history");
                History::default()
            }
        },
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
    fn ring_and_file() {
        let mut h = History::default();
        let start = unix_now() - 1000;
        for i in 0..150 {
            h.push(Event {
                at: start + i,
                kind: "wake_requested".into(),
                ..Event::default()
            });
        }
        assert_eq!(h.events.len(), KEEP);
        assert_eq!(h.events.front().map(|e| e.at), Some(start + 149));
        h.ledger.asleep(start + 100, start + 200);
        let dir = tempfile::tempdir().unwrap();
        let file = file_for(&dir.path().join("cache.json"));
        assert!(file.ends_with("cache.events.json"));
        write(&file, &h).unwrap();
        let again = read(&file);
        assert_eq!(again.events, h.events);
        assert_eq!(again.ledger, h.ledger);
    }

    #[test]
    fn a_file_from_before_the_ledger_and_the_model_loads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cache.events.json");
        let day = unix_now() / DAY * DAY;
        let old = format!(
            r#"{{"events":[{{"at":{},"kind":"awake"}},{{"at":{},"kind":"wake_requested","cause":"work","method":"POST","path":"/api/chat","client":"10.0.0.2"}}],"asleep":[[{},{}]]}}"#,
            day + 100,
            day + 90,
            day + 10,
            day + 70
        );
        std::fs::write(&file, old).unwrap();
        let h = read(&file);
        assert_eq!(h.events.len(), 2);
        assert_eq!(h.events[1].model, None);
        assert_eq!(h.ledger.over(day + 200, 1), (1, 60));
        assert!(h.asleep.is_empty());
    }

    #[test]
    fn a_crafted_file_is_settled() {
        let now = 20_522 * DAY + 3600;
        let long = "m\\n".repeat(100_000);
        let text = format!(
            r#"{{"events":[{{"at":18446744073709551615,"kind":"awake"}},
                {{"at":{ok},"kind":"wake_requested","model":"{long}"}}],
              "asleep":[[{ok},{back}],[0,18446744073709551615],[{back},{ok}]]}}"#,
            ok = now - 60,
            back = now - 120
        );
        let mut h: History = serde_json::from_str(&text).unwrap();
        h.settle(now);
        assert_eq!(h.events.len(), 1);
        let model = h.events[0].model.as_deref().unwrap();
        assert!(
            model.chars().count() <= 128 && !model.contains('\n'),
            "{model}"
        );
        assert_eq!(h.ledger.over(now, 1), (1, 60));
    }
}
