//! Monitoring: the Prometheus registry of the proxy (no global one), the request counters every
//! request moves, and the scrape (see "Monitoring" in docs/behaviour.md). Each machine's own
//! record is a [`Watch`].

pub mod events;
pub mod metrics;
mod ttfb;
mod watch;

pub use watch::{Snapshot, Watch};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::Backends;
use crate::routes::Route;

/// Route classes, in the order of [`route_index`].
const ROUTES: [&str; 11] = [
    "health",
    "root",
    "ps",
    "tags",
    "version",
    "show",
    "v1_models",
    "v1_model",
    "work",
    "not_allowed",
    "proxy",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a route class in the request counters.
pub fn route_class(route: &Route) -> usize {
    match route {
        Route::Health => 0,
        Route::Root => 1,
        Route::Ps => 2,
        Route::Tags => 3,
        Route::Version => 4,
        Route::Show => 5,
        Route::V1Models => 6,
        Route::V1Model(_) => 7,
        Route::Work => 8,
        Route::NotAllowed => 9,
        Route::Proxy(_) => 10,
    }
}

/// The registry and the counters that are not one machine's.
pub struct Monitor {
    registry: Registry,
    /// `[route class][status class]`.
    requests: [[Counter; 5]; 11],
    /// Metadata answers by [`metrics::CACHE_RESULTS`].
    cache: [Counter; 3],
    rss: Gauge,
    fds: Gauge,
    /// Time to response headers of work requests (lock-free).
    pub ttfb: ttfb::Ttfb,
}

impl Monitor {
    /// A registry with every family registered; machines add their handles with the families.
    pub fn new() -> (Monitor, std::sync::Arc<metrics::Families>) {
        let mut registry = Registry::default();
        let families = std::sync::Arc::new(metrics::Families::register(&mut registry));
        let requests_family = Family::<metrics::Labels, Counter>::default();
        let requests = ROUTES.map(|r| {
            STATUS_CLASSES.map(|s| {
                requests_family
                    .get_or_create_owned(&vec![("route", r.to_string()), ("status", s.to_string())])
            })
        });
        let cache_family = Family::<metrics::Labels, Counter>::default();
        let cache = metrics::CACHE_RESULTS
            .map(|r| cache_family.get_or_create_owned(&vec![("result", r.to_string())]));
        registry.register(
            "ollama_proxy_requests",
            "Requests answered, by route class and status class",
            requests_family,
        );
        registry.register(
            "ollama_proxy_cache_answers",
            "Metadata requests by how the cache served them (fresh, stale, miss)",
            cache_family,
        );
        let ttfb = ttfb::Ttfb::default();
        registry.register_with_unit(
            "ollama_proxy_time_to_first_byte",
            "Time from a work request's arrival to its response headers (held time included)",
            Unit::Seconds,
            ttfb.clone(),
        );
        let (rss, fds) = (Gauge::default(), Gauge::default());
        registry.register_with_unit(
            "ollama_proxy_process_resident_memory",
            "Resident memory of the proxy process",
            Unit::Bytes,
            rss.clone(),
        );
        registry.register(
            "ollama_proxy_process_open_fds",
            "Open file descriptors of the proxy process",
            fds.clone(),
        );
        let monitor = Monitor {
            registry,
            requests,
            cache,
            rss,
            fds,
            ttfb,
        };
        (monitor, families)
    }

    /// Counts an answered request (atomics only).
    pub fn request(&self, route: usize, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.requests.get(route).and_then(|row| row.get(class)) {
            c.inc();
        }
    }

    /// Counts a metadata answer: `cache` is the answer's cache label (`fresh`, `stale`), if any.
    pub fn cache_answer(&self, cache: Option<&[u8]>) {
        let i = match cache {
            Some(b"fresh") => 0,
            Some(_) => 1,
            None => 2,
        };
        self.cache[i].inc();
    }

    /// The text a scrape gets: the gauges read now, then every metric.
    pub fn scrape(&self, backends: &Backends) -> String {
        for b in backends.all() {
            let w = &b.driver.watch;
            w.flush();
            w.m.held.set(b.driver.held() as i64);
            w.m.streams.set(b.in_flight() as i64);
        }
        let (rss, fds) = process();
        self.rss.set(rss);
        self.fds.set(fds);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// Resident memory in bytes and open file descriptors, from /proc (0 where unreadable).
fn process() -> (i64, i64) {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    (pages * page.max(0), fds)
}
