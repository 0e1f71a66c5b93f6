//! The idle watch of one machine: a timer that sends nothing until the idle conditions hold, then
//! asks `/api/ps`, sends the sleep methods and confirms the machine went silent (see "Sleep" in
//! docs/behaviour.md). The decisions are [`super::idle::decide`] and the state machine's; this
//! task only performs them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::idle::{self, Ps, Verdict, MAX_IGNORED};
use super::Backend;
use crate::sleep::{Outcome, Sleeper};

/// How often the idle clock is read: an eighth of SLEEP_AFTER, between 100 ms and 5 s.
fn period(after: Duration) -> Duration {
    (after / 8).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Watches `backend` until `shutdown`, putting it to sleep when it is idle. Returns at once for a
/// machine that is not put to sleep on its own.
pub async fn watch(backend: Arc<Backend>, shutdown: CancellationToken) {
    let (Some(sleeper), Some(after)) = (backend.sleeper.clone(), backend.sleep.after) else {
        return;
    };
    let settings = idle::Settings {
        after,
        min_awake: backend.sleep.min_awake,
        ignore_ps: backend.sleep.ignore_ps,
    };
    let mut tick = tokio::time::interval(period(after));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The idle stretch already warned about (its last finish), so a given-up sleep warns once.
    let mut warned: Option<Option<Instant>> = None;
    // After /api/ps said "in use" or did not answer, it is not asked again for SLEEP_AFTER.
    let mut ps_rests_until: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut verdict = idle::decide(
            &backend.idle_inputs(Instant::now()),
            &settings,
            Ps::NotAsked,
        );
        if verdict == Verdict::AskPs {
            if ps_rests_until.is_some_and(|t| Instant::now() < t) {
                continue;
            }
            let Some(body) = backend.driver.ask_ps().await else {
                ps_rests_until = Some(Instant::now() + after);
                continue;
            };
            let ps = idle::read_ps(&body, SystemTime::now());
            verdict = idle::decide(&backend.idle_inputs(Instant::now()), &settings, ps);
            if verdict == Verdict::InUse {
                ps_rests_until = Some(Instant::now() + after);
            }
        }
        match verdict {
            Verdict::Sleep => put_to_sleep(&backend, &sleeper, &shutdown, false).await,
            Verdict::GaveUp => {
                let stretch = backend.last_finished();
                if warned != Some(stretch) {
                    warned = Some(stretch);
                    tracing::warn!(backend = %backend.name, methods = %backend.sleep.methods(), ignored = MAX_IGNORED,
                        "idle, but not put to sleep: it ignored the last sleeps; trying again once it has slept or been woken");
                }
            }
            Verdict::InUse => {
                tracing::debug!(backend = %backend.name, "idle, but /api/ps lists a model that has not expired: not sleeping")
            }
            Verdict::Stay | Verdict::AskPs => {}
        }
    }
}

/// Sends the sleep methods and confirms the machine went silent, unless a request came first;
/// `manual`: asked for with the status page's button (see "Monitoring").
pub(crate) async fn put_to_sleep(
    backend: &Arc<Backend>,
    sleeper: &Sleeper,
    shutdown: &CancellationToken,
    manual: bool,
) {
    let now = Instant::now();
    let inputs = backend.idle_inputs(now);
    let idle_for = inputs
        .last_finished
        .map(|t| now.saturating_duration_since(t))
        .unwrap_or_default();
    let awake_for = inputs
        .awake_since
        .map(|t| now.saturating_duration_since(t))
        .unwrap_or_default();
    if !backend.driver.begin_sleep(|| backend.in_flight()) {
        tracing::debug!(backend = %backend.name, "a request came first: not sleeping");
        return;
    }
    let methods = backend.sleep.methods();
    tracing::info!(backend = %backend.name, idle_s = idle_for.as_secs(), methods = %methods, "putting the machine to sleep");
    backend
        .driver
        .watch
        .sleep_sent(&methods.to_string(), manual);
    let outcomes = sleeper.sleep_all().await;
    for o in &outcomes {
        log_outcome(&backend.name, o);
    }
    let sent = Instant::now();
    let silent = backend.driver.confirm_silence(backend.sleep.confirm).await;
    if shutdown.is_cancelled() {
        // Stopping: held requests already got 503; whether it slept is nobody's concern now.
        return;
    }
    backend.driver.sleep_ended(silent);
    let results: Vec<_> = outcomes.iter().map(|o| (o.method, o.is_ok())).collect();
    backend.driver.watch.sleep_ended(&results, silent);
    if silent {
        tracing::info!(backend = %backend.name, idle_s = idle_for.as_secs(), awake_s = awake_for.as_secs(),
            methods = %methods, silent_after_ms = sent.elapsed().as_millis() as u64, "asleep");
        return;
    }
    let answers: Vec<String> = outcomes.iter().map(ToString::to_string).collect();
    let (ignored, _) = backend.driver.idle_view().ignored_pair();
    let next = if ignored < MAX_IGNORED {
        "trying once more after SLEEP_AFTER"
    } else {
        "not trying again until it has slept or been woken"
    };
    tracing::warn!(backend = %backend.name, methods = %methods, answers = %answers.join("; "),
        sleep_confirm = ?backend.sleep.confirm, "the machine did not go silent after its sleep: {next}");
}

fn log_outcome(backend: &str, outcome: &Outcome) {
    if outcome.is_ok() {
        tracing::info!(backend, "{outcome}");
    } else {
        tracing::warn!(backend, "{outcome}");
    }
}
