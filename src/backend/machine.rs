//! The backend state machine as a pure transition function: no I/O, no clocks of its own (see
//! "Backend state", "Wake cycle", "Wake interval" and "Sleep" in docs/behaviour.md).

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
    /// The sleep methods were sent; the proxy waits for the machine to go silent (see "Sleep").
    Sleeping,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Awake => "awake",
            State::Asleep => "asleep",
            State::Waking => "waking",
            State::Sleeping => "sleeping",
        }
    }

    /// Requests that may wake are held at once in these states, without trying to connect.
    pub fn holds(self) -> bool {
        matches!(self, State::Asleep | State::Waking | State::Sleeping)
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
    /// The machine is idle and about to be sent its sleep methods (only an awake one is).
    SleepStarted,
    /// The sleep's confirmation ended: the machine went `silent`, or SLEEP_CONFIRM ran out while
    /// it still answered.
    SleepEnded { silent: bool },
    /// A request arrived before the sleep methods were sent: the sleep is off.
    SleepCancelled,
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
    /// Send the sleep methods, then confirm that the machine goes silent.
    Sleep,
    /// A cancelled sleep: forward the requests held meanwhile (Ollama never stopped).
    ReleaseHeld,
}

/// The state and the few timestamps the transitions need.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    cycle: u64,
    cycle_started: Option<Instant>,
    last_heard: Option<Instant>,
    last_early_wake: Option<Instant>,
    /// When the machine was last found awake after not being so (start of this awake period).
    awake_since: Option<Instant>,
    /// A request needs the machine while it is being put to sleep: wake it once that ends.
    wake_wanted: bool,
    /// Sleeps sent since the machine was last found asleep that it did not follow.
    sleeps_ignored: u32,
    /// When the last ignored sleep's confirmation ended.
    sleep_ignored_at: Option<Instant>,
}

impl Default for Machine {
    fn default() -> Self {
        Machine {
            state: State::Unknown,
            cycle: 0,
            cycle_started: None,
            last_heard: None,
            last_early_wake: None,
            awake_since: None,
            wake_wanted: false,
            sleeps_ignored: 0,
            sleep_ignored_at: None,
        }
    }
}

