//! Monitoring: the Prometheus registry of the proxy (no global one), the request counters every
//! request moves, and the scrape (see "Monitoring" in docs/behaviour.md). Each machine's own
//! record is a [`Watch`].

pub mod events;
pub mod ledger;
pub mod metrics;
pub mod requests;
mod ttfb;
mod watch;

pub use requests::{answered_by, route_class};
pub use watch::{Snapshot, Watch};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::backend::Backends;

/// The registry and the metrics that are not one machine's.
pub struct Monitor {
    registry: Registry,
    /// The request metrics labelled `backend="*"` (see [`requests::PROXY`]).
    pub proxy: requests::Requests,
    rss: Gauge,
    fds: Gauge,
}

impl Monitor {
    /// A registry with every family registered; machines add their handles with the families.
    pub fn new() -> (Monitor, std::sync::Arc<metrics::Families>) {
        let mut registry = Registry::default();
        let families = std::sync::Arc::new(metrics::Families::register(&mut registry));
        let proxy = requests::Requests::new(&families.requests, requests::PROXY);
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
            proxy,
            rss,
            fds,
        };
        (monitor, families)
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
