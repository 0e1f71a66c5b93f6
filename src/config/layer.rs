//! Where a global option's value comes from: the flag or its environment variable, else the config
//! file, else the default (see "Configuration file" in docs/behaviour.md).

use std::ops::Range;

use super::file::{ConfigFile, RawFile, Text};
use super::parse::ConfigError;

/// The defaults of the options the config file can also set. `--help` shows them too (a test keeps
/// the two equal).
pub(crate) mod default {
    pub const OLLAMA_URL: &str = "http://localhost:11434";
    pub const CONNECT_TIMEOUT: &str = "2s";
    pub const WAKE_TIMEOUT: &str = "120s";
    pub const BROADCAST: &str = "255.255.255.255";
    pub const WOL_PORT: &str = "9";
    pub const BIND: &str = "0.0.0.0";
    pub const PORT: &str = "11434";
    pub const TIMEOUT: &str = "10";
    pub const MODEL_TIMEOUT: &str = "30";
    pub const WAKE_INTERVAL: &str = "10";
    pub const CACHE_DURATION: &str = "30";
    pub const MAX_QUEUE: &str = "512";
    pub const MAX_HELD_BODY: &str = "16MiB";
    pub const BODY_BUDGET: &str = "256MiB";
    pub const CLIENT_HEADER_TIMEOUT: &str = "60";
    pub const CLIENT_IDLE_TIMEOUT: &str = "75";
    pub const MIN_AWAKE: &str = "5m";
    pub const SLEEP_CONFIRM: &str = "2m";
}

/// The flags' words that a reason may use, and the file's key for each.
const FILE_TERMS: [(&str, &str); 5] = [
    ("--mac (WOL_MAC)", "`mac`"),
    ("--wake-url (WAKE_URL)", "`wake_url`"),
    ("--wake-key (WAKE_KEY)", "`wake_key`"),
    ("--ollama-url (OLLAMA_URL)", "`url`"),
    ("--sleep-after (SLEEP_AFTER)", "`sleep_after`"),
];

/// The options as `serve` sees them: flags and environment over the file's global options.
#[derive(Clone, Copy)]
pub(super) struct Layer<'a> {
    pub file: Option<&'a ConfigFile>,
}

impl RawFile {
    /// The global option `key` (the flag's name, lowercase with `_`), if the file sets it.
    fn global(&self, key: &str) -> Option<&toml::Spanned<Text>> {
        match key {
            "bind" => self.bind.as_ref(),
            "port" => self.port.as_ref(),
            "timeout" => self.timeout.as_ref(),
            "model_timeout" => self.model_timeout.as_ref(),
            "wake_interval" => self.wake_interval.as_ref(),
            "cache_duration" => self.cache_duration.as_ref(),
            "connect_timeout" => self.connect_timeout.as_ref(),
            "wake_timeout" => self.wake_timeout.as_ref(),
            "max_queue" => self.max_queue.as_ref(),
            "max_held_body" => self.max_held_body.as_ref(),
            "max_connections" => self.max_connections.as_ref(),
            "body_budget" => self.body_budget.as_ref(),
            "client_header_timeout" => self.client_header_timeout.as_ref(),
            "client_idle_timeout" => self.client_idle_timeout.as_ref(),
            "cache_file" => self.cache_file.as_ref(),
            "sleep_after" => self.sleep_after.as_ref(),
            "min_awake" => self.min_awake.as_ref(),
            "sleep_confirm" => self.sleep_confirm.as_ref(),
            "sleep_ignore_ps" => self.sleep_ignore_ps.as_ref(),
            _ => None,
        }
    }
}

/// A flag and its environment variable, as errors name them.
pub(super) type Flag = (&'static str, &'static str);

/// A check of one option's text, given the flag and variable its errors name.
pub(super) trait Check<T>:
    FnOnce(&'static str, &'static str, &str) -> Result<T, ConfigError>
{
}
impl<T, F: FnOnce(&'static str, &'static str, &str) -> Result<T, ConfigError>> Check<T> for F {}

/// The file's key of a flag: `--model-timeout` is `model_timeout`.
fn file_key(flag: &str) -> String {
    flag.trim_start_matches("--").replace('-', "_")
}

impl<'a> Layer<'a> {
    /// The global option of `flag`: `arg` (flag or environment) if set, else the file's (under the
    /// flag's name, lowercase with `_`), else `default`, checked by `check`. A bad value from the
    /// file is reported at its place in the file.
    pub fn get<T>(
        &self,
        arg: &'a Option<String>,
        (flag, env): Flag,
        default: &'a str,
        check: impl Check<T>,
    ) -> Result<T, ConfigError> {
        let key = file_key(flag);
        match self.pick(arg, &key) {
            Some(picked) => self.check(picked, &key, |v| check(flag, env, v)),
            None => check(flag, env, default),
        }
    }

    /// Like [`Layer::get`] for an option without a default: `None` when neither sets it.
    pub fn get_opt<T>(
        &self,
        arg: &'a Option<String>,
        (flag, env): Flag,
        check: impl Check<T>,
    ) -> Result<Option<T>, ConfigError> {
        let key = file_key(flag);
        self.pick(arg, &key)
            .map(|picked| self.check(picked, &key, |v| check(flag, env, v)))
            .transpose()
    }

    /// The text of `key` and, when it comes from the file, its place there.
    fn pick(&self, arg: &'a Option<String>, key: &str) -> Option<Picked<'a>> {
        if let Some(v) = arg {
            return Some(Picked {
                text: v,
                file: None,
            });
        }
        let file = self.file?;
        let value = file.raw.global(key)?;
        Some(Picked {
            text: &value.get_ref().0,
            file: Some((file, value.span())),
        })
    }

    fn check<T>(
        &self,
        picked: Picked<'a>,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        parse(picked.text).map_err(|e| match picked.file {
            Some((file, span)) => relocate(file, e, &span, key),
            None => e,
        })
    }
}

/// A global option's text, and the file and span it came from (`None`: a flag or variable).
struct Picked<'a> {
    text: &'a str,
    file: Option<(&'a ConfigFile, Range<usize>)>,
}

/// `e`, a flag's error about a value that came from the file at `span` under `key`, restated as the
/// file's: path, line, column, key, and the reason in the file's words. Secrets stay unprinted:
/// `e.value` is `None` for them.
pub(super) fn relocate(
    file: &ConfigFile,
    e: ConfigError,
    span: &Range<usize>,
    key: &str,
) -> ConfigError {
    let mut reason = e.reason;
    for (flag, key) in FILE_TERMS {
        reason = reason.replace(flag, key);
    }
    let reason = match e.value {
        Some(v) => format!("{v:?}: {reason}"),
        None => reason,
    };
    file.error_at(span, key, reason).into()
}
