//! What the proxy records about one machine as it happens: its metrics handles, when its state
//! last changed, its event history and the time it spent asleep (see "Monitoring" in
//! docs/behaviour.md). Only wakes, sleeps, state changes and refusals lock it, never a request.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::events::{self, unix_now, Event, History};
use super::metrics::{Families, Handles, WakeCause, STATES};
use crate::backend::machine::State;
use crate::driver::Cause;

struct Log {
    history: History,
    state: State,
    /// Unix seconds of the last state change.
    since: u64,
    /// Asleep now: up to when (monotonic) the ledger counts it, and since when the counter was
    /// last brought up to date.
    asleep_counted: Option<Instant>,
    asleep_mark: Option<Instant>,
    /// The cause of the running (or last) wake cycle, and whether every wake method failed.
    cycle_cause: WakeCause,
    methods_failed: bool,
    /// Bumped at every change worth writing.
    seq: u64,
}

/// One machine's record.
pub struct Watch {
    pub m: Handles,
    families: Option<Arc<Families>>,
    name: String,
    log: Mutex<Log>,
    file: Option<PathBuf>,
    /// The sequence number last written, held while writing.
    written: Arc<Mutex<u64>>,
}

/// What the status page shows of a machine's record.
pub struct Snapshot {
    pub state: State,
    pub since: u64,
    pub events: Vec<Event>,
    pub asleep_today_s: u64,
    pub asleep_week_s: u64,
    pub wakes_today: u64,
}

