//! The wake rate limit: at most MAX_WAKES_PER_HOUR wake cycles of one machine in any hour, as a
//! pure sliding window (see "Wake rate limit" in docs/behaviour.md).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The window the limit counts in.
pub const WINDOW: Duration = Duration::from_secs(3600);

/// Wake cycles started within the last [`WINDOW`].
#[derive(Debug, Default)]
pub struct WakeLimit {
    max: Option<usize>,
    started: VecDeque<Instant>,
    /// The end of the window whose first refusal was logged.
    logged_until: Option<Instant>,
}

impl WakeLimit {
    pub fn new(max: Option<usize>) -> Self {
        WakeLimit {
            max,
            ..WakeLimit::default()
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while self
            .started
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= WINDOW)
        {
            self.started.pop_front();
        }
    }

    /// `Ok` when one more cycle may start at `now`; else when the window frees a place.
    pub fn check(&mut self, now: Instant) -> Result<(), Instant> {
        let Some(max) = self.max else { return Ok(()) };
        self.forget_old(now);
        if self.started.len() < max {
            return Ok(());
        }
        Err(self.started.front().map_or(now, |t| *t + WINDOW))
    }

    /// MAX_WAKES_PER_HOUR, if set.
    pub fn max(&self) -> Option<usize> {
        self.max
    }

    /// A cycle started at `now`.
    pub fn record(&mut self, now: Instant) {
        if self.max.is_some() {
            self.started.push_back(now);
        }
    }

    /// True for the first refusal of the window that ends at `until` (it is logged; the rest are
    /// not).
    pub fn first_refusal(&mut self, until: Instant) -> bool {
        if self.logged_until.is_some_and(|t| t >= until) {
            return false;
        }
        self.logged_until = Some(until);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_n_plus_first_wake_waits_for_the_window() {
        let t0 = Instant::now();
        let mut l = WakeLimit::new(Some(2));
        for i in 0..2 {
            let at = t0 + Duration::from_secs(i * 60);
            assert_eq!(l.check(at), Ok(()));
            l.record(at);
        }
        let third = t0 + Duration::from_secs(600);
        assert_eq!(l.check(third), Err(t0 + WINDOW));
        assert!(l.first_refusal(t0 + WINDOW));
        assert!(!l.first_refusal(t0 + WINDOW), "logged once per window");
        // An hour after the first, a place is free again.
        assert_eq!(l.check(t0 + WINDOW), Ok(()));
    }

    #[test]
    fn unlimited_by_default() {
        let mut l = WakeLimit::new(None);
        let now = Instant::now();
        for _ in 0..1000 {
            l.record(now);
            assert_eq!(l.check(now), Ok(()));
        }
    }
}