impl Machine {
    /// During a sleep: a request asked for a wake, which follows once the sleep ends.
    pub fn wake_wanted(&self) -> bool {
        self.wake_wanted
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Wake cycles started so far.
    pub fn cycles(&self) -> u64 {
        self.cycle
    }

    /// When the machine was last found awake after being asleep, waking or unknown.
    pub fn awake_since(&self) -> Option<Instant> {
        self.awake_since
    }

    /// Sleeps the machine ignored since it was last found asleep, and when the last one did.
    pub fn sleeps_ignored(&self) -> (u32, Option<Instant>) {
        (self.sleeps_ignored, self.sleep_ignored_at)
    }

    /// Starts a wake cycle now.
    fn start_cycle(&mut self, now: Instant) -> Option<Action> {
        self.state = State::Waking;
        self.cycle += 1;
        self.cycle_started = Some(now);
        Some(Action::StartCycle { cycle: self.cycle })
    }

    /// Applies `event` at time `now`.
    pub fn on(&mut self, event: Event, now: Instant) -> Option<Action> {
        match (self.state, event) {
            // While the machine is put to sleep, what traffic says does not count: only the
            // confirmation ends this state; a request that needs it is woken after (see "Sleep").
            (State::Sleeping, Event::Answered | Event::Unreachable) => None,
            (State::Sleeping, Event::WakeNeeded) => {
                self.wake_wanted = true;
                None
            }
            (State::Sleeping, Event::SleepEnded { silent }) => {
                if silent {
                    self.state = State::Asleep;
                    self.sleeps_ignored = 0;
                    self.sleep_ignored_at = None;
                } else {
                    self.state = State::Awake;
                    self.sleeps_ignored += 1;
                    self.sleep_ignored_at = Some(now);
                }
                if std::mem::take(&mut self.wake_wanted) {
                    return self.start_cycle(now);
                }
                None
            }
            (State::Sleeping, Event::SleepCancelled) => {
                self.state = State::Awake;
                std::mem::take(&mut self.wake_wanted).then_some(Action::ReleaseHeld)
            }
            (State::Awake, Event::SleepStarted) => {
                self.state = State::Sleeping;
                self.wake_wanted = false;
                Some(Action::Sleep)
            }
            (_, Event::SleepStarted | Event::SleepEnded { .. } | Event::SleepCancelled) => None,
            (State::Waking, Event::Answered) => {
                self.state = State::Awake;
                self.last_heard = Some(now);
                self.awake_since = Some(now);
                let took = self
                    .cycle_started
                    .take()
                    .map(|s| now.saturating_duration_since(s))
                    .unwrap_or_default();
                Some(Action::Release { took })
            }
            (_, Event::Answered) => {
                if self.state != State::Awake {
                    self.awake_since = Some(now);
                }
                self.state = State::Awake;
                self.last_heard = Some(now);
                None
            }
            (State::Waking, Event::Unreachable | Event::WakeNeeded) => None,
            (_, Event::Unreachable) => {
                self.state = State::Asleep;
                self.sleeps_ignored = 0;
                self.sleep_ignored_at = None;
                None
            }
            (_, Event::WakeNeeded) => self.start_cycle(now),
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
        let busy = matches!(self.state, State::Waking | State::Sleeping);
        if busy || !stale(self.last_heard) || !stale(self.last_early_wake) {
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

    fn awake(now: Instant) -> Machine {
        let mut m = Machine::default();
        m.on(Event::Answered, now);
        m
    }

    #[test]
    fn awake_since_is_the_start_of_the_awake_period() {
        let now = Instant::now();
        let mut m = awake(now);
        assert_eq!(m.awake_since(), Some(now));
        m.on(Event::Answered, t(now, 5));
        assert_eq!(m.awake_since(), Some(now), "still the same awake period");
        m.on(Event::Unreachable, t(now, 6));
        m.on(Event::WakeNeeded, t(now, 7));
        m.on(Event::Answered, t(now, 9));
        assert_eq!(m.awake_since(), Some(t(now, 9)));
    }

    #[test]
    fn only_an_awake_machine_is_put_to_sleep() {
        let now = Instant::now();
        let mut m = Machine::default();
        assert_eq!(m.on(Event::SleepStarted, now), None);
        assert_eq!(m.state(), State::Unknown);
        m.on(Event::Unreachable, now);
        assert_eq!(m.on(Event::SleepStarted, now), None);
        assert_eq!(m.state(), State::Asleep);
        let mut m = awake(now);
        assert_eq!(m.on(Event::SleepStarted, now), Some(Action::Sleep));
        assert_eq!(m.state(), State::Sleeping);
        assert!(m.state().holds());
        assert_eq!(m.on(Event::SleepStarted, now), None, "one sleep at a time");
    }

    #[test]
    fn a_confirmed_sleep_is_asleep_at_once() {
        let now = Instant::now();
        let mut m = awake(now);
        m.on(Event::SleepStarted, t(now, 1));
        // Late answers and failed connects during the confirmation change nothing.
        assert_eq!(m.on(Event::Answered, t(now, 2)), None);
        assert_eq!(m.on(Event::Unreachable, t(now, 2)), None);
        assert_eq!(m.state(), State::Sleeping);
        assert_eq!(m.on(Event::SleepEnded { silent: true }, t(now, 3)), None);
        assert_eq!(m.state(), State::Asleep);
        assert_eq!(m.sleeps_ignored(), (0, None));
        // The next request wakes it without trying to connect first.
        assert_eq!(
            m.on(Event::WakeNeeded, t(now, 4)),
            Some(Action::StartCycle { cycle: 1 })
        );
    }

    #[test]
    fn a_request_during_the_sleep_wakes_the_machine_once_it_is_silent() {
        let now = Instant::now();
        let mut m = awake(now);
        m.on(Event::SleepStarted, t(now, 1));
        assert_eq!(
            m.on(Event::WakeNeeded, t(now, 1)),
            None,
            "not before it is silent"
        );
        assert_eq!(m.on(Event::WakeNeeded, t(now, 2)), None);
        assert_eq!(m.cycles(), 0);
        assert_eq!(
            m.on(Event::SleepEnded { silent: true }, t(now, 3)),
            Some(Action::StartCycle { cycle: 1 })
        );
        assert_eq!(m.state(), State::Waking);
        assert_eq!(
            m.on(Event::Answered, t(now, 10)),
            Some(Action::Release {
                took: Duration::from_secs(7)
            })
        );
    }

    #[test]
    fn an_ignored_sleep_is_counted_and_a_waiting_request_still_gets_a_cycle() {
        let now = Instant::now();
        let mut m = awake(now);
        m.on(Event::SleepStarted, t(now, 1));
        assert_eq!(m.on(Event::SleepEnded { silent: false }, t(now, 120)), None);
        assert_eq!(m.state(), State::Awake);
        assert_eq!(m.sleeps_ignored(), (1, Some(t(now, 120))));
        assert_eq!(m.awake_since(), Some(now), "it never slept");
        m.on(Event::SleepStarted, t(now, 200));
        m.on(Event::WakeNeeded, t(now, 201));
        assert_eq!(
            m.on(Event::SleepEnded { silent: false }, t(now, 320)),
            Some(Action::StartCycle { cycle: 1 })
        );
        assert_eq!(m.sleeps_ignored(), (2, Some(t(now, 320))));
        // Found asleep later (it slept on its own): the count starts again.
        m.on(Event::CycleTimedOut { cycle: 1 }, t(now, 440));
        m.on(Event::Unreachable, t(now, 441));
        assert_eq!(m.sleeps_ignored(), (0, None));
    }

    #[test]
    fn a_cancelled_sleep_releases_what_was_held_without_a_wake() {
        let now = Instant::now();
        let mut m = awake(now);
        m.on(Event::SleepStarted, t(now, 1));
        assert_eq!(m.on(Event::SleepCancelled, t(now, 1)), None);
        assert_eq!(m.state(), State::Awake);
        m.on(Event::SleepStarted, t(now, 2));
        m.on(Event::WakeNeeded, t(now, 2));
        assert_eq!(
            m.on(Event::SleepCancelled, t(now, 2)),
            Some(Action::ReleaseHeld)
        );
        assert_eq!(m.state(), State::Awake);
        assert_eq!(m.cycles(), 0);
        assert_eq!(m.on(Event::SleepCancelled, t(now, 3)), None);
    }

    #[test]
    fn no_early_wake_while_the_machine_is_put_to_sleep() {
        let now = Instant::now();
        let iv = Duration::from_secs(600);
        let mut m = awake(now);
        m.on(Event::SleepStarted, t(now, 700));
        assert!(!m.early_wake_due(t(now, 700), iv));
    }
}
