//! Learning a backend's MAC and where its magic packets go, in the background: when the backend
//! answers after it had not, and every few minutes while it stays awake (see "Learning the MAC"
//! in docs/behaviour.md). Nothing here runs on a request's path.

pub(crate) mod decide;
pub(crate) mod observe;
pub mod record;
mod why;

pub use decide::Setup;
pub use record::Learned;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::machine::State;
use crate::cache::Cache;
use crate::config::LearnedSender;
use crate::driver::Driver;
use crate::upstream::Client;
use crate::wake::Waker;
use decide::{Level, Memory, Step};

/// How often the MAC is looked up again while the backend stays awake.
const RELEARN: Duration = Duration::from_secs(300);

/// After a look-up that ruled learning out for a record, the next one comes this much later to
/// confirm it before the record is forgotten (see "Learning the MAC").
const CONFIRM: Duration = Duration::from_secs(20);

/// One backend's learner.
pub(crate) struct Learner {
    /// The backend's name, for the log.
    name: String,
    /// What is configured: the MAC, other wake methods, Ollama's address.
    setup: Setup,
    /// WOL_BROADCAST, WOL_INTERFACE and WOL_PORT as given: how the learned MAC's packets go.
    sender: LearnedSender,
    waker: Arc<Waker>,
    cache: Arc<Cache>,
    client: Arc<Client>,
    driver: Arc<Driver>,
    memory: Mutex<Memory>,
}

impl Learner {
    /// A learner for the backend named `name`.
    pub fn new(
        name: &str,
        setup: Setup,
        sender: LearnedSender,
        parts: (Arc<Waker>, Arc<Cache>, Arc<Client>, Arc<Driver>),
    ) -> Learner {
        let (waker, cache, client, driver) = parts;
        Learner {
            name: name.to_string(),
            setup,
            sender,
            waker,
            cache,
            client,
            driver,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// Uses the record of the cache file (before the proxy takes requests). Must run inside a
    /// Tokio runtime.
    pub fn load(&self) {
        let known = self.cache.learned();
        let steps = decide::loaded(&mut self.memory(), &self.setup, known.as_ref());
        self.perform(steps);
    }

    /// Learns after every wake-up and every [`RELEARN`] while awake, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + RELEARN, RELEARN);
        let mut confirm: Option<tokio::time::Instant> = None;
        loop {
            let at = confirm.unwrap_or_else(|| tokio::time::Instant::now() + RELEARN);
            tokio::select! {
                _ = self.driver.awoke() => {}
                _ = every.tick() => {
                    if self.driver.state() != State::Awake {
                        continue;
                    }
                }
                _ = tokio::time::sleep_until(at), if confirm.is_some() => {}
                _ = stop.cancelled() => return,
            }
            self.learn_once().await;
            let soon = decide::to_confirm(&self.memory());
            confirm = soon.then(|| tokio::time::Instant::now() + CONFIRM);
        }
    }

    /// Wakes with the learned MAC from now on.
    fn use_learned(&self, l: &Learned) {
        let backend = self.name.as_str();
        let sender = self.sender.sender(l.broadcast);
        let to: Vec<String> = sender.destinations.iter().map(|d| d.to_string()).collect();
        let (port, interface) = (sender.port, sender.interface.clone());
        match self.waker.set_magic(l.mac, sender) {
            Err(e) => {
                // Tried again at the next look-up that finds the same card.
                decide::use_failed(&mut self.memory());
                tracing::warn!(backend, error = %e, "cannot wake with the learned MAC")
            }
            Ok(()) => tracing::info!(backend, mac = %l.mac, to = %to.join(","), port,
                interface = interface.as_deref().unwrap_or("any"), "magic packets go to the learned MAC"),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks up the address Ollama was last connected to.
    async fn learn_once(&self) {
        let Some(peer) = self.client.peer() else {
            return;
        };
        let peer = peer.ip();
        let seen = tokio::task::spawn_blocking(move || observe::observe(peer)).await;
        let seen = match seen {
            Ok(seen) => seen,
            Err(e) => Err(decide::Why::Failed(e.to_string())),
        };
        let known = self.cache.learned();
        let now = crate::monitor::events::unix_now();
        let steps = decide::observed(
            &mut self.memory(),
            &self.setup,
            known.as_ref(),
            peer,
            seen,
            now,
        );
        self.perform(steps);
    }

    fn perform(&self, steps: Vec<Step>) {
        let backend = self.name.as_str();
        for step in steps {
            match step {
                Step::Store(l) => {
                    self.cache.set_learned(l);
                }
                Step::Use(l) => self.use_learned(&l),
                Step::Forget => {
                    self.cache.clear_learned();
                }
                Step::StopUsing => self.waker.clear_learned(),
                Step::Log(Level::Debug, m) => tracing::debug!(backend, "{m}"),
                Step::Log(Level::Info, m) => tracing::info!(backend, "{m}"),
                Step::Log(Level::Warn, m) => tracing::warn!(backend, "{m}"),
            }
        }
    }
}
