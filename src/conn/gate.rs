//! A future polled only after something it waits on woke it. The client connection's watchdog
//! (its timeouts, the connection limit's pressure, shutdown) rides in the connection's own task;
//! through a gate it is not polled again on every read and write of the connection, only when its
//! timer, notification or token fired (see "Client connections" in docs/behaviour.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

#[derive(Default)]
pub(crate) struct Gate {
    /// Woken since the last poll through the gate, or opened for a new future.
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Gate {
    /// The next future passed to [`Gate::poll`] is a new one: its first poll goes through. Called
    /// before the first.
    pub(crate) fn open(&self) {
        self.woken.store(true, Ordering::Release);
    }

    /// Polls `fut` with the gate's waker if it was woken since its last poll; `Pending` otherwise.
    /// The task is registered first, so a wake that comes while this runs is not lost.
    pub(crate) fn poll<F: Future + ?Sized>(
        self: &Arc<Self>,
        cx: &mut Context<'_>,
        fut: Pin<&mut F>,
    ) -> Poll<F::Output> {
        self.task.register(cx.waker());
        if !self.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(Arc::clone(self));
        fut.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_waker::counting;

    /// Counts its polls; keeps the waker of the last one.
    struct Probe {
        polls: usize,
        waker: Option<Waker>,
    }
    impl Future for Probe {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polls_only_after_a_wake_of_its_own_and_passes_the_wake_on() {
        let (task, wakes) = counting();
        let mut cx = Context::from_waker(&task);
        let gate = Arc::new(Gate::default());
        gate.open();
        let mut probe = Probe {
            polls: 0,
            waker: None,
        };
        // The first poll goes through; later ones, with nothing woken, do not.
        for _ in 0..3 {
            assert!(gate.poll(&mut cx, Pin::new(&mut probe)).is_pending());
        }
        assert_eq!(probe.polls, 1);
        // Its own wake reaches the task, and the next poll goes through.
        probe.waker.take().unwrap().wake();
        assert_eq!(wakes.count(), 1);
        assert!(gate.poll(&mut cx, Pin::new(&mut probe)).is_pending());
        assert!(gate.poll(&mut cx, Pin::new(&mut probe)).is_pending());
        assert_eq!(probe.polls, 2);
        // Opened for a new future: its first poll goes through.
        gate.open();
        assert!(gate.poll(&mut cx, Pin::new(&mut probe)).is_pending());
        assert_eq!(probe.polls, 3);
    }
}
