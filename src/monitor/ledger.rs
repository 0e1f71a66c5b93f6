//! The daily ledger of one machine: per UTC day, the wake cycles started and the seconds it was
//! known asleep, for the last [`DAYS`] days, so that "wakes today" and "hours asleep" do not depend
//! on how many events are kept (see "Monitoring" in docs/behaviour.md). Pure: times are Unix
//! seconds given by the caller. Whatever a file holds, nothing here overflows or loops long: sums
//! saturate, a day holds at most a day asleep, and days after tomorrow are dropped (a wall clock
//! that jumped ahead, or a crafted file).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Days kept (today and the seven before it).
pub const DAYS: u64 = 8;
/// Seconds in a (UTC) day.
pub const DAY: u64 = 86_400;

/// The UTC day of Unix time `at` (days since 1970-01-01).
pub fn day_of(at: u64) -> u64 {
    at / DAY
}

/// One day's figures.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Day {
    /// Days since 1970-01-01 (UTC).
    pub day: u64,
    /// Wake cycles started that day.
    #[serde(default)]
    pub wakes: u32,
    /// Seconds known asleep that day.
    #[serde(default)]
    pub asleep_s: u64,
}

/// The days with something recorded, oldest first, none older than [`DAYS`] before the newest.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Ledger(VecDeque<Day>);

impl Ledger {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds to the figures of `day` (its entry made, in order, when missing).
    fn add(&mut self, day: u64, wakes: u32, asleep_s: u64) {
        match self.0.binary_search_by_key(&day, |d| d.day) {
            Ok(i) => {
                if let Some(d) = self.0.get_mut(i) {
                    d.wakes = d.wakes.saturating_add(wakes);
                    d.asleep_s = d.asleep_s.saturating_add(asleep_s).min(DAY);
                }
            }
            Err(i) => self.0.insert(
                i,
                Day {
                    day,
                    wakes,
                    asleep_s: asleep_s.min(DAY),
                },
            ),
        }
    }

    /// Drops the days more than [`DAYS`] - 1 before the day of `at`.
    fn forget_old(&mut self, at: u64) {
        let oldest = day_of(at).saturating_sub(DAYS - 1);
        while self.0.front().is_some_and(|d| d.day < oldest) {
            self.0.pop_front();
        }
    }

    /// Drops the days more than [`DAYS`] - 1 before the day of `now`, and those after tomorrow.
    pub fn prune(&mut self, now: u64) {
        self.forget_old(now);
        let latest = day_of(now).saturating_add(1);
        while self.0.back().is_some_and(|d| d.day > latest) {
            self.0.pop_back();
        }
    }

    /// The ledger a file held, made plausible at `now`: days in order and each once, at most a day
    /// asleep each, none older than kept or after tomorrow.
    pub fn loaded(self, now: u64) -> Ledger {
        // Only the days kept are inserted: a crafted file of many days costs one pass, not a
        // sorted insert each.
        let today = day_of(now);
        let kept = today.saturating_sub(DAYS - 1)..=today.saturating_add(1);
        let mut l = Ledger::default();
        for d in self.0.into_iter().filter(|d| kept.contains(&d.day)) {
            l.add(d.day, d.wakes, d.asleep_s);
        }
        l
    }

    /// A wake cycle started at `at`.
    pub fn wake(&mut self, at: u64) {
        self.add(day_of(at), 1, 0);
        self.forget_old(at);
    }

    /// The machine was asleep from `from` to `to`: each day gets its share (a sleep over midnight
    /// counts on both days). Days older than the ledger keeps are left out, so this loops at most
    /// [`DAYS`] times whatever `from` and `to` are.
    pub fn asleep(&mut self, from: u64, to: u64) {
        let kept_from = day_of(to).saturating_sub(DAYS - 1).saturating_mul(DAY);
        let mut at = from.max(kept_from);
        while at < to {
            // Saturates only in the last day of u64 time, which `to` then ends.
            let midnight = day_of(at).saturating_add(1).saturating_mul(DAY);
            let end = midnight.min(to);
            self.add(day_of(at), 0, end.saturating_sub(at));
            at = end;
        }
        self.forget_old(to);
    }

