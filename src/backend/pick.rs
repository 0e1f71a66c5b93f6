//! Which machine serves a request: the routing decision of "Routing" in docs/behaviour.md, fed
//! with each machine's state, requests in flight and cached model list.

use std::sync::Arc;
use std::time::Duration;

use super::machine::State;
use super::{Backend, Backends};
use crate::cache::Key;
use crate::routing::{self, Availability, Candidate};

/// How long an always-on machine that failed is left alone before it is tried again.
const ALWAYS_ON_RETRY: Duration = Duration::from_secs(30);

/// How routing sees a machine's state: an always-on machine counts as awake until a connect to
/// it fails, and as not known [`ALWAYS_ON_RETRY`] after that (it is never woken, so only trying
/// tells when it is back).
fn availability(backend: &Backend) -> Availability {
    match backend.driver.state() {
        State::Awake => Availability::Awake,
        State::Unknown if backend.always_on => Availability::Awake,
        State::Unknown => Availability::Unknown,
        State::Asleep if backend.always_on && retry_due(backend) => Availability::Unknown,
        State::Asleep => Availability::Asleep,
        State::Waking => Availability::Waking,
        State::Sleeping => Availability::Asleep,
    }
}

fn retry_due(backend: &Backend) -> bool {
    backend
        .driver
        .since_failure()
        .is_none_or(|d| d >= ALWAYS_ON_RETRY)
}

/// Whether metadata should be asked of this machine rather than taken from the cache: not while it
/// sleeps or wakes (see "Routing" in docs/behaviour.md).
pub fn worth_asking(backend: &Backend) -> bool {
    matches!(
        availability(backend),
        Availability::Awake | Availability::Unknown
    )
}

/// The model names of a machine's cached `/api/tags` (none when nothing is cached).
fn model_names(backend: &Backend) -> Vec<String> {
    let Some(entry) = backend.cache.get(&Key::Tags) else {
        return Vec::new();
    };
    #[derive(serde::Deserialize)]
    struct Tags {
        models: Vec<Named>,
    }
    #[derive(serde::Deserialize)]
    struct Named {
        name: String,
    }
    serde_json::from_str::<Tags>(&entry.body)
        .map(|t| t.models.into_iter().map(|m| m.name).collect())
        .unwrap_or_default()
}

/// The machine for a request naming `model` (`None`: it names none): see "Routing".
pub fn for_model<'a>(backends: &'a Backends, model: Option<&str>) -> &'a Arc<Backend> {
    if backends.single() {
        return backends.preferred();
    }
    let all = backends.all();
    let models: Vec<Vec<String>> = match model {
        Some(_) => all.iter().map(|b| model_names(b)).collect(),
        None => vec![Vec::new(); all.len()],
    };
    let candidates: Vec<Candidate> = all
        .iter()
        .zip(&models)
        .map(|(b, models)| Candidate {
            name: &b.name,
            priority: b.priority,
            state: availability(b),
            in_flight: b.in_flight(),
            models,
        })
        .collect();
    routing::choose(&candidates, model)
        .and_then(|choice| all.get(choice.index))
        .unwrap_or_else(|| backends.preferred())
}

/// The machines that are awake (or always on and not known to be down), whose `/api/ps` make the
/// merged one.
pub fn awake(backends: &Backends) -> Vec<&Arc<Backend>> {
    backends
        .all()
        .iter()
        .filter(|b| match availability(b) {
            Availability::Awake => true,
            Availability::Unknown => b.always_on,
            Availability::Asleep | Availability::Waking => false,
        })
        .collect()
}

/// Whether a machine other than `chosen` is awake and has `model`: then `chosen` is not woken
/// for the request.
pub fn awake_alternative(backends: &Backends, chosen: &Arc<Backend>, model: Option<&str>) -> bool {
    let Some(model) = model else { return false };
    if backends.single() {
        return false;
    }
    let wanted = routing::canonical(model);
    backends.all().iter().any(|b| {
        !Arc::ptr_eq(b, chosen)
            && availability(b) == Availability::Awake
            && model_names(b)
                .iter()
                .any(|m| routing::canonical(m) == wanted)
    })
}