impl Watch {
    /// The record of machine `name`, its history read from `file` (beside the cache file).
    pub fn new(name: &str, families: Option<Arc<Families>>, file: Option<PathBuf>) -> Watch {
        let history = file.as_deref().map(events::read).unwrap_or_default();
        let m = match &families {
            Some(f) => Handles::new(f, name),
            None => Handles::detached(),
        };
        m.state[0].set(1);
        Watch {
            m,
            families,
            name: name.to_string(),
            log: Mutex::new(Log {
                history,
                state: State::Unknown,
                since: unix_now(),
                asleep_counted: None,
                asleep_mark: None,
                cycle_cause: WakeCause::Work,
                methods_failed: false,
                seq: 0,
            }),
            file,
            written: Arc::new(Mutex::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The machine's state changed (called under the driver's lock, so in order).
    pub fn state_changed(&self, to: State) {
        let mut log = self.lock();
        let now = unix_now();
        if let Some(mark) = log.asleep_mark.take() {
            self.m.asleep_seconds.inc_by(mark.elapsed().as_secs_f64());
        }
        if log.asleep_counted.is_some() {
            count_asleep(&mut log, now, Instant::now());
            log.asleep_counted = None;
            log.seq += 1;
            self.save(&log);
        }
        if to == State::Asleep {
            log.asleep_counted = Some(Instant::now());
            log.asleep_mark = Some(Instant::now());
        }
        for (gauge, s) in self.m.state.iter().zip(STATES) {
            gauge.set(i64::from(s == to));
        }
        log.state = to;
        log.since = now;
    }

    /// Brings the time-asleep counter up to date (at a scrape).
    pub fn flush(&self) {
        let mut log = self.lock();
        if let Some(mark) = log.asleep_mark.replace(Instant::now()) {
            self.m.asleep_seconds.inc_by(mark.elapsed().as_secs_f64());
        }
    }

    /// At shutdown: the ledger brought up to date and the history written now if it changed
    /// since the last write (a background write still pending is skipped, so an older copy never
    /// replaces this one).
    pub fn close(&self) {
        let mut log = self.lock();
        let asleep = log.asleep_counted.is_some();
        count_asleep(&mut log, unix_now(), Instant::now());
        let Some(path) = &self.file else { return };
        let mut last = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if !asleep && *last >= log.seq {
            return;
        }
        *last = u64::MAX;
        if let Err(e) = events::write(path, &log.history) {
            tracing::warn!(file = %path.display(), error = %e, "cannot write the event history");
        }
    }

    /// Records `event` and writes the history.
    pub fn record(&self, event: Event) {
        let mut log = self.lock();
        log.history.push(event);
        log.seq += 1;
        self.save(&log);
    }

    /// Wake cycle started; `cause`: the request (or button) that asked for it.
    pub fn wake_started(&self, cause: Option<&Cause>) {
        let kind = match cause {
            Some(c) if c.is_manual() => WakeCause::Manual,
            _ => WakeCause::Work,
        };
        let mut e = caused("wake_requested", kind, cause);
        e.key = cause.and_then(|c| c.key.as_deref().map(String::from));
        {
            let mut log = self.lock();
            log.cycle_cause = kind;
            log.methods_failed = false;
            log.history.ledger.wake(e.at);
            log.history.ledger.prune(e.at);
        }
        self.record(e);
    }

    /// MAX_WAKES_PER_HOUR refused a wake `cause` asked for; the next may start in `retry` s.
    pub fn wake_refused(&self, cause: &Cause, max: usize, retry: u64) {
        let kind = if cause.is_manual() {
            WakeCause::Manual
        } else {
            WakeCause::Work
        };
        let mut e = caused("wake_refused", kind, Some(cause));
        e.key = cause.key.as_deref().map(String::from);
        e.detail = Some(format!(
            "MAX_WAKES_PER_HOUR ({max}) reached; next wake possible in {retry} s"
        ));
        self.record(e);
    }

    /// Every wake method of the running cycle failed.
    pub fn methods_failed(&self) {
        self.lock().methods_failed = true;
    }

    /// The cycle ended with Ollama awake after `took`; `held` requests go on.
    pub fn awake(&self, took: Duration, held: usize) {
        let cause = self.lock().cycle_cause;
        self.m.cycles[cause as usize][0].inc();
        self.m.wake_seconds.observe(took.as_secs_f64());
        self.m.released.inc_by(held as u64);
        let mut e = Event::new("awake");
        e.took_s = Some((took.as_secs_f64() * 10.0).round() / 10.0);
        e.detail = Some(format!("{held} held released"));
        self.record(e);
    }

    /// The cycle reached WAKE_TIMEOUT; `held` requests get an error.
    pub fn wake_timed_out(&self, held: usize) {
        let (cause, failed) = {
            let log = self.lock();
            (log.cycle_cause, log.methods_failed)
        };
        self.m.cycles[cause as usize][if failed { 2 } else { 1 }].inc();
        self.m.failed.inc_by(held as u64);
        let mut e = Event::new("wake_failed");
        e.detail = Some(
            if failed {
                "every wake method failed"
            } else {
                "no answer before WAKE_TIMEOUT"
            }
            .into(),
        );
        self.record(e);
    }

    /// A WAKE_INTERVAL wake went out alongside a request (`ok`: a method succeeded).
    pub fn wake_interval(&self, cause: &Cause, ok: bool) {
        self.m.cycles[WakeCause::WakeInterval as usize][if ok { 3 } else { 2 }].inc();
        let e = caused("wake_sent", WakeCause::WakeInterval, Some(cause));
        self.record(e);
    }

    /// A failure talking to Ollama (atomics only: on the request path).
    pub fn upstream_error(&self, kind: super::metrics::UpstreamError) {
        if let Some(c) = self.m.upstream.get(kind as usize) {
            c.inc();
        }
    }

    /// A request found the queue of held requests full.
    pub fn queue_full(&self) {
        self.m.rejected.inc();
        self.record(Event::new("queue_full"));
    }

    /// The sleep methods went out (`manual`: asked for by hand).
    pub fn sleep_sent(&self, methods: &str, manual: bool) {
        let mut e = Event::new("sleep_sent");
        e.cause = manual.then(|| "manual".into());
        e.detail = Some(methods.to_string());
        self.record(e);
    }

    /// The sleep's confirmation ended: each method's outcome (`ok`), and whether it went silent.
    pub fn sleep_ended(&self, methods: &[(&'static str, bool)], silent: bool) {
        if let Some(f) = &self.families {
            for (method, ok) in methods {
                let outcome = match (ok, silent) {
                    (false, _) => "error",
                    (true, true) => "asleep",
                    (true, false) => "ignored",
                };
                let labels = vec![
                    ("backend", self.name.clone()),
                    ("method", method.to_string()),
                    ("outcome", outcome.to_string()),
                ];
                f.sleeps.get_or_create(&labels).inc();
            }
        }
        self.record(Event::new(if silent { "asleep" } else { "sleep_ignored" }));
    }

    /// What the status page shows.
    pub fn snapshot(&self) -> Snapshot {
        let mut log = self.lock();
        let now = unix_now();
        count_asleep(&mut log, now, Instant::now());
        let ledger = &log.history.ledger;
        let (wakes_today, asleep_today_s) = ledger.over(now, 1);
        let (_, asleep_week_s) = ledger.over(now, 7);
        Snapshot {
            state: log.state,
            since: log.since,
            events: log.history.events.iter().cloned().collect(),
            asleep_today_s,
            asleep_week_s,
            wakes_today,
        }
    }

    /// Writes the history in the background, the newest state winning.
    fn save(&self, log: &Log) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let (history, seq) = (log.history.clone(), log.seq);
        let written = Arc::clone(&self.written);
        let job = move || {
            let mut last = written.lock().unwrap_or_else(|e| e.into_inner());
            if *last >= seq {
                return;
            }
            *last = seq;
            if let Err(e) = events::write(&path, &history) {
                tracing::warn!(file = %path.display(), error = %e, "cannot write the event history");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(job)),
            Err(_) => job(),
        }
    }
}

/// Adds the time asleep since it was last counted to the ledger (the machine is asleep now):
/// measured on the monotonic clock (`mono` is now on it) and placed to end at the wall-clock
/// `now`, so that a wall clock that jumps (NTP setting the clock of a machine without a real-time
/// clock) credits no sleep that did not happen.
fn count_asleep(log: &mut Log, now: u64, mono: Instant) {
    if let Some(mark) = log.asleep_counted {
        let secs = mono.saturating_duration_since(mark).as_secs();
        let ledger = &mut log.history.ledger;
        ledger.asleep(now.saturating_sub(secs), now);
        ledger.prune(now);
        // The part of a second not counted yet is counted next time.
        log.asleep_counted = Some(mark.checked_add(Duration::from_secs(secs)).unwrap_or(mono));
    }
}

/// An event of `kind` with its cause: the request's method, path, model and client address.
fn caused(kind: &str, why: WakeCause, cause: Option<&Cause>) -> Event {
    let mut e = Event::new(kind);
    e.cause = Some(why.as_str().into());
    if let Some(c) = cause {
        e.method = Some(c.method.to_string());
        e.path = Some(c.path().to_string());
        e.client = Some(c.client.ip().to_string());
        e.model = c.model.as_deref().map(String::from);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_jump_credits_only_the_time_really_asleep() {
        let w = Watch::new("", None, None);
        w.state_changed(State::Asleep);
        let mut log = w.lock();
        let mark = log.asleep_counted.unwrap();
        // Five years later by the wall clock, 90.5 s later by the monotonic one.
        let later = unix_now() + 5 * 365 * 86_400;
        count_asleep(&mut log, later, mark + Duration::from_millis(90_500));
        assert_eq!(log.history.ledger.over(later, 7), (0, 90));
        // The half second is counted with the next second.
        count_asleep(&mut log, later + 1, mark + Duration::from_millis(91_000));
        assert_eq!(log.history.ledger.over(later + 1, 7), (0, 91));
        // The wall clock set back: the days after tomorrow are dropped.
        let back = later - 86_400 * 365;
        count_asleep(&mut log, back, mark + Duration::from_millis(92_000));
        assert_eq!(log.history.ledger.over(back, 7), (0, 1));
        assert_eq!(log.history.ledger.over(later + 1, 7), (0, 0));
    }
}
