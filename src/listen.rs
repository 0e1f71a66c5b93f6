//! The accept loop: at most `max_connections` clients at once (the rest wait in the listen backlog),
//! accept errors logged and backed off, and the open-file limit behind the default (see "Limits" in
//! docs/behaviour.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conn::{self, ClientTimeouts};
use crate::handler::App;
use crate::throttle::Throttled;
use crate::upstream::local_shortage;

/// File descriptors kept for everything but client connections (listener, cache file, logs, probes).
const RESERVED_FDS: u64 = 64;
/// Fewest client connections a derived default allows.
const MIN_CONNECTIONS: usize = 16;
/// First pause after an accept error that comes from a lack of resources; doubles up to the maximum.
const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// While every connection slot is taken, idle connections are asked to close this often.
const PRESSURE_EVERY: Duration = Duration::from_millis(100);

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub(crate) fn raise_nofile() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .map(|(soft, _)| soft)
                .unwrap_or(1024)
        }
    }
}

/// The default connection cap for an open-file limit: each client may need a connection to Ollama
/// too, and some descriptors are kept for the rest.
pub(crate) fn default_max_connections(nofile: u64) -> usize {
    let derived = nofile.saturating_sub(RESERVED_FDS) / 2;
    usize::try_from(derived)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, Semaphore::MAX_PERMITS)
}

/// Waits for a free connection slot; meanwhile asks idle keep-alive connections to close, every
/// [`PRESSURE_EVERY`], to make room (as nginx reuses idle connections when it runs out). `None`
/// on shutdown.
async fn wait_for_slot(
    slots: &Arc<Semaphore>,
    pressure: &Notify,
    shutdown: &CancellationToken,
) -> Option<OwnedSemaphorePermit> {
    let mut every = tokio::time::interval(PRESSURE_EVERY);
    loop {
        tokio::select! {
            slot = Arc::clone(slots).acquire_owned() => return slot.ok(),
            _ = every.tick() => pressure.notify_waiters(),
            _ = shutdown.cancelled() => return None,
        }
    }
}

/// Accepts clients until `shutdown`; each connection runs in `tracker`.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    max_connections: usize,
    timeouts: ClientTimeouts,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let pressure = Arc::new(Notify::new());
    let (mut full_warn, mut error_warn) = (Throttled::new(), Throttled::new());
    let mut backoff = BACKOFF_START;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if let Some(skipped) = full_warn.due() {
                    tracing::warn!(max_connections, skipped, "connection limit reached; new clients wait in the listen backlog (raise --max-connections / MAX_CONNECTIONS)");
                }
                match wait_for_slot(&slots, &pressure, &shutdown).await {
                    Some(slot) => slot,
                    None => return,
                }
            }
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        match accepted {
            Ok((stream, client)) => {
                backoff = BACKOFF_START;
                let _ = stream.set_nodelay(true);
                let watch = conn::Watch {
                    timeouts,
                    pressure: Arc::clone(&pressure),
                    shutdown: shutdown.clone(),
                };
                let app = Arc::clone(&app);
                tracker.spawn(async move {
                    conn::serve(stream, client, app, watch).await;
                    drop(slot);
                });
            }
            Err(e) => {
                let resources = local_shortage(&e).is_some();
                if let Some(skipped) = error_warn.due() {
                    tracing::warn!(error = %e, skipped, out_of_resources = resources, "cannot accept a client connection");
                }
                let pause = if resources { backoff } else { BACKOFF_START };
                backoff = (backoff * 2).min(BACKOFF_MAX);
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_cap_follows_the_fd_limit() {
        assert_eq!(default_max_connections(1024), 480);
        assert_eq!(default_max_connections(65536), 32736);
        assert_eq!(default_max_connections(10), MIN_CONNECTIONS);
        assert_eq!(default_max_connections(u64::MAX), Semaphore::MAX_PERMITS);
    }
}
