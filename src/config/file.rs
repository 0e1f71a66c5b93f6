//! The config file (`--config`, `CONFIG`): TOML read with serde into raw, spanned values, and
//! errors that name the file, line, column and key (see "Configuration file" in docs/behaviour.md).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::parse::ConfigError;

/// A scalar option as written in the file: a string (`"2s"`, `"16MiB"`), an integer (`11434`, a
/// duration in the option's unit) or, for `broadcast`, a list of strings. It is turned into the
/// same text a flag would carry (a boolean becomes `true` or `false`), so the file and the flags share one parser.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<String>()? {
                    items.push(item);
                }
                Ok(Text(items.join(",")))
            }
        }
        d.deserialize_any(TextVisitor)
    }
}

/// An optional value with where it stands in the file.
pub(super) type Opt<T> = Option<Spanned<T>>;

/// The whole file: global options (the flags' names, lowercase with `_`) and `[[backend]]` tables.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub bind: Opt<Text>,
    pub port: Opt<Text>,
    pub timeout: Opt<Text>,
    pub model_timeout: Opt<Text>,
    pub wake_interval: Opt<Text>,
    pub cache_duration: Opt<Text>,
    pub connect_timeout: Opt<Text>,
    pub wake_timeout: Opt<Text>,
    pub max_queue: Opt<Text>,
    pub max_held_body: Opt<Text>,
    pub max_connections: Opt<Text>,
    pub body_budget: Opt<Text>,
    pub client_header_timeout: Opt<Text>,
    pub client_idle_timeout: Opt<Text>,
    pub cache_file: Opt<Text>,
    pub sleep_after: Opt<Text>,
    pub min_awake: Opt<Text>,
    pub sleep_confirm: Opt<Text>,
    pub sleep_ignore_ps: Opt<Text>,
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

/// One `[[backend]]` table (no `Debug`: it holds `wake_key` and `secureon` in the clear).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub name: Spanned<String>,
    pub url: Spanned<String>,
    pub mac: Opt<Text>,
    pub broadcast: Opt<Text>,
    pub wol_port: Opt<Text>,
    pub interface: Opt<Text>,
    pub secureon: Opt<Text>,
    pub wake_url: Opt<Text>,
    pub wake_key: Opt<Text>,
    pub priority: Opt<i64>,
    pub always_on: Opt<bool>,
    pub connect_timeout: Opt<Text>,
    pub wake_timeout: Opt<Text>,
    pub sleep_packet: Opt<Text>,
    pub sleep_url: Opt<Text>,
    pub sleep_command: Opt<Text>,
    pub sleep_after: Opt<Text>,
    pub min_awake: Opt<Text>,
    pub sleep_confirm: Opt<Text>,
    pub sleep_ignore_ps: Opt<Text>,
}

/// A config file read and parsed; keeps its text to turn byte offsets into lines and columns.
pub(super) struct ConfigFile {
    pub path: PathBuf,
    text: String,
    pub raw: RawFile,
}

/// The key of an error that is about the file's TOML syntax rather than one key.
pub const SYNTAX: &str = "TOML syntax";

/// A bad config file: which file, where in it, which key, and why. One line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {key}: {reason}", path.display())]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The key, as a TOML path such as `backend[1].mac` ([`SYNTAX`] when the file is not TOML).
    pub key: String,
    pub reason: String,
}

impl From<FileError> for ConfigError {
    fn from(e: FileError) -> Self {
        ConfigError {
            flag: "--config",
            env: "CONFIG",
            value: None,
            reason: e.to_string(),
        }
    }
}

impl ConfigFile {
    /// Reads and parses `path`; a file that cannot be read or is not valid for this proxy is an
    /// error naming the file (and, when it has them, the line, column and key).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            flag: "--config",
            env: "CONFIG",
            value: Some(path.display().to_string()),
            reason: format!("cannot read the file: {e}"),
        })?;
        Self::parse(path, text)
    }

    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: String) -> Result<Self, ConfigError> {
        let parsed = toml::Deserializer::parse(&text)
            .map_err(|e| (String::new(), e))
            .and_then(|d| {
                serde_path_to_error::deserialize::<_, RawFile>(d).map_err(|e| {
                    // `Spanned` values add a private last segment to the path; `.` is the root.
                    let path = e.path().to_string();
                    let key = path
                        .strip_suffix(".$__serde_spanned_private_value")
                        .unwrap_or(&path)
                        .to_string();
                    (key, e.into_inner())
                })
            });
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            text,
            raw: RawFile::default(),
        };
        match parsed {
            Ok(raw) => {
                file.raw = raw;
                Ok(file)
            }
            Err((key, e)) => {
                let at = e.span().map_or(0, |s| s.start);
                Err(file.error(at, &key, e.message().trim_end()).into())
            }
        }
    }

    /// The error for `key` at byte offset `at` of the file.
    pub fn error(&self, at: usize, key: &str, reason: impl fmt::Display) -> FileError {
        let (line, column) = line_column(&self.text, at);
        FileError {
            path: self.path.clone(),
            line,
            column,
            key: if key.is_empty() || key == "." {
                SYNTAX.into()
            } else {
                key.into()
            },
            reason: reason.to_string(),
        }
    }

    /// The error for the value spanning `span`.
    pub fn error_at(&self, span: &Range<usize>, key: &str, reason: impl fmt::Display) -> FileError {
        self.error(span.start, key, reason)
    }
}

/// 1-based line and column (in characters) of byte offset `at` in `text` (clamped to its end and
/// to a character boundary).
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let before = text.get(..at).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_count_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 10), (2, 4));
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 999), (3, 1));
    }
}
