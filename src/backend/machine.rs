//! The backend state machine as a pure transition function: no I/O, no clocks of its own (see
//! "Backend state", "Wake cycle" and "Wake interval" in docs/behaviour.md).

use std::time::{Duration, Instant};

/// What the proxy believes about Ollama.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing heard yet (start-up).
    Unknown,
    /// Ollama answered recently.
    Awake,
    /// A connect was refused, unreachable or timed out.
    Asleep,
    /// A wake cycle is running.
    Waking,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Awake => "awake",
            State::Asleep => "asleep",
            State::Waking => "waking",
        }
    }

    /// Requests that may wake are held at once in these states, without trying to connect.
    pub fn holds(self) -> bool {
        matches!(self, State::Asleep | State::Waking)
    }
}

/// Something that happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Ollama answered (a forwarded request or a wake-cycle probe).
    Answered,
    /// A connect failed or data went unacknowledged.
    Unreachable,
    /// A held request needs Ollama awake.
    WakeNeeded,
    /// Wake cycle `cycle` reached WAKE_TIMEOUT.
    CycleTimedOut { cycle: u64 },
}

/// What the driver must do after a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start wake cycle number `cycle`.
    StartCycle { cycle: u64 },
    /// Ollama woke: forward every held request, in arrival order; `took` is the cycle's duration.
    Release { took: Duration },
    /// The cycle gave up: answer every held request with 503.
    FailHeld,
}

/// The state and the few timestamps the transitions need.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    cycle: u64,
    cycle_started: Option<Instant>,
    last_heard: Option<Instant>,
    last_early_wake: Option<Instant>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: State::Unknown,
            cycle: 0,
            cycle_started: None,
            last_heard: None,
            last_early_wake: None,
        }
    }
}

impl Machine {
    pub fn state(&self) -> State {
        self.state
    }

    /// Wake cycles started so far.
    pub fn cycles(&self) -> u64 {
        self.cycle
    }

    /// Applies `event` at time `now`.
    pub fn on(&mut self, event: Event, now: Instant) -> Option<Action> {
        match (self.state, event) {
            (State::Waking, Event::Answered) => {
                self.state = State::Awake;
                self.last_heard = Some(now);
                let took = self
                    .cycle_started
                    .take()
                    .map(|s| now.saturating_duration_since(s))
                    .unwrap_or_default();
                Some(Action::Release { took })
            }
            (_, Event::Answered) => {
                self.state = State::Awake;
                self.last_heard = Some(now);
                None
            }
            (State::Waking, Event::Unreachable | Event::WakeNeeded) => None,
            (_, Event::Unreachable) => {
                self.state = State::Asleep;
                None
            }
            (_, Event::WakeNeeded) => {
                self.state = State::Waking;
                self.cycle += 1;
                self.cycle_started = Some(now);
                Some(Action::StartCycle { cycle: self.cycle })
            }
            (State::Waking, Event::CycleTimedOut { cycle }) if cycle == self.cycle => {
                self.state = State::Asleep;
                self.cycle_started = None;
                Some(Action::FailHeld)
            }
            (_, Event::CycleTimedOut { .. }) => None,
        }
    }

    /// Should a request that may wake send a wake right away, in parallel with its connect (see
    /// "Wake interval" in docs/behaviour.md)?
    ///
    /// True when Ollama has not been heard from for `interval` (or ever) and no such early wake
    /// was sent within `interval`; records the wake when it says yes.
    pub fn early_wake_due(&mut self, now: Instant, interval: Duration) -> bool {
        let stale =
            |t: Option<Instant>| t.is_none_or(|t| now.saturating_duration_since(t) >= interval);
        if self.state == State::Waking || !stale(self.last_heard) || !stale(self.last_early_wake) {
            return false;
        }
        self.last_early_wake = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn starts_unknown_and_follows_traffic() {
        let now = Instant::now();
        let mut m = Machine::default();
        assert_eq!(m.state(), State::Unknown);
        assert_eq!(m.on(Event::Answered, now), None);
        assert_eq!(m.state(), State::Awake);
        assert_eq!(m.on(Event::Unreachable, now), None);
        assert_eq!(m.state(), State::Asleep);
        assert!(m.state().holds());
    }

    #[test]
    fn one_cycle_however_many_requests() {
        let now = Instant::now();
        let mut m = Machine::default();
        m.on(Event::Unreachable, now);
        assert_eq!(
            m.on(Event::WakeNeeded, now),
            Some(Action::StartCycle { cycle: 1 })
        );
        for _ in 0..50 {
            assert_eq!(m.on(Event::WakeNeeded, now), None);
            assert_eq!(m.on(Event::Unreachable, now), None);
        }
        assert_eq!(m.state(), State::Waking);
        let took = Duration::from_secs(7);
        assert_eq!(
            m.on(Event::Answered, now + took),
            Some(Action::Release { took })
        );
        assert_eq!(m.state(), State::Awake);
        assert_eq!(m.on(Event::Answered, now + took), None);
    }

    #[test]
    fn timeout_fails_held_once_and_next_request_starts_a_new_cycle() {
        let now = Instant::now();
        let mut m = Machine::default();
        assert_eq!(
            m.on(Event::WakeNeeded, now),
            Some(Action::StartCycle { cycle: 1 })
        );
        assert_eq!(
            m.on(Event::CycleTimedOut { cycle: 1 }, t(now, 120)),
            Some(Action::FailHeld)
        );
        assert_eq!(m.state(), State::Asleep);
        assert_eq!(m.on(Event::CycleTimedOut { cycle: 1 }, t(now, 121)), None);
        assert_eq!(
            m.on(Event::WakeNeeded, t(now, 122)),
            Some(Action::StartCycle { cycle: 2 })
        );
        // A stale timeout of cycle 1 does not end cycle 2.
        assert_eq!(m.on(Event::CycleTimedOut { cycle: 1 }, t(now, 123)), None);
        assert_eq!(m.state(), State::Waking);
    }

    #[test]
    fn timeout_after_success_is_ignored() {
        let now = Instant::now();
        let mut m = Machine::default();
        m.on(Event::WakeNeeded, now);
        m.on(Event::Answered, t(now, 5));
        assert_eq!(m.on(Event::CycleTimedOut { cycle: 1 }, t(now, 120)), None);
        assert_eq!(m.state(), State::Awake);
    }

    #[test]
    fn early_wake_after_interval_of_silence() {
        let now = Instant::now();
        let iv = Duration::from_secs(600);
        let mut m = Machine::default();
        // Never heard: the first request wakes early, the next ones within the interval do not.
        assert!(m.early_wake_due(now, iv));
        assert!(!m.early_wake_due(t(now, 1), iv));
        m.on(Event::Answered, t(now, 2));
        assert!(!m.early_wake_due(t(now, 300), iv));
        assert!(m.early_wake_due(t(now, 603), iv));
        // Not while a cycle is already waking the host.
        m.on(Event::WakeNeeded, t(now, 1300));
        assert!(!m.early_wake_due(t(now, 1300), iv));
    }
}
