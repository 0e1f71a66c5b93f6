//! "Sleep now?" as a pure function of the counters, clocks and settings, and of Ollama's
//! `/api/ps` answer once the rest says yes (see "Sleep" in docs/behaviour.md). No I/O here.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Sleeps in a row a machine may ignore before the proxy stops sending them (the first and one
/// retry).
pub const MAX_IGNORED: u32 = 2;

/// When a machine with a sleep method is put to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Idle this long after the last request finished (SLEEP_AFTER).
    pub after: Duration,
    /// Awake at least this long (MIN_AWAKE).
    pub min_awake: Duration,
    /// Do not ask `/api/ps` (SLEEP_IGNORE_PS).
    pub ignore_ps: bool,
}

/// What the proxy knows of one machine at `now`.
#[derive(Debug, Clone, Copy)]
pub struct Inputs {
    /// The machine is believed awake (no sleep, wake or doubt in progress).
    pub awake: bool,
    /// Requests sent to it and not finished (streams until their body ends).
    pub in_flight: usize,
    /// Requests held for it.
    pub held: usize,
    /// When the last request sent to it finished.
    pub last_finished: Option<Instant>,
    /// When it was last found awake after not being so.
    pub awake_since: Option<Instant>,
    /// Sleeps it ignored since it was last found asleep, and when the last one was given up on.
    pub ignored: u32,
    pub ignored_at: Option<Instant>,
    pub now: Instant,
}

/// Ollama's `/api/ps`, as far as the decision goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ps {
    /// Not asked yet.
    NotAsked,
    /// A model's `expires_at` is in the future: someone uses it, or used it a moment ago.
    InUse,
    /// Nothing loaded, or everything loaded has expired.
    Idle,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not now (not awake, busy, or not idle long enough).
    Stay,
    /// Everything else holds: ask `/api/ps`, then decide again with its answer.
    AskPs,
    /// A model is loaded and not expired: not now.
    InUse,
    /// Send the sleep methods.
    Sleep,
    /// Idle, but the machine ignored [`MAX_IGNORED`] sleeps: warn, send nothing.
    GaveUp,
}

/// Whether to put the machine to sleep now. A machine the proxy sent no request to since it woke
/// (someone turned it on to use it) is left alone: only the proxy's own work is undone.
pub fn decide(i: &Inputs, s: &Settings, ps: Ps) -> Verdict {
    if !i.awake || i.in_flight > 0 || i.held > 0 {
        return Verdict::Stay;
    }
    let (Some(awake_since), Some(last_finished)) = (i.awake_since, i.last_finished) else {
        return Verdict::Stay;
    };
    if last_finished < awake_since {
        return Verdict::Stay;
    }
    let since = |t: Instant| i.now.saturating_duration_since(t);
    if since(awake_since) < s.min_awake {
        return Verdict::Stay;
    }
    let idle_from = i.ignored_at.map_or(last_finished, |t| t.max(last_finished));
    if since(idle_from) < s.after {
        return Verdict::Stay;
    }
    if i.ignored >= MAX_IGNORED {
        return Verdict::GaveUp;
    }
    match (s.ignore_ps, ps) {
        (true, _) | (false, Ps::Idle) => Verdict::Sleep,
        (false, Ps::NotAsked) => Verdict::AskPs,
        (false, Ps::InUse) => Verdict::InUse,
    }
}

