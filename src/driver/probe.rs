//! When a wake cycle may open its next probe connection (see "Wake cycle" in docs/behaviour.md): a
//! host that refuses at once is probed every tick, one that does not answer at all gets few SYNs.

use std::time::{Duration, Instant};

/// Most probes in flight at once.
pub(super) const MAX_PROBES: usize = 4;
/// While a probe is still unanswered, the next one waits this long after the last start: at most
/// ten connection attempts per second reach a host that does not answer.
pub(super) const SILENT_SPACING: Duration = Duration::from_millis(100);

/// How one probe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Probe {
    /// Ollama answered `GET /api/version`: it is awake.
    Ready,
    /// The host answered (a refused connection, or an HTTP error): it is up, Ollama not yet.
    Answered,
    /// No answer: a timeout, an unreachable host, a failed lookup.
    Silent,
}

/// The probes of one wake cycle: how many are in flight, when the last one started, and whether
/// the host answered the last one that ended.
#[derive(Debug, Default)]
pub(super) struct Probes {
    in_flight: usize,
    last_start: Option<Instant>,
    host_answered: bool,
}

impl Probes {
    /// May a new probe start at `now`? Records it when yes.
    pub(super) fn try_start(&mut self, now: Instant) -> bool {
        let spaced = self
            .last_start
            .is_none_or(|t| now.saturating_duration_since(t) >= SILENT_SPACING);
        // None pending and the host answered the last (refused, or an error from Ollama): it is
        // up, so the next may go at once.
        let go =
            (self.in_flight == 0 && self.host_answered) || (self.in_flight < MAX_PROBES && spaced);
        if go {
            self.in_flight += 1;
            self.last_start = Some(now);
        }
        go
    }

    /// A probe ended without finding Ollama ready; `answered`: the host did answer it.
    pub(super) fn finished(&mut self, answered: bool) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.host_answered = answered;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(base: Instant, n: u64) -> Instant {
        base + Duration::from_millis(n)
    }

    #[test]
    fn a_refusing_host_is_probed_every_tick() {
        let t = Instant::now();
        let mut p = Probes::default();
        for tick in 0..40 {
            assert!(p.try_start(ms(t, tick * 25)));
            p.finished(true); // refused at once
        }
    }

    #[test]
    fn fast_failures_that_are_no_answer_stay_spaced() {
        // A failed name lookup ends at once but says nothing about the host: 100 ms apart.
        let t = Instant::now();
        let mut p = Probes::default();
        let mut started = Vec::new();
        for m in (0..500).step_by(25) {
            if p.try_start(ms(t, m)) {
                started.push(m);
                p.finished(false);
            }
        }
        assert_eq!(started, vec![0, 100, 200, 300, 400]);
    }

    #[test]
    fn a_silent_host_gets_at_most_ten_attempts_a_second_and_four_at_once() {
        let t = Instant::now();
        let mut p = Probes::default();
        let started: Vec<u64> = (0..40)
            .map(|i| i * 25)
            .filter(|&m| p.try_start(ms(t, m)))
            .collect();
        assert_eq!(started, vec![0, 100, 200, 300]);
        // One times out: the next may start, spaced from the last start.
        p.finished(false);
        assert!(p.try_start(ms(t, 2000)));
        assert!(!p.try_start(ms(t, 2025)));
    }

    #[test]
    fn over_ten_seconds_of_silence_few_syns() {
        // Each probe of a silent host lasts 2 s (CONNECT_TIMEOUT); ticks every 25 ms.
        let t = Instant::now();
        let mut p = Probes::default();
        let mut ends: Vec<u64> = Vec::new();
        let mut attempts = 0;
        for m in (0..10_000).step_by(25) {
            let now = ms(t, m);
            while ends.first().is_some_and(|&e| e <= m) {
                ends.remove(0);
                p.finished(false);
            }
            if p.try_start(now) {
                attempts += 1;
                ends.push(m + 2000);
            }
        }
        assert!(attempts <= 25, "{attempts} attempts in 10 s");
    }
}
