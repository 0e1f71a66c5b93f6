//! The decision "this host stopped acknowledging", from successive `TCP_INFO` readings, as a pure
//! function (see "Asleep under a connection" in docs/behaviour.md).

use std::time::Duration;

use super::Acks;

/// What the readings so far say: since when data has been waiting without any of it being
/// acknowledged.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Wait {
    /// Since when (time since the watch began) data has been waiting, with no progress since.
    since: Option<Duration>,
    /// Bytes acknowledged at the last reading (before the first: when the request went out).
    acked: u64,
    /// A reading was taken.
    read: bool,
}

impl Wait {
    /// Before the first reading; `acked`: bytes acknowledged once everything sent before the
    /// request is (a first reading below it, with earlier bytes still in flight, counts as
    /// progress: the wait starts from that reading).
    pub(crate) fn new(acked: u64) -> Wait {
        Wait {
            since: None,
            acked,
            read: false,
        }
    }

    /// One reading, taken `at` after the watch began: true when data has been waiting for
    /// `limit` by the readings' own clock, none of it acknowledged meanwhile, and no
    /// acknowledgement of anything came for `limit`. Data the first reading sees waiting, with
    /// nothing acknowledged since the request went out, has waited since then (the request's start
    /// left at once); data sent later, after a pause (the last ACK is old, the new data just left),
    /// waits from the reading that first saw it. Window probes do not count: a receiver that keeps its window shut (a slow Ollama)
    /// may leave them unanswered for seconds (Linux rate-limits those answers), so a window shut
    /// on a host that then sleeps is left to the kernel's TCP_USER_TIMEOUT.
    pub(crate) fn observe(&mut self, acks: Acks, at: Duration, limit: Duration) -> bool {
        let progress = acks.bytes_acked != self.acked;
        let first = !std::mem::replace(&mut self.read, true);
        self.acked = acks.bytes_acked;
        if acks.unacked == 0 || progress {
            self.since = (acks.unacked > 0).then_some(at);
            return false;
        }
        let since = *self
            .since
            .get_or_insert(if first { Duration::ZERO } else { at });
        at.saturating_sub(since) >= limit && acks.since_ack >= limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(1);

    fn acks(unacked: u32, since_ack_ms: u64, bytes_acked: u64) -> Acks {
        Acks {
            unacked,
            probes: 0,
            since_ack: Duration::from_millis(since_ack_ms),
            bytes_acked,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn data_unacknowledged_for_the_limit_is_a_stall() {
        // A pooled connection idle 2.9 s; the request goes out at 0 and the host is asleep.
        let mut w = Wait::new(500);
        assert!(!w.observe(acks(1, 2962, 500), ms(62), LIMIT));
        assert!(!w.observe(acks(1, 3500, 500), ms(600), LIMIT));
        assert!(w.observe(acks(1, 3900, 500), ms(1000), LIMIT));
    }

    #[test]
    fn a_first_reading_after_progress_starts_the_clock_there() {
        // Part of the request was acknowledged before the first reading.
        let mut w = Wait::new(500);
        assert!(!w.observe(acks(1, 2962, 800), ms(62), LIMIT));
        assert!(!w.observe(acks(1, 3900, 800), ms(1000), LIMIT));
        assert!(w.observe(acks(1, 3962, 800), ms(1062), LIMIT));
    }

    #[test]
    fn data_sent_after_a_pause_is_not_a_stall_at_once() {
        // An upload paused 3 s and resumed: the last ACK is 3 s old, the new data just left.
        let mut w = Wait::new(900);
        assert!(!w.observe(acks(0, 2900, 900), ms(2900), LIMIT));
        assert!(!w.observe(acks(1, 3000, 900), ms(3000), LIMIT));
        // Its ACK came: progress.
        assert!(!w.observe(acks(0, 10, 1100), ms(3060), LIMIT));
    }

    #[test]
    fn everything_acknowledged_is_never_a_stall() {
        // Ollama thinking for minutes: nothing of ours waits.
        let mut w = Wait::default();
        for i in 1..100 {
            assert!(!w.observe(acks(0, i * 1000, 700), ms(i * 1000), LIMIT));
        }
    }

    #[test]
    fn acknowledged_progress_restarts_the_clock() {
        // A slow upload: data always waiting, but acknowledged bit by bit.
        let mut w = Wait::default();
        for i in 1..100 {
            assert!(!w.observe(acks(10, 50, i * 1000), ms(i * 500), LIMIT));
        }
    }

    #[test]
    fn a_closed_window_is_not_a_stall() {
        // Seen on loopback with a reader that pauses: nothing in flight, one probe out.
        let mut w = Wait::default();
        let probing = Acks {
            unacked: 0,
            probes: 1,
            since_ack: ms(1044),
            bytes_acked: 5,
        };
        for i in 1..40 {
            assert!(!w.observe(probing, ms(i * 100), LIMIT));
        }
    }
}
