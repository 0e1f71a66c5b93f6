//! One clock for all the watches of a connection pool (see "Asleep under a connection" in
//! docs/behaviour.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::step;

/// Steps without a watch after which the ticker stops (it starts again with the next watch).
const LINGER: u32 = 8;

/// One clock for all the watches of a client, each [`step`]: a request answered before the next
/// tick costs no timer of its own (registering one that is due sooner than every other timer wakes
/// the runtime's I/O driver: two system calls per request). It runs while watches wait and for
/// [`LINGER`] steps after the last one.
#[derive(Debug)]
pub(crate) struct Ticker {
    /// Bytes unacknowledged this long mean the host stopped answering (CONNECT_TIMEOUT).
    pub(super) limit: Duration,
    pub(super) tick: Notify,
    /// Watches waiting for a tick.
    waiting: AtomicUsize,
    /// Whether the task that ticks runs.
    running: AtomicBool,
}

impl Ticker {
    pub(crate) fn new(limit: Duration) -> Arc<Ticker> {
        Arc::new(Ticker {
            limit,
            tick: Notify::new(),
            waiting: AtomicUsize::new(0),
            running: AtomicBool::new(false),
        })
    }

    /// Counts a watch in until the guard is dropped; starts the ticking task if it was stopped.
    pub(super) fn enter(self: &Arc<Self>) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        if !self.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).run());
        }
        Waiting(self)
    }

    /// Ticks each step until no watch waited for [`LINGER`] steps.
    async fn run(self: Arc<Self>) {
        let mut every = tokio::time::interval(step(self.limit));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut quiet = 0;
        loop {
            every.tick().await;
            self.tick.notify_waiters();
            quiet = if self.waiting.load(Ordering::SeqCst) > 0 {
                0
            } else {
                quiet + 1
            };
            if quiet < LINGER {
                continue;
            }
            self.running.store(false, Ordering::SeqCst);
            // A watch that came in meanwhile either saw it stopped (and started another) or sees
            // it running again.
            if self.waiting.load(Ordering::SeqCst) == 0 || self.running.swap(true, Ordering::SeqCst)
            {
                return;
            }
            quiet = 0;
        }
    }
}

/// One watch counted in by [`Ticker::enter`].
pub(super) struct Waiting<'a>(&'a Ticker);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn the_ticker_runs_while_watches_wait_then_stops_and_starts_again() {
        let ticker = Ticker::new(LIMIT);
        let within_a_step = step(LIMIT) + Duration::from_millis(1);
        {
            let _waiting = ticker.enter();
            let tick = tokio::time::timeout(within_a_step, ticker.tick.notified()).await;
            assert!(tick.is_ok(), "a waiting watch gets a tick within a step");
        }
        assert!(ticker.running.load(Ordering::SeqCst), "it lingers");
        tokio::time::sleep(step(LIMIT) * (LINGER + 2)).await;
        assert!(
            !ticker.running.load(Ordering::SeqCst),
            "it stops without watches"
        );
        let _waiting = ticker.enter();
        let tick = tokio::time::timeout(within_a_step, ticker.tick.notified()).await;
        assert!(tick.is_ok(), "the next watch starts it again");
    }
}
