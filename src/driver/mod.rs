//! Performs the backend machine's actions: the queue of held requests and their release (see
//! "Holding and replay" in docs/behaviour.md); the wake cycle itself is in [`cycle`].

mod cycle;
pub(crate) mod limit;
mod probe;

use cycle::{log_outcome, release};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{Method, Uri};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::backend::machine::{Action, Event, Machine, State};
use crate::error::ProxyError;
use crate::upstream::Client;
use crate::wake::Waker;

/// Interval between wake-cycle probes of `GET /api/version`.
const PROBE_INTERVAL: Duration = Duration::from_millis(25);
/// Interval between magic-packet bursts during a wake cycle.
const RESEND_INTERVAL: Duration = Duration::from_secs(3);
/// Pause between the probes that confirm a machine went silent after its sleep.
const SILENCE_PROBE_GAP: Duration = Duration::from_millis(250);
/// Past wake durations kept for `Retry-After`.
const HISTORY: usize = 8;

const STATES: [State; 5] = [
    State::Unknown,
    State::Awake,
    State::Asleep,
    State::Waking,
    State::Sleeping,
];

fn encode(state: State) -> u8 {
    STATES.iter().position(|s| *s == state).unwrap_or(0) as u8
}

fn decode(code: u8) -> State {
    STATES.get(code as usize).copied().unwrap_or(State::Unknown)
}

/// What caused a wake: for the log. Method and URI are the request's own (cloning them shares
/// their bytes), so a cause costs no allocation per request but its model name's.
#[derive(Debug, Clone)]
pub struct Cause {
    pub method: Method,
    pub uri: Uri,
    pub client: SocketAddr,
    /// The name of the API key the request came with (see "Access").
    pub key: Option<Arc<str>>,
    /// The key's rights allow waking a machine.
    pub may_wake: bool,
    /// The model the request names, as logs and events show it (see [`crate::routing::shown`]):
    /// found once, when the request's body was read.
    pub model: Option<Arc<str>>,
}

impl Cause {
    /// The path the client asked for (without the query).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// Asked for with the status page's "Wake now" button (see "Monitoring").
    pub fn is_manual(&self) -> bool {
        self.path().starts_with("/proxy/")
    }
}

/// What a wake asked for by hand did (see "Monitoring" in docs/behaviour.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// A wake cycle started.
    Started,
    /// A cycle starts when the running sleep ends.
    AfterSleep,
    /// A cycle was already running: nothing new started.
    AlreadyWaking,
    /// Ollama is awake: nothing to do.
    AlreadyAwake,
}

/// The answer a held request gets.
#[derive(Debug)]
pub enum Release {
    /// Ollama is up: connect, then send `()` on the channel so the next held request may go.
    Go(oneshot::Sender<()>),
    /// The wake failed or the proxy is stopping.
    Fail(ProxyError),
}

struct Held {
    id: u64,
    tx: oneshot::Sender<Release>,
}

struct Inner {
    machine: Machine,
    queue: VecDeque<Held>,
    next_id: u64,
    history: VecDeque<Duration>,
    stopping: bool,
    cause: Option<Cause>,
    limit: limit::WakeLimit,
}

/// The driver's share of the idle decision's inputs.
#[derive(Debug, Clone, Copy)]
pub struct IdleView {
    pub awake: bool,
    pub held: usize,
    pub awake_since: Option<Instant>,
    pub ignored: u32,
    pub ignored_at: Option<Instant>,
}

impl IdleView {
    /// Sleeps ignored in a row, and when the last one was.
    pub fn ignored_pair(&self) -> (u32, Option<Instant>) {
        (self.ignored, self.ignored_at)
    }
}

/// Settings the driver needs.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub wake_timeout: Duration,
    pub connect_timeout: Duration,
    pub probe_timeout: Duration,
    pub wake_interval: Duration,
    pub max_queue: usize,
    /// MAX_WAKES_PER_HOUR (see "Wake rate limit").
    pub max_wakes_per_hour: Option<usize>,
}

