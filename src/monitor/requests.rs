//! The request metrics: answered requests by route class and status class, metadata answers by
//! cache result and the time to first byte of work, each per machine (label `backend`, the machine
//! that answered), with `backend="*"` for answers the proxy composes itself (see "Monitoring" in
//! docs/behaviour.md). The handles are made once per machine; a request only adds to atomics.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};

use super::metrics::Labels;
use super::ttfb::Ttfb;
use crate::backend::Backend;
use crate::routes::Route;

/// The `backend` label of answers no single machine gave: model lists merged from several
/// machines, the joined `/api/ps`, the proxy's own pages, and requests refused before a machine
/// was chosen. Machine names are `[a-z0-9-]+`, so it never clashes with one.
pub const PROXY: &str = "*";

/// Route classes, in the order of [`route_class`].
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
/// Cached answers: a fresh list, a stale answer, or none in the cache.
const CACHE_RESULTS: [&str; 3] = ["fresh", "stale", "miss"];

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

/// The three request families, registered once.
pub struct RequestFamilies {
    requests: Family<Labels, Counter>,
    cache: Family<Labels, Counter>,
    ttfb: Family<Labels, Ttfb>,
}

impl RequestFamilies {
    pub fn register(reg: &mut Registry) -> RequestFamilies {
        let f = RequestFamilies {
            requests: Family::default(),
            cache: Family::default(),
            ttfb: Family::default(),
        };
        reg.register(
            "ollama_proxy_requests",
            "Requests answered, by the machine that answered (backend=\"*\": merged lists, \
             the joined /api/ps, the proxy's own pages, refusals before a machine was chosen), \
             route class and status class",
            f.requests.clone(),
        );
        reg.register(
            "ollama_proxy_cache_answers",
            "Metadata requests by machine (backend=\"*\": lists merged from several machines) \
             and how the cache served them (fresh, stale, miss)",
            f.cache.clone(),
        );
        reg.register_with_unit(
            "ollama_proxy_time_to_first_byte",
            "Time from a work request's arrival to its response headers (held time included), \
             by the machine that answered (backend=\"*\": refused before a machine was chosen)",
            Unit::Seconds,
            f.ttfb.clone(),
        );
        f
    }
}

/// One `backend` label's request handles.
#[derive(Default)]
pub struct Requests {
    /// `[route class][status class]`.
    requests: [[Counter; 5]; 11],
    /// By [`CACHE_RESULTS`].
    cache: [Counter; 3],
    ttfb: Ttfb,
}

impl Requests {
    /// The handles of label `backend` (a machine's name, or [`PROXY`]).
    pub fn new(f: &RequestFamilies, backend: &str) -> Requests {
        let labels = |pairs: &[(&'static str, &str)]| -> Labels {
            let mut l = vec![("backend", backend.to_string())];
            l.extend(pairs.iter().map(|(k, v)| (*k, v.to_string())));
            l
        };
        Requests {
            requests: ROUTES.map(|r| {
                STATUS_CLASSES.map(|s| {
                    let l = labels(&[("route", r), ("status", s)]);
                    f.requests.get_or_create_owned(&l)
                })
            }),
            cache: CACHE_RESULTS.map(|r| f.cache.get_or_create_owned(&labels(&[("result", r)]))),
            ttfb: f.ttfb.get_or_create_owned(&labels(&[])),
        }
    }

    /// Counts an answered request of class `route` (atomics only); `work_took`: a work request's
    /// time to its response headers; `cache`: a metadata answer's cache label (`fresh`, `stale`)
    /// or `None` for a miss.
    pub fn count(
        &self,
        route: usize,
        status: u16,
        work_took: Option<Duration>,
        cache: Option<Option<&[u8]>>,
    ) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        if let Some(c) = self.requests.get(route).and_then(|row| row.get(class)) {
            c.inc();
        }
        if let Some(took) = work_took {
            self.ttfb.observe(took);
        }
        if let Some(label) = cache {
            let i = match label {
                Some(b"fresh") => 0,
                Some(_) => 1,
                None => 2,
            };
            self.cache[i].inc();
        }
    }
}

tokio::task_local! {
    /// The machine that answered the request this task serves (see [`answered_by`]): its
    /// address, compared with the machines' own (no reference count touched per request).
    static ANSWERED: Cell<Option<usize>>;
}

/// Runs a request's answer, returning it with the address of the machine that answered (the last
/// one named with [`answered_by`]; see [`answered`]), or `None` when no single machine did. Not an
/// `async fn`: that would keep `answer` twice in its state (as argument and as the future awaited).
pub fn scope<F: Future>(answer: F) -> impl Future<Output = (F::Output, Option<usize>)> {
    use futures_util::FutureExt;
    let labelled = answer.map(|out| (out, ANSWERED.with(Cell::take)));
    ANSWERED.scope(Cell::new(None), labelled)
}

/// The request being answered goes to `backend` (called again after a re-route: the last call
/// wins). Outside [`scope`] (a request the proxy makes itself) it does nothing.
pub fn answered_by(backend: &Arc<Backend>) {
    let _ = ANSWERED.try_with(|c| c.set(Some(Arc::as_ptr(backend) as usize)));
}

/// The machine of `all` whose address [`scope`] returned.
pub fn answered(all: &[Arc<Backend>], by: Option<usize>) -> Option<&Arc<Backend>> {
    let by = by?;
    all.iter().find(|b| Arc::as_ptr(b) as usize == by)
}
