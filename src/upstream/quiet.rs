//! A waker for polls in which a task drives both ends of a channel: wakes the task makes for
//! itself while it polls (the connection handing the answer to the body it then reads) are noted
//! and answered by polling again at once, instead of scheduling the task anew (which also woke a
//! second worker thread to steal it, per request). Wakes from outside reach the task as usual.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Not in a poll: a wake goes to the task.
const IDLE: u8 = 0;
/// In a poll: a wake is noted.
const POLLING: u8 = 1;
/// In a poll, and woken during it: the poll goes round again.
const WOKEN: u8 = 2;

/// At most this many rounds per poll; then the task is woken as usual.
const ROUNDS: usize = 4;

#[derive(Default)]
pub struct Quiet {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Quiet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        match self
            .state
            .compare_exchange(POLLING, WOKEN, Ordering::AcqRel, Ordering::Acquire)
        {
            // Noted: the poll in progress goes round again.
            Ok(_) | Err(WOKEN) => {}
            Err(_) => self.task.wake(),
        }
    }
}

impl Quiet {
    pub fn new() -> Arc<Self> {
        Arc::new(Quiet::default())
    }

    /// Polls `f` with this waker: again at once while it was woken during its own poll (at most
    /// [`ROUNDS`] times), so that wakes a poll makes for itself never reschedule the task. A
    /// `Ready` is returned at once: its caller polls again for anything further.
    pub fn poll<T>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        mut f: impl FnMut(&mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        self.task.register(cx.waker());
        let waker = Waker::from(Arc::clone(self));
        let mut quiet = Context::from_waker(&waker);
        for _ in 0..ROUNDS {
            self.state.store(POLLING, Ordering::Release);
            let polled = f(&mut quiet);
            let woken = self.state.swap(IDLE, Ordering::AcqRel) == WOKEN;
            if polled.is_ready() || !woken {
                return polled;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_waker::counting;

    #[test]
    fn a_wake_during_the_poll_polls_again_and_one_after_it_reaches_the_task() {
        let (task, wakes) = counting();
        let mut cx = Context::from_waker(&task);
        let quiet = Quiet::new();
        // Woken during its first round: polled again, and the task is not woken.
        let mut rounds = 0;
        let mut kept = None;
        let polled: Poll<()> = quiet.poll(&mut cx, |qcx| {
            rounds += 1;
            if rounds == 1 {
                qcx.waker().wake_by_ref();
            }
            kept = Some(qcx.waker().clone());
            Poll::Pending
        });
        assert!(polled.is_pending());
        assert_eq!(rounds, 2);
        assert_eq!(wakes.count(), 0);
        // A wake after the poll, through the waker it kept: reaches the task.
        kept.take().unwrap().wake();
        assert_eq!(wakes.count(), 1);
        // Woken in every round: after the last one the task is woken, never lost.
        let polled: Poll<()> = quiet.poll(&mut cx, |qcx| {
            qcx.waker().wake_by_ref();
            Poll::Pending
        });
        assert!(polled.is_pending());
        assert_eq!(wakes.count(), 2);
    }
}
