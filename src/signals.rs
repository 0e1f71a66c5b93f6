//! Signals: the first SIGTERM or SIGINT starts the graceful stop, a second one during the grace
//! period ends the process at once; SIGHUP is logged and ignored (it used to kill the proxy). See
//! "Signals and shutdown" in docs/behaviour.md.

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// A signal handler that could not be registered.
#[derive(Debug, thiserror::Error)]
#[error("cannot handle {name}: {source}")]
pub struct SignalError {
    pub name: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// SIGTERM, SIGINT and SIGHUP, registered at start-up so that a failure stops it.
pub struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

fn register(kind: SignalKind, name: &'static str) -> Result<Signal, SignalError> {
    signal(kind).map_err(|source| SignalError { name, source })
}

impl Signals {
    /// Registers the handlers; from here on these signals no longer kill the process. Must run
    /// inside a Tokio runtime.
    pub fn register() -> Result<Self, SignalError> {
        Ok(Signals {
            term: register(SignalKind::terminate(), "SIGTERM")?,
            int: register(SignalKind::interrupt(), "SIGINT")?,
            hup: register(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// Cancels `shutdown` at the first SIGTERM or SIGINT. Returns at the second one, with the exit
    /// code (128 + the signal's number) the process should end with at once.
    pub async fn watch(mut self, shutdown: CancellationToken) -> u8 {
        loop {
            let (name, code) = tokio::select! {
                Some(()) = self.term.recv() => ("SIGTERM", 128 + 15),
                Some(()) = self.int.recv() => ("SIGINT", 128 + 2),
                Some(()) = self.hup.recv() => {
                    tracing::info!(signal = "SIGHUP", "SIGHUP ignored");
                    continue;
                }
                // The runtime is going away: nothing more will arrive.
                else => return std::future::pending().await,
            };
            if shutdown.is_cancelled() {
                tracing::warn!(
                    signal = name,
                    exit_code = code,
                    "second stop signal during the grace period: exiting at once"
                );
                return code;
            }
            tracing::info!(
                signal = name,
                "{name}: stopping (a second SIGTERM or SIGINT stops at once)"
            );
            shutdown.cancel();
        }
    }
}