    /// Wake cycles and seconds asleep over the `days` days up to and including the day of `now`.
    pub fn over(&self, now: u64, days: u64) -> (u64, u64) {
        let today = day_of(now);
        let first = (today + 1).saturating_sub(days);
        let recent = self.0.iter().filter(|d| d.day >= first && d.day <= today);
        recent.fold((0, 0), |(w, s), d| {
            (
                w.saturating_add(u64::from(d.wakes)),
                s.saturating_add(d.asleep_s),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-10 00:00:00 UTC.
    const MIDNIGHT: u64 = 1_773_100_800;

    #[test]
    fn a_day_rolls_over_at_utc_midnight() {
        let mut l = Ledger::default();
        l.wake(MIDNIGHT - 1);
        l.wake(MIDNIGHT);
        l.wake(MIDNIGHT + 3600);
        assert_eq!(l.over(MIDNIGHT - 1, 1), (1, 0));
        assert_eq!(l.over(MIDNIGHT + 10, 1), (2, 0));
        assert_eq!(l.over(MIDNIGHT + 10, 7), (3, 0));
    }

    #[test]
    fn a_sleep_over_midnight_counts_on_both_days() {
        let mut l = Ledger::default();
        l.asleep(MIDNIGHT - 600, MIDNIGHT + 900);
        assert_eq!(l.over(MIDNIGHT - 1, 1), (0, 600));
        assert_eq!(l.over(MIDNIGHT + 1000, 1), (0, 900));
        assert_eq!(l.over(MIDNIGHT + 1000, 7), (0, 1500));
        // Three days asleep: a full day in between.
        let mut l = Ledger::default();
        l.asleep(MIDNIGHT - 60, MIDNIGHT + 2 * DAY + 60);
        assert_eq!(l.0.len(), 4);
        assert_eq!(l.0[1].asleep_s, DAY);
        assert_eq!(l.over(MIDNIGHT + 2 * DAY + 60, 7), (0, 2 * DAY + 120));
        // Nothing for an empty or backwards stretch.
        l.asleep(MIDNIGHT + 50, MIDNIGHT + 50);
        l.asleep(MIDNIGHT + 50, MIDNIGHT + 40);
        assert_eq!(l.over(MIDNIGHT + 2 * DAY + 60, 7), (0, 2 * DAY + 120));
    }

    #[test]
    fn old_days_are_pruned_and_the_week_is_seven_days() {
        let mut l = Ledger::default();
        for d in 0..10 {
            l.wake(MIDNIGHT + d * DAY);
        }
        assert_eq!(l.0.len() as u64, DAYS);
        assert_eq!(l.0.front().map(|d| d.day), Some(day_of(MIDNIGHT) + 2));
        let now = MIDNIGHT + 9 * DAY + 5;
        assert_eq!(l.over(now, 7).0, 7);
        assert_eq!(l.over(now, 1).0, 1);
        // A month asleep keeps only the days it still shows.
        let mut l = Ledger::default();
        let end = MIDNIGHT + 30 * DAY + 100;
        l.asleep(MIDNIGHT, end);
        assert_eq!(l.0.len() as u64, DAYS);
        assert_eq!(l.over(end, 7).1, 6 * DAY + 100);
    }

    #[test]
    fn an_older_day_goes_in_order_and_files_without_fields_load() {
        let mut l = Ledger::default();
        l.wake(MIDNIGHT + DAY);
        l.asleep(MIDNIGHT + 10, MIDNIGHT + 20);
        assert_eq!(l.0[0].day + 1, l.0[1].day);
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Ledger>(&json).unwrap(), l);
        let old: Ledger = serde_json::from_str(r#"[{"day": 20522}]"#).unwrap();
        assert_eq!(old.over(20522 * DAY, 1), (0, 0));
    }

    #[test]
    fn extreme_times_neither_overflow_nor_loop() {
        let mut l = Ledger::default();
        l.asleep(u64::MAX - 10, u64::MAX);
        l.asleep(0, u64::MAX);
        l.asleep(u64::MAX, 0);
        l.wake(u64::MAX);
        l.wake(u64::MAX);
        assert!(l.0.len() as u64 <= DAYS);
        assert!(l.0.iter().all(|d| d.asleep_s <= DAY));
        assert_eq!(l.over(u64::MAX, 7).0, 2);
        assert_eq!(l.over(u64::MAX, u64::MAX).0, 2);
        // Backwards: nothing.
        let mut l = Ledger::default();
        l.asleep(MIDNIGHT + 10, MIDNIGHT);
        assert!(l.is_empty());
    }

    #[test]
    fn a_crafted_file_loads_plausible() {
        let today = day_of(MIDNIGHT);
        let json = format!(
            r#"[{{"day":{t},"wakes":4294967295,"asleep_s":18446744073709551615}},
                {{"day":{t},"wakes":7,"asleep_s":18446744073709551615}},
                {{"day":{y},"wakes":1,"asleep_s":60}},
                {{"day":{far},"wakes":1,"asleep_s":1}},
                {{"day":18446744073709551615,"wakes":1}},
                {{"day":0,"wakes":1}}]"#,
            t = today,
            y = today - 1,
            far = today + 2
        );
        let l: Ledger = serde_json::from_str(&json).unwrap();
        let l = l.loaded(MIDNIGHT + 5);
        let days: Vec<u64> = l.0.iter().map(|d| d.day).collect();
        assert_eq!(days, [today - 1, today]);
        assert_eq!(l.0[1].wakes, u32::MAX);
        assert_eq!(l.over(MIDNIGHT + 5, 1), (u64::from(u32::MAX), DAY));
        assert_eq!(l.over(MIDNIGHT + 5, 7), (u64::from(u32::MAX) + 1, DAY + 60));
        // A day after tomorrow (the clock jumped ahead, then back) is not counted, and goes at
        // the next prune.
        let mut l = l;
        l.wake(MIDNIGHT + 3 * DAY);
        l.wake(MIDNIGHT);
        assert_eq!(l.over(MIDNIGHT, 1).0, u64::from(u32::MAX));
        l.prune(MIDNIGHT);
        assert!(l.0.iter().all(|d| d.day <= today + 1));
        assert_eq!(l.0.len(), 2);
    }
}
