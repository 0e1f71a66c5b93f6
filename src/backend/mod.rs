//! One machine running Ollama: its connection pool, its state and wake driver, its share of the
//! cache and its counters (see "Routing" in docs/behaviour.md).

pub(crate) mod idle;
pub(crate) mod machine;
pub(crate) mod pick;
pub(crate) mod sleep;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::{BackendConfig, SleepConfig};
use crate::driver::{Driver, DriverConfig};
use crate::learn::Learner;
use crate::sleep::Sleeper;
use crate::upstream::Client;
use crate::wake::Waker;

/// Everything the proxy keeps about one machine.
pub struct Backend {
    /// Unique, `[a-z0-9-]+` (`default` without a configuration file).
    pub name: String,
    /// Lower is preferred when several machines can serve a request.
    pub priority: i64,
    /// Never woken: a machine that does not sleep.
    pub always_on: bool,
    pub client: Arc<Client>,
    pub driver: Arc<Driver>,
    pub cache: Arc<Cache>,
    /// Ollama's `Host` value, made once ([`crate::headers::host_value`]).
    host: Option<axum::http::HeaderValue>,
    /// Requests sent to this machine and not yet answered to the end.
    in_flight: AtomicUsize,
    /// When the last of them finished: µs since `epoch`, rounded up (0: none yet), so that it
    /// is never before an answer seen in the same microsecond.
    last_finished: AtomicU64,
    epoch: Instant,
    /// How and when to put it to sleep.
    pub sleep: SleepConfig,
    /// Its sleep methods, when it is put to sleep on its own (SLEEP_AFTER set).
    pub sleeper: Option<Arc<Sleeper>>,
    /// Learns its MAC in the background (none for an always-on machine, never woken).
    pub learner: Option<Arc<Learner>>,
}

