//! The proxy's own pages: `/metrics`, `/proxy/status` (JSON), `/proxy/` (HTML, in [`page`]) and
//! the "Wake now" / "Sleep now" buttons (in [`admin`]). None of them ever contacts Ollama (see
//! "Monitoring" in docs/behaviour.md).

mod admin;
mod page;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use crate::backend::Backend;
use crate::cache::Key;
use crate::handler::App;
use crate::monitor::{events::unix_now, Snapshot};
use crate::routes::Own;

type Resp = Response<Body>;

/// The answer to one of the proxy's own pages.
pub async fn answer(app: &App, own: Own, req: Request, client: SocketAddr) -> Resp {
    match own {
        Own::Metrics => metrics(app),
        Own::Status => axum::Json(status(app)).into_response(),
        Own::Page => page::render(app, admin::has_cookie(app, req.headers())),
        Own::Wake(name) => admin::act(app, req, client, &name, admin::Action::Wake).await,
        Own::Sleep(name) => admin::act(app, req, client, &name, admin::Action::Sleep).await,
        Own::Unknown => plain(StatusCode::NOT_FOUND, "not found"),
        Own::NotAllowed => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
    }
}

fn metrics(app: &App) -> Resp {
    let mut resp = Response::new(Body::from(app.monitor.scrape(&app.backends)));
    let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    resp
}

pub(crate) fn plain(status: StatusCode, text: &'static str) -> Resp {
    let body = json!({"error": text});
    (status, axum::Json(body)).into_response()
}

/// What a machine's card shows.
pub(crate) struct Card {
    pub name: String,
    pub held: usize,
    /// It has a wake method / a sleep method (else its button is left out).
    pub can_wake: bool,
    pub can_sleep: bool,
    pub models: Vec<String>,
    /// Seconds since the model list was stored, if there is one.
    pub models_age: Option<u64>,
    pub snap: Snapshot,
}

pub(crate) fn card(b: &Backend) -> Card {
    let tags = b.cache.get(&Key::Tags);
    let models = tags
        .as_ref()
        .and_then(|e| serde_json::from_str::<serde_json::Value>(&e.body).ok())
        .and_then(|v| {
            let list = v.get("models")?.as_array()?.iter();
            Some(
                list.filter_map(|m| Some(m.get("name")?.as_str()?.to_string()))
                    .collect(),
            )
        })
        .unwrap_or_default();
    Card {
        name: b.name.clone(),
        held: b.driver.held(),
        can_wake: b.driver.can_wake(),
        can_sleep: b.sleeper.is_some(),
        models,
        models_age: tags.map(|e| unix_now().saturating_sub(e.stored_at)),
        snap: b.driver.watch.snapshot(),
    }
}

/// `/proxy/status`: every machine's state, since when, held requests, cached models, events.
fn status(app: &App) -> serde_json::Value {
    let backends: Vec<_> = app
        .backends
        .all()
        .iter()
        .map(|b| {
            let c = card(b);
            let s = &c.snap;
            json!({
                "name": c.name, "state": s.state.as_str(), "since": s.since,
                "since_rfc3339": page::rfc3339(s.since), "held": c.held,
                "models": c.models, "models_age_s": c.models_age,
                "asleep_today_s": s.asleep_today_s, "asleep_week_s": s.asleep_week_s,
                "wakes_today": s.wakes_today, "events": s.events,
                "learned": b.cache.learned(),
            })
        })
        .collect();
    json!({"backends": backends, "admin": app.cfg.access.admin_token.is_some()})
}
