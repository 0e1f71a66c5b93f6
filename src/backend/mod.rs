//! One machine running Ollama: its connection pool, its state and wake driver, its share of the
//! cache and its counters (see "Several machines" in docs/behaviour.md).

pub(crate) mod machine;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::{OllamaConfig, WakeConfig};
use crate::driver::{Driver, DriverConfig};
use crate::upstream::Client;
use crate::wake::Waker;

/// Everything the proxy keeps about one machine.
pub struct Backend {
    /// Unique, `[a-z0-9-]+` (`default` without a configuration file).
    pub name: String,
    /// Lower is preferred when several machines can serve a request.
    pub priority: u32,
    /// Never woken: a machine that does not sleep.
    #[allow(dead_code)] // read by routing, which comes with the configuration file
    pub always_on: bool,
    pub client: Arc<Client>,
    pub driver: Arc<Driver>,
    pub cache: Arc<Cache>,
    /// Requests sent to this machine and not yet answered to the end.
    #[allow(dead_code)] // read by routing, which comes with the configuration file
    in_flight: AtomicUsize,
}

/// What one machine is configured with.
pub struct Spec<'a> {
    pub name: &'a str,
    pub priority: u32,
    pub always_on: bool,
    pub ollama: &'a OllamaConfig,
    pub wake: &'a WakeConfig,
    pub cache_file: Option<std::path::PathBuf>,
}

impl Backend {
    /// Builds the machine's pool, driver and cache from its configuration.
    pub fn build(
        cfg: &Spec<'_>,
        shared: &DriverShared,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Backend> {
        let ollama = cfg.ollama;
        let client = Arc::new(Client::new(ollama.upstream.clone(), ollama.connect_timeout));
        let waker = if cfg.wake.is_enabled() && !cfg.always_on {
            let waker = Waker::new(cfg.wake)
                .with_context(|| format!("cannot prepare Wake-on-LAN for {}", cfg.name))?;
            Some(Arc::new(waker))
        } else {
            None
        };
        let settings = DriverConfig {
            wake_timeout: ollama.wake_timeout,
            connect_timeout: ollama.connect_timeout,
            probe_timeout: ollama.connect_timeout + shared.timeout,
            wake_interval: shared.wake_interval,
            max_queue: shared.max_queue,
        };
        let driver = Driver::new(waker, Arc::clone(&client), settings, shutdown.clone());
        let cache = Cache::load(cfg.cache_file.clone())
            .with_context(|| format!("cannot use the cache file of {}", cfg.name))?;
        Ok(Backend {
            name: cfg.name.to_string(),
            priority: cfg.priority,
            always_on: cfg.always_on,
            client,
            driver: Arc::new(driver),
            cache: Arc::new(cache),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Counts a request until the returned guard is dropped.
    #[allow(dead_code)] // used by routing, which comes with the configuration file
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Requests sent to this machine and not finished.
    #[allow(dead_code)] // used by routing, which comes with the configuration file
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What `/health` says of this machine.
    pub fn health(&self) -> serde_json::Value {
        let d = &self.driver;
        serde_json::json!({"name": self.name, "state": d.state().as_str(), "held": d.held(), "wakes": d.wake_cycles()})
    }
}

/// Settings every machine's driver shares.
pub struct DriverShared {
    pub timeout: std::time::Duration,
    pub wake_interval: std::time::Duration,
    pub max_queue: usize,
}

/// One request in flight on a [`Backend`]; dropped when it ends.
#[allow(dead_code)] // used by routing, which comes with the configuration file
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The machines, most preferred first (lowest priority, then order in the file).
pub struct Backends {
    all: Vec<Arc<Backend>>,
    preferred: Arc<Backend>,
}

impl Backends {
    /// Orders `all` by preference; there is at least one.
    pub fn new(mut all: Vec<Arc<Backend>>) -> anyhow::Result<Backends> {
        all.sort_by_key(|b| b.priority);
        let preferred = all.first().cloned().context("no backend configured")?;
        Ok(Backends { all, preferred })
    }

    /// The machine used when nothing else decides: lowest priority number.
    pub fn preferred(&self) -> &Arc<Backend> {
        &self.preferred
    }

    pub fn all(&self) -> &[Arc<Backend>] {
        &self.all
    }

    /// Only one machine: everything behaves as with no configuration file.
    #[allow(dead_code)] // used by routing, which comes with the configuration file
    pub fn single(&self) -> bool {
        self.all.len() == 1
    }
}
