//! The idle connections to one Ollama: one pool per worker, young connections only (see
//! "Backend state" and "Threads" in docs/behaviour.md).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use hyper::client::conn::http1::SendRequest;

use crate::acked::Watch;

/// Pooled connections idle longer than this are not trusted: the host may have gone to sleep.
pub(super) const POOL_IDLE: Duration = Duration::from_secs(3);
/// At most this many idle connections are kept (shared out between the workers' pools).
const POOL_MAX: usize = 1024;

/// An idle connection, the watch on its socket, and when it became idle.
type Idle = (SendRequest<Body>, Watch, Instant);

/// One pool of idle connections per worker (see "Threads" in docs/behaviour.md): a connection is
/// driven by a task on the worker that made it and goes back to that worker's pool, so a request
/// uses a connection of its own thread when there is one.
pub(super) struct Pools(Box<[Mutex<VecDeque<Idle>>]>);

impl Pools {
    pub(super) fn new() -> Self {
        Pools(
            (0..crate::workers::count())
                .map(|_| Mutex::default())
                .collect(),
        )
    }

    pub(super) fn lock(&self, worker: usize) -> Option<MutexGuard<'_, VecDeque<Idle>>> {
        Some(
            self.0
                .get(worker)?
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
    }

    /// The workers' indexes, the calling one first.
    pub(super) fn order(&self) -> impl Iterator<Item = usize> {
        let (own, n) = (crate::workers::current(), self.0.len());
        (0..n).map(move |i| (own + i) % n)
    }
}

/// A connection lent to one response.
pub struct Lease {
    pub(super) sender: SendRequest<Body>,
    pub(super) watch: Watch,
    pub(super) pools: Arc<Pools>,
    pub(super) home: usize,
}

impl Lease {
    /// The response was read to the end: the connection may serve another request.
    pub fn give_back(self) {
        let max = POOL_MAX.div_ceil(self.pools.0.len());
        if let Some(mut idle) = self.pools.lock(self.home) {
            if idle.len() < max {
                idle.push_back((self.sender, self.watch, Instant::now()));
            }
        }
    }
}

/// An idle connection of one pool that is young enough and not closed: the most recent one that is
/// ready now, else the most recent one (which may need a moment to become ready). The common case
/// (the newest is ready) touches only the ends of the pool; closed connections deeper in it are
/// never handed out, and the reaper drops them.
pub(super) fn pop_from(idle: &mut VecDeque<Idle>) -> Option<(SendRequest<Body>, Watch)> {
    // Oldest first: expired connections are at the front.
    let now = Instant::now();
    while idle
        .front()
        .is_some_and(|(_, _, since)| now.saturating_duration_since(*since) >= POOL_IDLE)
    {
        idle.pop_front();
    }
    while idle.back().is_some_and(|(sender, _, _)| sender.is_closed()) {
        idle.pop_back();
    }
    let newest_ready = idle.back().is_some_and(|(sender, _, _)| sender.is_ready());
    let (sender, watch, _) = if newest_ready {
        idle.pop_back()?
    } else {
        // The newest is not ready yet: a ready one further in, else the newest.
        idle.retain(|(sender, _, _)| !sender.is_closed());
        let ready = idle.iter().rposition(|(sender, _, _)| sender.is_ready());
        match ready {
            Some(i) => idle.remove(i)?,
            None => idle.pop_back()?,
        }
    };
    Some((sender, watch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pool_is_tried_once_the_callers_first() {
        let pools = Pools::new();
        let order: Vec<usize> = pools.order().collect();
        assert_eq!(order.first(), Some(&crate::workers::current()));
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..crate::workers::count()).collect::<Vec<_>>());
    }
}
