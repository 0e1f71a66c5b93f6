//! Parsing of durations (plain numbers in a default unit, or human strings) and byte sizes.

use std::time::Duration;

/// The unit a plain number is read in (the original Python proxy's units: seconds or minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Minutes,
}

/// The longest duration any setting accepts: one year (365.25 days, humantime's `1y`). Longer
/// values are refused at start-up: they mean nothing here, and a deadline of `now + u64::MAX`
/// seconds cannot even be represented.
pub const MAX_DURATION: Duration = Duration::from_secs(31_557_600);

/// Parses `"90"` (in `unit`), `"90s"`, `"5m"`, `"1h 30m"`, `"500ms"`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str, unit: Unit) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let too_long = || {
        format!(
            "longer than the maximum, {}",
            humantime::format_duration(MAX_DURATION)
        )
    };
    let d = if let Ok(n) = s.parse::<u64>() {
        let secs = match unit {
            Unit::Seconds => Some(n),
            Unit::Minutes => n.checked_mul(60),
        };
        secs.map(Duration::from_secs).ok_or_else(too_long)?
    } else {
        humantime::parse_duration(s).map_err(|e| {
            let plain = match unit {
                Unit::Seconds => "seconds",
                Unit::Minutes => "minutes",
            };
            match e {
                humantime::DurationError::NumberOverflow => too_long(),
                e => format!(
                    "{e} (expected a number of {plain}, or a duration like 90s, 5m, 1h 30m)"
                ),
            }
        })?
    };
    if d > MAX_DURATION {
        return Err(too_long());
    }
    Ok(d)
}

/// Parses a byte size: `"1048576"`, `"512KiB"`, `"16MiB"`, `"1GiB"`, `"10MB"`, `"16M"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected a size like 16MiB or a number of bytes".to_string())?;
    let mult: u64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(|| "size too large".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_use_the_unit() {
        assert_eq!(
            parse_duration("10", Unit::Seconds),
            Ok(Duration::from_secs(10))
        );
        assert_eq!(
            parse_duration("10", Unit::Minutes),
            Ok(Duration::from_secs(600))
        );
        assert_eq!(parse_duration(" 0 ", Unit::Seconds), Ok(Duration::ZERO));
    }

    #[test]
    fn human_forms() {
        let m = Unit::Minutes;
        assert_eq!(parse_duration("90s", m), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m", m), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m", m), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h30m", m), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms", m), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn bad_durations() {
        for s in ["", "abc", "-5", "5 parsecs", "1.5.3s"] {
            assert!(parse_duration(s, Unit::Seconds).is_err(), "{s:?}");
        }
        assert!(parse_duration("99999999999999999999", Unit::Minutes).is_err());
        assert!(parse_duration(&u64::MAX.to_string(), Unit::Minutes).is_err());
    }

    #[test]
    fn at_most_one_year() {
        let year = Ok(MAX_DURATION);
        assert_eq!(parse_duration("1y", Unit::Seconds), year);
        assert_eq!(parse_duration("31557600", Unit::Seconds), year);
        assert_eq!(parse_duration("525960", Unit::Minutes), year);
        for (s, unit) in [
            ("31557601", Unit::Seconds),
            ("525961", Unit::Minutes),
            ("1y 1s", Unit::Seconds),
            ("18446744073709551615", Unit::Seconds),
            ("584942417355years", Unit::Seconds),
        ] {
            let err = parse_duration(s, unit).unwrap_err();
            assert!(err.contains("maximum, 1year"), "{s}: {err}");
        }
        // Every accepted duration can be added to an Instant.
        assert!(std::time::Instant::now()
            .checked_add(MAX_DURATION)
            .is_some());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        for s in ["", "MiB", "16XB", "-1", "99999999999GiB"] {
            assert!(parse_size(s).is_err(), "{s:?}");
        }
    }
}
