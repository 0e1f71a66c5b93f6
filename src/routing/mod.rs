//! Which machine serves a request, as pure functions: no I/O, no clocks (see "Routing" in
//! docs/behaviour.md). The `Backend` unit that owns each machine's state feeds them.

pub mod lists;
pub mod model;

pub use model::{canonical, model_keys, requested_model, same_model, shown};

/// What is known of a backend, as far as routing cares. A `Backend` unit maps its own state onto
/// this; an `always_on` machine that has not failed counts as [`Availability::Awake`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// It answered recently.
    Awake,
    /// A connect failed: it sleeps.
    Asleep,
    /// A wake cycle is running.
    Waking,
    /// Nothing heard yet.
    Unknown,
}

/// One backend as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its name (for logs; routing does not read it).
    pub name: &'a str,
    /// Lower is preferred.
    pub priority: i64,
    /// Awake or not.
    pub state: Availability,
    /// Requests it is serving now.
    pub in_flight: usize,
    /// The model names of its (cached) `/api/tags`.
    pub models: &'a [String],
}

impl Candidate<'_> {
    /// True when its model list has `model`, compared as Ollama compares names.
    pub fn has(&self, model: &str) -> bool {
        let wanted = canonical(model);
        self.models.iter().any(|m| canonical(m) == wanted)
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index of the chosen backend in the slice given to [`choose`].
    pub index: usize,
    /// It is not known to be awake: its `Backend` holds the request and wakes it as for a single
    /// machine today ([`Availability::Unknown`]: a connect is tried first; [`Availability::Waking`]:
    /// the request joins the running wake). Only this backend is woken.
    pub wake: bool,
}

/// The backend for a request naming `model` (`None`: a request that names no model).
///
/// - Backends whose model list has `model`: an awake one first (never wake a machine while an
///   awake one has the model), then the lowest `priority`, then the fewest requests in flight,
///   then the first in the slice.
/// - No backend lists `model`, or no model: the preferred backend ([`preferred`]).
///
/// `None` only for an empty slice.
pub fn choose(backends: &[Candidate], model: Option<&str>) -> Option<Choice> {
    let best = model.and_then(|m| {
        backends
            .iter()
            .enumerate()
            .filter(|(_, b)| b.has(m))
            .min_by_key(|(i, b)| (b.state != Availability::Awake, b.priority, b.in_flight, *i))
    });
    let index = match best {
        Some((i, _)) => i,
        None => preferred(backends)?,
    };
    let state = backends.get(index)?.state;
    Some(Choice {
        index,
        wake: state != Availability::Awake,
    })
}

/// The preferred backend: the lowest `priority`, the first in the slice among equals. It serves
/// requests without a model, models no backend lists, and `/api/version`. `None` for an empty
/// slice.
pub fn preferred(backends: &[Candidate]) -> Option<usize> {
    backends
        .iter()
        .enumerate()
        .min_by_key(|(i, b)| (b.priority, *i))
        .map(|(i, _)| i)
}

/// The backends whose `/api/ps` answers make the merged one: the awake ones (a sleeping machine
/// has nothing loaded and is never woken for it).
pub fn awake(backends: &[Candidate]) -> Vec<usize> {
    backends
        .iter()
        .enumerate()
        .filter(|(_, b)| b.state == Availability::Awake)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests;