/// Reads Ollama's `/api/ps` body at wall-clock time `now`: in use when a model's `expires_at` is
/// later than `now`. A body that is not the expected JSON, or a model whose `expires_at` cannot
/// be read, counts as in use: when in doubt, the machine stays awake.
pub fn read_ps(body: &[u8], now: SystemTime) -> Ps {
    #[derive(serde::Deserialize)]
    struct Running {
        models: Vec<Loaded>,
    }
    #[derive(serde::Deserialize)]
    struct Loaded {
        expires_at: Option<String>,
    }
    let Ok(running) = serde_json::from_slice::<Running>(body) else {
        return Ps::InUse;
    };
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(_) => return Ps::InUse,
    };
    let in_use = running.models.iter().any(|m| {
        m.expires_at
            .as_deref()
            .and_then(crate::rfc3339::parse)
            .is_none_or(|expires| expires > now)
    });
    if in_use {
        Ps::InUse
    } else {
        Ps::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: Settings = Settings {
        after: Duration::from_secs(300),
        min_awake: Duration::from_secs(300),
        ignore_ps: false,
    };

    fn s(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    /// Woke at 0, last request finished at 100, now 1000: everything says sleep.
    fn idle(base: Instant) -> Inputs {
        Inputs {
            awake: true,
            in_flight: 0,
            held: 0,
            last_finished: Some(s(base, 100)),
            awake_since: Some(base),
            ignored: 0,
            ignored_at: None,
            now: s(base, 1000),
        }
    }

    #[test]
    fn idle_long_enough_asks_ps_then_sleeps() {
        let b = Instant::now();
        assert_eq!(decide(&idle(b), &SETTINGS, Ps::NotAsked), Verdict::AskPs);
        assert_eq!(decide(&idle(b), &SETTINGS, Ps::Idle), Verdict::Sleep);
        assert_eq!(decide(&idle(b), &SETTINGS, Ps::InUse), Verdict::InUse);
        let ignore = Settings {
            ignore_ps: true,
            ..SETTINGS
        };
        assert_eq!(decide(&idle(b), &ignore, Ps::NotAsked), Verdict::Sleep);
    }

    #[test]
    fn work_in_flight_or_held_keeps_it_awake() {
        let b = Instant::now();
        let busy = Inputs {
            in_flight: 1,
            ..idle(b)
        };
        assert_eq!(decide(&busy, &SETTINGS, Ps::Idle), Verdict::Stay);
        let held = Inputs { held: 2, ..idle(b) };
        assert_eq!(decide(&held, &SETTINGS, Ps::Idle), Verdict::Stay);
    }

    #[test]
    fn only_an_awake_machine_sleeps() {
        let b = Instant::now();
        let not = Inputs {
            awake: false,
            ..idle(b)
        };
        assert_eq!(decide(&not, &SETTINGS, Ps::Idle), Verdict::Stay);
    }

    #[test]
    fn idle_clock_counts_from_the_last_finish() {
        let b = Instant::now();
        let recent = Inputs {
            last_finished: Some(s(b, 701)),
            ..idle(b)
        };
        assert_eq!(decide(&recent, &SETTINGS, Ps::Idle), Verdict::Stay);
        let exactly = Inputs {
            last_finished: Some(s(b, 700)),
            ..idle(b)
        };
        assert_eq!(decide(&exactly, &SETTINGS, Ps::Idle), Verdict::Sleep);
    }

    #[test]
    fn min_awake_counts_from_the_wake() {
        let b = Instant::now();
        let short = Settings {
            after: Duration::from_secs(1),
            min_awake: Duration::from_secs(300),
            ignore_ps: false,
        };
        let woke = Inputs {
            awake_since: Some(s(b, 900)),
            last_finished: Some(s(b, 950)),
            ..idle(b)
        };
        assert_eq!(decide(&woke, &short, Ps::Idle), Verdict::Stay);
        let later = Inputs {
            now: s(b, 1200),
            ..woke
        };
        assert_eq!(decide(&later, &short, Ps::Idle), Verdict::Sleep);
    }

    #[test]
    fn a_machine_without_work_since_it_woke_is_left_alone() {
        let b = Instant::now();
        let never = Inputs {
            last_finished: None,
            ..idle(b)
        };
        assert_eq!(decide(&never, &SETTINGS, Ps::Idle), Verdict::Stay);
        // Its last request was before it slept; someone else woke it since.
        let before = Inputs {
            awake_since: Some(s(b, 200)),
            ..idle(b)
        };
        assert_eq!(decide(&before, &SETTINGS, Ps::Idle), Verdict::Stay);
    }

    #[test]
    fn an_ignored_sleep_is_retried_once_after_sleep_after_then_given_up() {
        let b = Instant::now();
        let once = Inputs {
            ignored: 1,
            ignored_at: Some(s(b, 800)),
            ..idle(b)
        };
        assert_eq!(decide(&once, &SETTINGS, Ps::Idle), Verdict::Stay);
        let retry = Inputs {
            now: s(b, 1100),
            ..once
        };
        assert_eq!(decide(&retry, &SETTINGS, Ps::Idle), Verdict::Sleep);
        let twice = Inputs {
            ignored: 2,
            now: s(b, 1100),
            ..once
        };
        assert_eq!(decide(&twice, &SETTINGS, Ps::Idle), Verdict::GaveUp);
        assert_eq!(decide(&twice, &SETTINGS, Ps::NotAsked), Verdict::GaveUp);
    }

    fn at(text: &str) -> SystemTime {
        let (secs, nanos) = crate::rfc3339::parse(text).unwrap();
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    }

    #[test]
    fn ps_in_use_when_a_model_expires_later() {
        let now = at("2024-06-01T10:00:00Z");
        let ps = |expires: &str| {
            format!(
                r#"{{"models":[{{"name":"a","expires_at":"2024-06-01T09:00:00Z"}},{{"name":"b","expires_at":"{expires}"}}]}}"#
            )
        };
        assert_eq!(
            read_ps(ps("2024-06-01T10:04:59Z").as_bytes(), now),
            Ps::InUse
        );
        assert_eq!(
            read_ps(ps("2024-06-01T11:59:59+02:00").as_bytes(), now),
            Ps::Idle
        );
        assert_eq!(
            read_ps(ps("2024-06-01T09:59:59.999Z").as_bytes(), now),
            Ps::Idle
        );
        assert_eq!(read_ps(br#"{"models":[]}"#, now), Ps::Idle);
        // In doubt, in use.
        assert_eq!(read_ps(ps("soon").as_bytes(), now), Ps::InUse);
        assert_eq!(read_ps(br#"{"models":[{"name":"a"}]}"#, now), Ps::InUse);
        assert_eq!(read_ps(b"not json", now), Ps::InUse);
    }
}