/// The backend's state, its held requests and its wake cycles.
pub struct Driver {
    inner: Mutex<Inner>,
    /// The machine's state, mirrored for lock-free reads on the request path.
    state: AtomicU8,
    /// When Ollama last answered, in ms since `epoch` (lock-free fast path of `answered`).
    heard_ms: AtomicU64,
    /// When a connect to Ollama last failed, in ms since `epoch` (0: never).
    failed_ms: AtomicU64,
    epoch: Instant,
    waker: Option<Arc<Waker>>,
    /// Notified when Ollama answers after it did not (the learning of "Learning the MAC").
    awoke: tokio::sync::Notify,
    client: Arc<Client>,
    cfg: DriverConfig,
    shutdown: CancellationToken,
    /// What is recorded for the status page and the metrics (see "Monitoring").
    pub watch: Arc<crate::monitor::Watch>,
}

/// A place in the queue. Dropping it (the client left) removes the request: it is never forwarded.
pub struct Ticket {
    id: u64,
    rx: Option<oneshot::Receiver<Release>>,
    driver: Arc<Driver>,
}

impl Ticket {
    /// Waits for the release (no timeout here: the wake cycle always ends in release or failure).
    /// Dropping this future (the client left) drops the ticket and so leaves the queue.
    pub async fn wait(mut self) -> Result<oneshot::Sender<()>, ProxyError> {
        let Some(rx) = self.rx.as_mut() else {
            return Err(ProxyError::ShuttingDown);
        };
        let release = rx.await;
        self.rx = None; // released: already out of the queue
        match release {
            Ok(Release::Go(ack)) => Ok(ack),
            Ok(Release::Fail(e)) => Err(e),
            Err(_) => Err(ProxyError::ShuttingDown),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.driver.lock().queue.retain(|h| h.id != self.id);
        }
    }
}

impl Driver {
    pub fn new(
        waker: Option<Arc<Waker>>,
        client: Arc<Client>,
        cfg: DriverConfig,
        shutdown: CancellationToken,
    ) -> Self {
        Driver {
            inner: Mutex::new(Inner {
                machine: Machine::default(),
                queue: VecDeque::new(),
                next_id: 0,
                history: VecDeque::new(),
                stopping: false,
                cause: None,
                limit: limit::WakeLimit::new(cfg.max_wakes_per_hour),
            }),
            state: AtomicU8::new(encode(State::Unknown)),
            heard_ms: AtomicU64::new(0),
            failed_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            waker,
            awoke: tokio::sync::Notify::new(),
            client,
            cfg,
            shutdown,
            watch: Arc::new(crate::monitor::Watch::new("", None, None)),
        }
    }

    /// The driver, recording into `watch`.
    pub fn watched(mut self, watch: Arc<crate::monitor::Watch>) -> Self {
        self.watch = watch;
        self
    }

    /// Applies `event` to the machine under the lock, keeping the lock-free mirror in step.
    fn apply(&self, inner: &mut Inner, event: Event) -> Option<Action> {
        let before = inner.machine.state();
        let action = inner.machine.on(event, Instant::now());
        if inner.machine.state() != before {
            self.watch.state_changed(inner.machine.state());
            if inner.machine.state() == State::Awake {
                self.awoke.notify_one();
            }
        }
        // SeqCst, with the loads in `state` and the in-flight count: a request counted after a
        // sleep began sees `sleeping`, or the sleep sees the request (see `begin_sleep`).
        self.state
            .store(encode(inner.machine.state()), Ordering::SeqCst);
        action
    }

    /// A wake is needed: starts a cycle (remembering its cause for the log) unless one runs.
    fn wake_needed(&self, inner: &mut Inner, cause: &Cause) -> Option<Action> {
        // During a sleep the first request to want a wake is its cause (the cycle starts when the
        // sleep ends); the others join it.
        let first_in_sleep =
            inner.machine.state() == State::Sleeping && !inner.machine.wake_wanted();
        let action = self.apply(inner, Event::WakeNeeded);
        if action.is_some() || first_in_sleep {
            inner.cause = Some(cause.clone());
            inner.limit.record(Instant::now());
        }
        action
    }

