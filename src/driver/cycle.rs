//! One wake cycle: wake with every method, re-send magic packets, probe until Ollama answers or
//! WAKE_TIMEOUT passes (see "Wake cycle" and "Magic packets" in docs/behaviour.md); and the
//! in-order release of held requests (see "Holding and replay").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::probe::{Probe, Probes};
use super::{Driver, Held, Release, PROBE_INTERVAL, RESEND_INTERVAL};
use crate::backend::machine::{Event, State};
use crate::upstream::Client;
use crate::upstream::{ConnectError, SendFailure};

impl Driver {
    /// One wake cycle: wake with every method, re-send magic packets, probe until an answer or timeout.
    pub(super) async fn run_cycle(self: Arc<Self>, cycle: u64) {
        let started = Instant::now();
        let Some(waker) = self.waker().cloned() else {
            return;
        };
        let cause = self.lock().cause.take();
        if let Some(c) = &cause {
            tracing::info!(cycle, method = %c.method, path = %c.path(), model = ?c.model.as_deref().unwrap_or("-"),
                client = %c.client, key = %c.key.as_deref().unwrap_or("-"), "waking Ollama");
        }
        self.watch.wake_started(cause.as_ref());
        let (w, watch) = (Arc::clone(&waker), Arc::clone(&self.watch));
        tokio::spawn(async move {
            let outcomes = w.wake_all().await;
            for outcome in &outcomes {
                log_outcome(outcome);
            }
            if !outcomes.iter().any(|o| o.is_ok()) {
                watch.methods_failed();
            }
        });
        let deadline = tokio::time::Instant::from_std(started + self.cfg.wake_timeout);
        let mut resend = tokio::time::interval_at(
            tokio::time::Instant::now() + RESEND_INTERVAL,
            RESEND_INTERVAL,
        );
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Dropped when the cycle ends: probes still in flight are abandoned.
        let mut in_flight = JoinSet::new();
        let mut probes = Probes::default();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {
                    let action = self.apply(&mut self.lock(), Event::CycleTimedOut { cycle });
                    self.perform(action);
                    return;
                }
                _ = self.shutdown.cancelled() => return,
                Some(done) = in_flight.join_next() => {
                    let probe = done.unwrap_or(Probe::Silent);
                    if probe == Probe::Ready {
                        tracing::info!(cycle, took_ms = started.elapsed().as_millis() as u64, "wake cycle done");
                        self.answered();
                        return;
                    }
                    probes.finished(probe == Probe::Answered);
                }
                _ = resend.tick(), if waker.has_magic() => {
                    let w = Arc::clone(&waker);
                    tokio::spawn(async move {
                        if let Some(o) = w.send_magic().await { log_outcome(&o) }
                    });
                }
                _ = probe.tick() => {
                    // Something else heard Ollama (the release already happened), or a newer
                    // cycle runs: this one is over.
                    if self.state() != State::Waking || self.wake_cycles() != cycle {
                        return;
                    }
                    if probes.try_start(Instant::now()) {
                        let client = Arc::clone(&self.client);
                        let limit = self.cfg.probe_timeout;
                        in_flight.spawn(async move {
                            let probe = tokio::time::timeout(limit, probe_once(&client)).await;
                            probe.unwrap_or(Probe::Silent)
                        });
                    }
                }
            }
        }
    }
}

/// Lets held requests go in arrival order, each once the previous one is on its way (its body
/// handed to its connection, or a connection made for a body that cannot be replayed); see
/// "Holding and replay" in docs/behaviour.md.
pub(super) async fn release(queue: VecDeque<Held>, connect_timeout: Duration) {
    for held in queue {
        let (ack_tx, ack_rx) = oneshot::channel();
        if held.tx.send(Release::Go(ack_tx)).is_ok() {
            let _ = tokio::time::timeout(connect_timeout, ack_rx).await;
        }
    }
}

/// Longest silence within a probe's answer (the whole probe is bounded by its caller too).
const PROBE_SILENCE: Duration = Duration::from_secs(5);

/// Why [`get`] has no answer.
pub(super) enum GetError {
    /// The connect failed: the machine is not answering.
    Unreachable,
    /// Anything else (an error status, a broken answer).
    Other,
}

/// `GET path` on a new connection (never pooled first, never waking): the body of a 200 answer.
pub(super) async fn get(client: &Client, path: &str) -> Result<bytes::Bytes, GetError> {
    let conn = match client.connect().await {
        Ok(conn) => conn,
        Err(crate::upstream::ConnectError::Local(_)) => return Err(GetError::Other),
        Err(_) => return Err(GetError::Unreachable),
    };
    let req = hyper::Request::get(client.upstream().url_path(path))
        .header(hyper::header::HOST, client.upstream().authority.as_str())
        .body(axum::body::Body::empty())
        .map_err(|_| GetError::Other)?;
    match client.send(conn, req).await {
        Ok((resp, lease)) if resp.status() == hyper::StatusCode::OK => {
            crate::body::read_all(resp, lease, PROBE_SILENCE)
                .await
                .map_err(|_| GetError::Other)
        }
        _ => Err(GetError::Other),
    }
}

/// `GET /api/version` on a new connection.
pub(super) async fn probe_once(client: &Client) -> Probe {
    let conn = match client.connect().await {
        Ok(conn) => conn,
        // Refused: the host is up. The proxy's own shortage says nothing about the host: never
        // "silent" (a sleep is not confirmed by it).
        Err(ConnectError::Refused(_) | ConnectError::Local(_)) => return Probe::Answered,
        Err(_) => return Probe::Silent,
    };
    let req = hyper::Request::get(client.upstream().url_path("/api/version"))
        .header(hyper::header::HOST, client.upstream().authority.as_str())
        .body(axum::body::Body::empty());
    let Ok(req) = req else { return Probe::Silent };
    match client.send(conn, req).await {
        // Read to the end, the connection is pooled: the first released request uses it.
        Ok((resp, lease)) if resp.status().is_success() => {
            match crate::body::read_all(resp, lease, PROBE_SILENCE).await {
                Ok(_) => Probe::Ready,
                Err(_) => Probe::Answered,
            }
        }
        Ok(_) => Probe::Answered,
        // It went silent after accepting the connection; any other failure came from a host that
        // answers.
        Err(SendFailure::Unacked(_) | SendFailure::UnackedAfterPart(_)) => Probe::Silent,
        Err(_) => Probe::Answered,
    }
}

pub(super) fn log_outcome(outcome: &crate::wake::Outcome) {
    if outcome.is_ok() {
        tracing::info!("{outcome}");
    } else {
        tracing::warn!("{outcome}");
    }
}