impl Backend {
    /// Builds the machine's pool, driver and cache from its configuration.
    pub fn build(
        cfg: &BackendConfig,
        shared: &DriverShared,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Backend> {
        let ollama = &cfg.ollama;
        let client = Arc::new(Client::new(ollama.upstream.clone(), ollama.connect_timeout));
        // Built without a method too: a learned MAC may give it one (see "Learning the MAC").
        let waker = if !cfg.always_on {
            let waker = Waker::new(&cfg.wake)
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
            max_wakes_per_hour: shared.max_wakes_per_hour,
        };
        let cache_file = shared.cache_file(&cfg.name);
        let events = cache_file.as_deref().map(crate::monitor::events::file_for);
        let watch = crate::monitor::Watch::new(&cfg.name, shared.families.clone(), events);
        let driver = Driver::new(
            waker.clone(),
            Arc::clone(&client),
            settings,
            shutdown.clone(),
        )
        .watched(Arc::new(watch));
        let driver = Arc::new(driver);
        let sleeper = match cfg.sleep.after {
            Some(_) if cfg.sleep.has_method() => {
                Some(Arc::new(Sleeper::new(&cfg.sleep).with_context(|| {
                    format!("cannot prepare the sleep of {}", cfg.name)
                })?))
            }
            _ => None,
        };
        let cache = Cache::load(cache_file)
            .with_context(|| format!("cannot use the cache file of {}", cfg.name))?;
        let cache = Arc::new(cache);
        let learner = waker.map(|waker| {
            let host = &ollama.upstream.host;
            let setup = crate::learn::Setup {
                mac: cfg.wake.magic.as_ref().map(|m| m.mac),
                wakes: cfg.wake.is_enabled(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .ok(),
            };
            let parts = (
                waker,
                Arc::clone(&cache),
                Arc::clone(&client),
                Arc::clone(&driver),
            );
            Arc::new(Learner::new(
                &cfg.name,
                setup,
                cfg.wake.for_learned.clone(),
                parts,
            ))
        });
        Ok(Backend {
            name: cfg.name.clone(),
            priority: cfg.priority,
            always_on: cfg.always_on,
            client,
            driver,
            cache,
            learner,
            host: crate::headers::host_value(&ollama.upstream.authority),
            in_flight: AtomicUsize::new(0),
            last_finished: AtomicU64::new(0),
            epoch: Instant::now(),
            sleep: cfg.sleep.clone(),
            sleeper,
        })
    }

    /// Where requests to this machine go.
    pub fn target(&self) -> crate::proxy::Target<'_> {
        crate::proxy::Target {
            prefix: &self.client.upstream().prefix,
            host: self.host.as_ref(),
        }
    }

    /// Counts a request until the returned guard is dropped; its end is when the machine's idle
    /// time starts (see "Sleep" in docs/behaviour.md).
    pub fn begin(self: &Arc<Self>) -> InFlight {
        // SeqCst, like the driver's state: see `Driver::begin_sleep`.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Requests sent to this machine and not finished.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// When the last request sent to this machine finished, if one did.
    pub fn last_finished(&self) -> Option<Instant> {
        match self.last_finished.load(Ordering::Acquire) {
            0 => None,
            us => Some(self.epoch + std::time::Duration::from_micros(us)),
        }
    }

    /// The inputs of the idle decision at `now`.
    pub fn idle_inputs(&self, now: Instant) -> idle::Inputs {
        let view = self.driver.idle_view();
        idle::Inputs {
            awake: view.awake,
            in_flight: self.in_flight(),
            held: view.held,
            last_finished: self.last_finished(),
            awake_since: view.awake_since,
            ignored: view.ignored,
            ignored_at: view.ignored_at,
            now,
        }
    }

    /// What `/health` says of this machine.
    pub fn health(&self) -> serde_json::Value {
        let d = &self.driver;
        serde_json::json!({"name": self.name, "state": d.state().as_str(), "held": d.held(), "wakes": d.wake_cycles()})
    }
}

/// Settings every machine shares.
pub struct DriverShared {
    pub timeout: std::time::Duration,
    pub wake_interval: std::time::Duration,
    pub max_queue: usize,
    /// MAX_WAKES_PER_HOUR, for each machine.
    pub max_wakes_per_hour: Option<usize>,
    /// CACHE_FILE, if set.
    pub cache_file: Option<std::path::PathBuf>,
    /// More than one machine: each keeps its cache in a file of its own.
    pub several: bool,
    /// The metric families each machine adds its handles to (see "Monitoring").
    pub families: Option<Arc<crate::monitor::metrics::Families>>,
}

impl DriverShared {
    /// The cache file of machine `name`: CACHE_FILE itself for a single machine, else CACHE_FILE
    /// with the name before its extension (`cache.json` → `cache.desktop.json`; see "Cache file"
    /// in docs/behaviour.md).
    fn cache_file(&self, name: &str) -> Option<std::path::PathBuf> {
        let base = self.cache_file.as_ref()?;
        Some(cache_file_of(base, self.several, name))
    }
}

/// The cache file of machine `name` given CACHE_FILE (`base`): `base` itself for a single machine,
/// else `base` with the name before its extension.
pub fn cache_file_of(base: &std::path::Path, several: bool, name: &str) -> std::path::PathBuf {
    if !several {
        return base.to_path_buf();
    }
    let stem = base.file_stem().unwrap_or_default().to_string_lossy();
    let file = match base.extension() {
        Some(ext) => format!("{stem}.{name}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{name}"),
    };
    base.with_file_name(file)
}

/// One request in flight on a [`Backend`]; dropped when it ends.
pub struct InFlight(Arc<Backend>);

impl InFlight {
    /// Keeps counting until the response body ends (or the client goes away).
    pub fn until_end_of(
        self,
        resp: axum::http::Response<axum::body::Body>,
    ) -> axum::http::Response<axum::body::Body> {
        resp.map(|inner| {
            axum::body::Body::new(Counted {
                inner,
                _guard: self,
            })
        })
    }
}

/// A response body that holds an [`InFlight`] while it lives.
struct Counted {
    inner: axum::body::Body,
    _guard: InFlight,
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let b = &self.0;
        let us = b.epoch.elapsed().as_micros() as u64 + 1;
        b.last_finished.fetch_max(us, Ordering::AcqRel);
        b.in_flight.fetch_sub(1, Ordering::SeqCst);
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
    pub fn single(&self) -> bool {
        self.all.len() == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(file: Option<&str>, several: bool) -> DriverShared {
        DriverShared {
            timeout: std::time::Duration::from_secs(1),
            wake_interval: std::time::Duration::from_secs(1),
            max_queue: 1,
            max_wakes_per_hour: None,
            cache_file: file.map(Into::into),
            several,
            families: None,
        }
    }

    #[test]
    fn each_machine_of_several_has_its_own_cache_file() {
        let one = shared(Some("/var/cache/ollama-proxy/cache.json"), false);
        assert_eq!(
            one.cache_file("default"),
            Some("/var/cache/ollama-proxy/cache.json".into())
        );
        let two = shared(Some("/var/cache/ollama-proxy/cache.json"), true);
        assert_eq!(
            two.cache_file("desktop"),
            Some("/var/cache/ollama-proxy/cache.desktop.json".into())
        );
        assert_eq!(
            shared(Some("/c/state"), true).cache_file("a"),
            Some("/c/state.a".into())
        );
        assert_eq!(shared(None, true).cache_file("a"), None);
    }
}
