//! One raw setting at a time: secrets, the one-line `ConfigError`, and the checks every flag shares.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::units::{parse_duration, Unit};

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A bad setting: names the flag, its environment variable and the value (never a secret's value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag} ({env}){}: {reason}", value.as_ref().map(|v| format!(" {v:?}")).unwrap_or_default())]
pub struct ConfigError {
    pub flag: &'static str,
    pub env: &'static str,
    pub value: Option<String>,
    pub reason: String,
}

pub(crate) fn bad(
    flag: &'static str,
    env: &'static str,
    value: &str,
    reason: impl fmt::Display,
) -> ConfigError {
    ConfigError {
        flag,
        env,
        value: Some(value.to_string()),
        reason: reason.to_string(),
    }
}

pub(crate) fn bad_secret(
    flag: &'static str,
    env: &'static str,
    reason: impl fmt::Display,
) -> ConfigError {
    ConfigError {
        flag,
        env,
        value: None,
        reason: reason.to_string(),
    }
}

/// A duration (plain numbers in `unit`), at most [`crate::units::MAX_DURATION`]; zero allowed.
pub(crate) fn duration(
    flag: &'static str,
    env: &'static str,
    value: &str,
    unit: Unit,
) -> Result<Duration, ConfigError> {
    parse_duration(value, unit).map_err(|e| bad(flag, env, value, e))
}

/// A plain number of type `T` (its range checked by `FromStr`).
pub(crate) fn number<T: FromStr>(
    flag: &'static str,
    env: &'static str,
    value: &str,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e| bad(flag, env, value, e))
}

/// `n`, unless it is zero.
pub(crate) fn positive<T: PartialEq + Default>(
    flag: &'static str,
    env: &'static str,
    value: &str,
    n: T,
) -> Result<T, ConfigError> {
    if n == T::default() {
        return Err(bad(flag, env, value, "must be more than zero"));
    }
    Ok(n)
}

/// A number of type `T` that must be more than zero.
pub(crate) fn nonzero_number<T: FromStr + PartialEq + Default>(
    flag: &'static str,
    env: &'static str,
    value: &str,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    positive(flag, env, value, number(flag, env, value)?)
}

/// A duration in seconds that must be more than zero.
pub(crate) fn nonzero(
    flag: &'static str,
    env: &'static str,
    value: &str,
) -> Result<Duration, ConfigError> {
    let d = duration(flag, env, value, Unit::Seconds)?;
    positive(flag, env, value, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_where_it_cannot_work() {
        let err = nonzero("--timeout", "TIMEOUT_SECONDS", "0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid --timeout (TIMEOUT_SECONDS) \"0\": must be more than zero"
        );
        assert!(nonzero("--timeout", "TIMEOUT_SECONDS", "0s").is_err());
        assert!(nonzero("--timeout", "TIMEOUT_SECONDS", "0ms").is_err());
        assert_eq!(
            nonzero("--timeout", "TIMEOUT_SECONDS", "1"),
            Ok(Duration::from_secs(1))
        );
        assert!(nonzero_number::<u16>("--wol-port", "WOL_PORT", "0").is_err());
        assert_eq!(
            nonzero_number::<usize>("--max-queue", "MAX_QUEUE", " 7 "),
            Ok(7)
        );
        assert!(positive("--x", "X", "", 0u64).is_err());
    }

    #[test]
    fn durations_past_the_maximum_name_it() {
        let huge = u64::MAX.to_string();
        let err = duration("--wake-timeout", "WAKE_TIMEOUT", &huge, Unit::Seconds).unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains("--wake-timeout") && line.contains("WAKE_TIMEOUT"),
            "{line}"
        );
        assert!(line.contains("1year"), "{line}");
    }

    #[test]
    fn secrets_print_stars() {
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "***");
    }
}