    /// `Err` when a new cycle would start and MAX_WAKES_PER_HOUR is used up (the first refusal of
    /// the window is logged).
    fn wake_allowed(&self, inner: &mut Inner, cause: &Cause) -> Result<(), ProxyError> {
        let state = inner.machine.state();
        // Joining a wake already counted is always allowed.
        if state == State::Waking || (state == State::Sleeping && inner.machine.wake_wanted()) {
            return Ok(());
        }
        let now = Instant::now();
        let Err(until) = inner.limit.check(now) else {
            return Ok(());
        };
        let retry = until.saturating_duration_since(now).as_secs().max(1);
        // Logged and recorded once per window for requests, each time for the button (a press
        // does not use up the window's one record of a request).
        if cause.is_manual() || inner.limit.first_refusal(until) {
            tracing::warn!(method = %cause.method, path = %cause.path(), client = %cause.client,
                key = %cause.key.as_deref().unwrap_or("-"), retry_after = retry,
                "MAX_WAKES_PER_HOUR reached: requests that would wake the machine are refused");
            let max = inner.limit.max().unwrap_or_default();
            self.watch.wake_refused(cause, max, retry);
        }
        Err(ProxyError::WakeLimit(retry))
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Ollama answered within the last second or so (lock-free): it is surely still awake.
    pub fn heard_recently(&self) -> bool {
        self.heard_within(Duration::from_secs(1))
    }

    /// Time since Ollama was last found unreachable (`None`: never).
    pub fn since_failure(&self) -> Option<Duration> {
        let at = self.failed_ms.load(Ordering::Acquire);
        (at > 0).then(|| Duration::from_millis(self.now_ms().saturating_sub(at)))
    }

    /// Heard from an awake Ollama within `within` (lock-free).
    fn heard_within(&self, within: Duration) -> bool {
        self.state() == State::Awake
            && self
                .now_ms()
                .saturating_sub(self.heard_ms.load(Ordering::Acquire))
                < within.as_millis() as u64
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn state(&self) -> State {
        decode(self.state.load(Ordering::SeqCst))
    }

    /// Wake cycles started since start-up.
    pub fn wake_cycles(&self) -> u64 {
        self.lock().machine.cycles()
    }

    /// Number of requests held now.
    pub fn held(&self) -> usize {
        self.lock().queue.len()
    }

    /// The waker, when it has a method (configured, or a learned MAC).
    fn waker(&self) -> Option<&Arc<Waker>> {
        self.waker.as_ref().filter(|w| w.is_enabled())
    }

    pub fn can_wake(&self) -> bool {
        self.waker().is_some()
    }

    /// Returns once Ollama answers after it had not (a permit is kept if nobody waits).
    pub async fn awoke(&self) {
        self.awoke.notified().await;
    }

    /// Ollama answered something.
    pub fn answered(self: &Arc<Self>) {
        // Every answer passes here: skip the lock while Ollama is known awake and heard recently.
        if self.heard_within(Duration::from_secs(1)) {
            return;
        }
        let action = self.apply(&mut self.lock(), Event::Answered);
        self.heard_ms.store(self.now_ms(), Ordering::Release);
        self.perform(action);
    }

    /// A connect failed or data went unacknowledged: Ollama is asleep, pooled connections are stale.
    pub fn unreachable(&self) {
        self.failed_ms
            .store(self.now_ms().max(1), Ordering::Release);
        self.apply(&mut self.lock(), Event::Unreachable);
        self.client.clear_pool();
    }

    /// Starts (or joins) a wake cycle without holding a request; a refusal (MAX_WAKES_PER_HOUR)
    /// is logged and recorded by [`Driver::try_wake`].
    pub fn wake(self: &Arc<Self>, cause: &Cause) {
        let _ = self.try_wake(cause);
    }

    /// Starts a wake cycle unless Ollama is awake or one runs already; `Err` when the machine has
    /// no wake method or MAX_WAKES_PER_HOUR is used up.
    pub fn try_wake(self: &Arc<Self>, cause: &Cause) -> Result<Woken, ProxyError> {
        if self.waker().is_none() {
            return Err(ProxyError::Unreachable(
                "the machine has no wake method".into(),
            ));
        }
        let (woken, action) = {
            let mut inner = self.lock();
            match inner.machine.state() {
                State::Awake => return Ok(Woken::AlreadyAwake),
                State::Waking => return Ok(Woken::AlreadyWaking),
                State::Sleeping if inner.machine.wake_wanted() => return Ok(Woken::AfterSleep),
                _ => {}
            }
            self.wake_allowed(&mut inner, cause)?;
            let action = self.wake_needed(&mut inner, cause);
            let woken = if action.is_some() {
                Woken::Started
            } else {
                Woken::AfterSleep
            };
            (woken, action)
        };
        self.perform(action);
        Ok(woken)
    }

    /// Sends a wake now, without waiting, when Ollama has not been heard from for WAKE_INTERVAL
    /// (see "Wake interval" in docs/behaviour.md).
    pub fn early_wake(&self, cause: &Cause) {
        let Some(waker) = self.waker() else { return };
        {
            let mut inner = self.lock();
            let now = Instant::now();
            // Past MAX_WAKES_PER_HOUR no packet goes alongside either.
            if inner.limit.check(now).is_err()
                || !inner.machine.early_wake_due(now, self.cfg.wake_interval)
            {
                return;
            }
        }
        tracing::info!(method = %cause.method, path = %cause.path(), client = %cause.client,
            key = %cause.key.as_deref().unwrap_or("-"),
            "not heard from Ollama for WAKE_INTERVAL: sending a wake alongside the request");
        let waker = Arc::clone(waker);
        let (watch, cause) = (Arc::clone(&self.watch), cause.clone());
        tokio::spawn(async move {
            let outcomes = waker.wake_all().await;
            for outcome in &outcomes {
                log_outcome(outcome);
            }
            watch.wake_interval(&cause, outcomes.iter().any(|o| o.is_ok()));
        });
    }

    /// `Retry-After` seconds: the mean of recent wake durations, or half the wake timeout.
    pub fn retry_after(&self) -> u64 {
        let inner = self.lock();
        let est = if inner.history.is_empty() {
            self.cfg.wake_timeout / 2
        } else {
            inner.history.iter().sum::<Duration>() / inner.history.len() as u32
        };
        est.as_secs_f64().ceil().max(1.0) as u64
    }

    /// No room for one more held request.
    pub fn queue_full(&self) -> bool {
        self.lock().queue.len() >= self.cfg.max_queue
    }

    /// The answer to a request that finds the queue full.
    pub fn queue_full_error(&self) -> ProxyError {
        self.watch.queue_full();
        ProxyError::QueueFull(self.cfg.max_queue, self.retry_after())
    }

    /// Holds a request and starts (or joins) a wake cycle (see "Holding and replay"); `None` when
    /// Ollama is awake by now, so the request goes at once.
    pub fn hold(self: &Arc<Self>, cause: &Cause) -> Result<Option<Ticket>, ProxyError> {
        if self.waker().is_none() {
            return Err(ProxyError::Unreachable("not answering".into()));
        }
        let (tx, rx) = oneshot::channel();
        let (id, action) = {
            let mut inner = self.lock();
            if inner.stopping {
                return Err(ProxyError::ShuttingDown);
            }
            // Checked under the same lock as the release: a request that saw "asleep" a moment
            // ago, before a release finished, goes now instead of starting a second cycle.
            if inner.machine.state() == State::Awake {
                return Ok(None);
            }
            if inner.queue.len() >= self.cfg.max_queue {
                drop(inner);
                return Err(self.queue_full_error());
            }
            self.wake_allowed(&mut inner, cause)?;
            inner.next_id += 1;
            let id = inner.next_id;
            inner.queue.push_back(Held { id, tx });
            (id, self.wake_needed(&mut inner, cause))
        };
        self.perform(action);
        Ok(Some(Ticket {
            id,
            rx: Some(rx),
            driver: Arc::clone(self),
        }))
    }

    /// What the idle decision needs from the driver, read under one lock.
    pub fn idle_view(&self) -> IdleView {
        let inner = self.lock();
        let (ignored, ignored_at) = inner.machine.sleeps_ignored();
        IdleView {
            awake: inner.machine.state() == State::Awake && !inner.stopping,
            held: inner.queue.len(),
            awake_since: inner.machine.awake_since(),
            ignored,
            ignored_at,
        }
    }

    /// Starts putting the machine to sleep (see "Sleep" in docs/behaviour.md): true when it was
    /// awake with nothing held and `in_flight()` is still 0 once the state says `sleeping`. From
    /// then on requests are held. A request counted before that cancels the sleep: it and any
    /// request held meanwhile go on at once.
    pub fn begin_sleep(self: &Arc<Self>, in_flight: impl Fn() -> usize) -> bool {
        let mut inner = self.lock();
        if inner.stopping || !inner.queue.is_empty() {
            return false;
        }
        if self.apply(&mut inner, Event::SleepStarted) != Some(Action::Sleep) {
            return false;
        }
        // Read after `sleeping` was stored (both SeqCst): a request not seen here sees it.
        if in_flight() == 0 {
            return true;
        }
        let action = self.apply(&mut inner, Event::SleepCancelled);
        drop(inner);
        self.perform(action);
        false
    }

    /// The sleep's confirmation ended; `silent`: the machine went silent. A request held
    /// meanwhile starts a wake cycle now.
    pub fn sleep_ended(self: &Arc<Self>, silent: bool) {
        let action = self.apply(&mut self.lock(), Event::SleepEnded { silent });
        if silent {
            self.client.clear_pool();
        }
        self.perform(action);
    }

    /// Probes Ollama (a new connection each time, every quarter second) until the machine is
    /// silent, for at most `limit`; true when it went silent. Ends early at shutdown (false).
    pub async fn confirm_silence(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let probe =
                tokio::time::timeout(self.cfg.probe_timeout, cycle::probe_once(&self.client));
            let silent = tokio::select! {
                p = probe => p.unwrap_or(probe::Probe::Silent) == probe::Probe::Silent,
                _ = self.shutdown.cancelled() => return false,
            };
            if silent {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + SILENCE_PROBE_GAP)) => {}
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }

    /// `GET /api/ps` on a new connection, never waking anything: the body of a 200 answer.
    pub async fn ask_ps(&self) -> Option<bytes::Bytes> {
        let asked =
            tokio::time::timeout(self.cfg.probe_timeout, cycle::get(&self.client, "/api/ps"));
        match asked.await {
            Ok(Ok(body)) => Some(body),
            Ok(Err(cycle::GetError::Unreachable)) => {
                self.unreachable();
                None
            }
            Ok(Err(cycle::GetError::Other)) | Err(_) => None,
        }
    }

    /// Answers every held request with 503 and refuses new ones (see "Signals and shutdown").
    pub fn stop(&self) {
        let queue = {
            let mut inner = self.lock();
            inner.stopping = true;
            std::mem::take(&mut inner.queue)
        };
        for held in queue {
            let _ = held.tx.send(Release::Fail(ProxyError::ShuttingDown));
        }
    }

    fn perform(self: &Arc<Self>, action: Option<Action>) {
        match action {
            None => {}
            Some(Action::StartCycle { cycle }) => {
                tokio::spawn(Arc::clone(self).run_cycle(cycle));
            }
            Some(Action::Release { took }) => {
                let queue = {
                    let mut inner = self.lock();
                    inner.history.push_back(took);
                    if inner.history.len() > HISTORY {
                        inner.history.pop_front();
                    }
                    std::mem::take(&mut inner.queue)
                };
                tracing::info!(
                    took_ms = took.as_millis() as u64,
                    held = queue.len(),
                    "Ollama is awake"
                );
                self.watch.awake(took, queue.len());
                let connect_timeout = self.cfg.connect_timeout;
                tokio::spawn(release(queue, connect_timeout));
            }
            // The caller of `begin_sleep` sends the sleep methods.
            Some(Action::Sleep) => {}
            Some(Action::ReleaseHeld) => {
                let queue = std::mem::take(&mut self.lock().queue);
                tracing::info!(
                    held = queue.len(),
                    "sleep cancelled by a request: Ollama stays awake"
                );
                tokio::spawn(release(queue, self.cfg.connect_timeout));
            }
            Some(Action::FailHeld) => {
                let queue = std::mem::take(&mut self.lock().queue);
                let retry = self.retry_after();
                let reason = format!(
                    "no answer {} after the wake",
                    humantime::format_duration(self.cfg.wake_timeout)
                );
                tracing::warn!(held = queue.len(), wake_timeout = ?self.cfg.wake_timeout, "Ollama did not wake in time");
                self.watch.wake_timed_out(queue.len());
                for held in queue {
                    let _ = held
                        .tx
                        .send(Release::Fail(ProxyError::Asleep(reason.clone(), retry)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
