//! Metadata: answered from the cache or synthesized while Ollama sleeps, forwarded (and kept)
//! while it is awake, with Ollama given a short head start before the cached answer is used (see
//! "Cache" in docs/behaviour.md).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use axum::response::IntoResponse;
use futures_util::future::{Either, FutureExt};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::body::OnEnd;
use crate::cache::{Entry, Key};
use crate::driver::Cause;
use crate::error::ProxyError;
use crate::handler::{prepare, respond, send, unreachable_is_502, App};
use crate::models;
use crate::proxy::{Failure, Outgoing};
use crate::request::ReqBody;
use crate::routes::Route;

/// Largest answer kept in the cache.
const CAPTURE_LIMIT: usize = 8 << 20;

type Resp = Response<Body>;

/// `/` and `/api/ps`: Ollama's answer when it is awake, a synthesized one otherwise (see "What is
/// cached" in docs/behaviour.md); Ollama gets a head start of [`HEAD_START`].
pub(crate) async fn always(
    app: &Arc<App>,
    backend: &Arc<Backend>,
    req: Request,
    client: SocketAddr,
    route: Route,
) -> Resp {
    let synthesized = || match route {
        Route::Ps => axum::Json(json!({"models": []})).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Ollama is running",
        )
            .into_response(),
    };
    crate::monitor::answered_by(backend);
    if backend.driver.state().holds() {
        return synthesized();
    }
    let mut out = match prepare(app, backend, req, client, false).await {
        Ok(out) => out,
        Err(e) => return e.into_response_for(false),
    };
    let ready = |answered: Result<Resp, ProxyError>| match answered {
        Ok(resp) => resp,
        Err(e @ ProxyError::OutOfResource(_)) => e.into_response_for(false),
        Err(e) => {
            tracing::debug!(error = %e, "answering for a sleeping Ollama");
            synthesized()
        }
    };
    if backend.driver.heard_recently() {
        // Ollama answered a moment ago: asked here, with no head start (no task, no timer).
        let answer = send(app, backend, &mut out, false).await;
        return ready(
            answer
                .map(|a| respond(app, a, 0, None))
                .map_err(unreachable_is_502),
        );
    }
    let attempt = {
        let (app, backend) = (Arc::clone(app), Arc::clone(backend));
        async move {
            let answer = send(&app, &backend, &mut out, false)
                .await
                .map_err(unreachable_is_502)?;
            Ok(respond(&app, answer, 0, None))
        }
    };
    match head_start(app, backend, attempt).await {
        Raced::Ready(answered) => ready(answered),
        Raced::Late(task) => {
            finish_in_background(task);
            synthesized()
        }
        Raced::Lost => synthesized(),
    }
}

/// Cacheable metadata: the cached answer while Ollama sleeps or when it is a fresh model list, else
/// forwarded (the cached answer if Ollama does not answer); wakes only when nothing is cached (see
/// "Freshness" and "Empty cache" in docs/behaviour.md).
pub(crate) async fn meta(
    app: &Arc<App>,
    backend: &Arc<Backend>,
    req: Request,
    client: SocketAddr,
    route: Route,
) -> Result<Resp, ProxyError> {
    crate::monitor::answered_by(backend);
    if let Some(resp) = cached_at_once(app, backend, &req, &route) {
        return Ok(resp);
    }
    let mut out = prepare(app, backend, req, client, false).await?;
    let key = match &route {
        Route::Version => Key::Version,
        Route::Show => match show_key(&out.body) {
            Some(k) => k,
            None => return forward_and_keep(app, backend, &mut out, None, true).await,
        },
        _ => Key::Tags,
    };
    let derived = matches!(route, Route::V1Models | Route::V1Model(_));
    let Some(entry) = backend.cache.get(&key) else {
        // Nothing cached: this may wake Ollama (see "Empty cache").
        if derived {
            let tags = fetch_tags(app, backend, out.cause.clone(), true)
                .await
                .map_err(unreachable_is_502)?;
            return Ok(openai_models(app, &route, &tags));
        }
        return forward_and_keep(app, backend, &mut out, Some(key), true).await;
    };
    let fresh_list = key == Key::Tags && entry.is_fresh(app.cfg.cache_duration);
    if fresh_list || backend.driver.state().holds() {
        return Ok(from_cache(app, &route, &entry));
    }
    if derived {
        let attempt = {
            let (app, backend, cause) = (Arc::clone(app), Arc::clone(backend), out.cause.clone());
            async move { fetch_tags(&app, &backend, cause, false).await }
        };
        return match head_start(app, backend, attempt).await {
            Raced::Ready(Ok(tags)) => Ok(openai_models(app, &route, &tags)),
            // Ollama did answer: the older list is not its answer.
            Raced::Ready(Err(Failure::Error(e))) if is_tags_not_text(&e) => Err(e),
            // Still asking: the list it brings is stored when it comes.
            Raced::Ready(Err(_)) | Raced::Late(_) | Raced::Lost => {
                Ok(from_cache(app, &route, &entry))
            }
        };
    }
    if backend.driver.heard_recently() {
        // Ollama answered a moment ago: asked here, with no head start (no task, no timer).
        let answer = forward_and_keep(app, backend, &mut out, Some(key), false).await;
        return Ok(answer.unwrap_or_else(|e| cached_instead(app, &route, &entry, &e)));
    }
    let attempt = {
        let (app, backend) = (Arc::clone(app), Arc::clone(backend));
        async move { forward_and_keep(&app, &backend, &mut out, Some(key), false).await }
    };
    match head_start(app, backend, attempt).await {
        Raced::Ready(Ok(resp)) => Ok(resp),
        Raced::Ready(Err(e)) => Ok(cached_instead(app, &route, &entry, &e)),
        Raced::Late(task) => {
            finish_in_background(task);
            Ok(from_cache(app, &route, &entry))
        }
        Raced::Lost => Ok(from_cache(app, &route, &entry)),
    }
}

/// The cached answer, Ollama having failed to give its own.
fn cached_instead(app: &App, route: &Route, entry: &Entry, e: &ProxyError) -> Resp {
    tracing::debug!(error = %e, "Ollama did not answer; serving the cached copy");
    from_cache(app, route, entry)
}

/// The cached answer when it is given without asking Ollama (a fresh model list, or any entry while
/// Ollama sleeps), looked up before anything is made for forwarding. Only for requests without a
/// body: a body is read first, as for every other request.
fn cached_at_once(app: &App, backend: &Backend, req: &Request, route: &Route) -> Option<Resp> {
    let key = match route {
        Route::Show => return None,
        Route::Version => Key::Version,
        _ => Key::Tags,
    };
    if !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let entry = backend.cache.get(&key)?;
    let fresh_list = key == Key::Tags && entry.is_fresh(app.cfg.cache_duration);
    (fresh_list || backend.driver.state().holds()).then(|| from_cache(app, route, &entry))
}

/// How long Ollama has to answer metadata that has a cached or synthesized answer before that
/// answer is given (see "Freshness" in docs/behaviour.md): a host that fell asleep unnoticed would
/// otherwise cost the client a whole connect timeout.
const HEAD_START: Duration = Duration::from_millis(250);

/// Most metadata attempts running at once (those still waiting for a slow Ollama included).
pub(crate) const MAX_ATTEMPTS: usize = 64;

/// An attempt raced against [`HEAD_START`].
pub(crate) enum Raced<T> {
    /// It finished in time.
    Ready(T),
    /// Still running (it goes on; dropping the handle does not stop it).
    Late(JoinHandle<T>),
    /// Not asked (too many attempts are still running: Ollama is not answering them), or the
    /// attempt panicked: there is no answer, and nothing goes on.
    Lost,
}

/// Runs `attempt` in a task of its own and waits for it at most [`HEAD_START`]. Not an `async fn`:
/// the future it returns holds `attempt` once, in a box, where an `async fn` would hold it twice
/// (as argument and as the future awaited), so the futures of the requests that call it stay
/// small. The hot paths (Ollama answered a moment ago) do not come here.
pub(crate) fn head_start<T: Send + 'static>(
    app: &App,
    backend: &Backend,
    attempt: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = Raced<T>> + Send {
    // Ollama answered a moment ago: no head start needed (and no task hop).
    if backend.driver.heard_recently() {
        return Either::Left(Box::pin(attempt.map(Raced::Ready)));
    }
    // Each attempt that outlives its head start holds a connection to Ollama: while Ollama does
    // not answer them, clients must not pile up more.
    let permit = Arc::clone(&app.attempts).try_acquire_owned();
    Either::Right(Box::pin(async move {
        let Ok(permit) = permit else {
            return Raced::Lost;
        };
        let mut task = tokio::spawn(async move {
            let done = attempt.await;
            drop(permit);
            done
        });
        match tokio::time::timeout(HEAD_START, &mut task).await {
            Ok(Ok(done)) => Raced::Ready(done),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a metadata request to Ollama failed");
                Raced::Lost
            }
            Err(_) => Raced::Late(task),
        }
    }))
}

/// Lets a late answer arrive after all: read to its end, a cacheable one is stored and its
/// connection pooled; the backend state was already updated by the attempt itself.
pub(crate) fn finish_in_background(task: JoinHandle<Result<Resp, ProxyError>>) {
    tokio::spawn(async move {
        if let Ok(Ok(resp)) = task.await {
            let _ = axum::body::to_bytes(resp.into_body(), CAPTURE_LIMIT).await;
        }
    });
}

/// Forwards and keeps a successful answer in the cache under `key`.
async fn forward_and_keep(
    app: &App,
    backend: &Backend,
    out: &mut Outgoing,
    key: Option<Key>,
    may_wake: bool,
) -> Result<Resp, ProxyError> {
    let is_head = out.method == Method::HEAD;
    let resp = send(app, backend, out, may_wake)
        .await
        .map_err(unreachable_is_502)?;
    let keep = key.filter(|_| resp.0.status() == StatusCode::OK && !is_head);
    let Some(key) = keep else {
        return Ok(respond(app, resp, 0, None));
    };
    // The value shares its bytes with the response: read as text only when the answer is kept.
    let content_type = resp.0.headers().get(header::CONTENT_TYPE).cloned();
    let cache = Arc::clone(&backend.cache);
    let on_end: OnEnd = Box::new(move |body| {
        if let Some(body) = body {
            // A body that is not text is not kept; `store` says so.
            let _ = cache.store(key, body, text_type(content_type.as_ref()));
        }
    });
    Ok(respond(app, resp, CAPTURE_LIMIT, Some(on_end)))
}

/// The content type to keep with an answer (JSON when Ollama named none, or none in text).
fn text_type(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok())
        .unwrap_or("application/json; charset=utf-8")
}

/// `GET /api/tags` on behalf of `/v1/models`: stored, and returned as stored.
pub(crate) async fn fetch_tags(
    app: &App,
    backend: &Backend,
    cause: Cause,
    may_wake: bool,
) -> Result<Arc<Entry>, Failure> {
    let mut out = Outgoing::get("/api/tags", cause, backend.target())?;
    let (resp, lease) = send(app, backend, &mut out, may_wake).await?;
    let status = resp.status();
    let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
    let limit = app.timeouts.model;
    let body = tokio::time::timeout(limit, crate::body::read_all(resp, lease, limit))
        .await
        .map_err(|_| ProxyError::Timeout {
            option: "--model-timeout (MODEL_TIMEOUT_SECONDS)",
            after: limit,
        })?
        .map_err(|e| ProxyError::Upstream(e.to_string()))?;
    if status != StatusCode::OK {
        return Err(ProxyError::Upstream(format!("/api/tags answered {status}")).into());
    }
    // This answer, as stored: never an older entry in its place.
    backend
        .cache
        .store(Key::Tags, body, text_type(ct.as_ref()))
        .map_err(|e| Failure::Error(tags_not_text(e)))
}

/// Ollama answered /api/tags, but not with text: an error, never the older list (see `meta`).
fn tags_not_text(e: crate::cache::NotText) -> ProxyError {
    ProxyError::Upstream(e.to_string())
}

fn is_tags_not_text(e: &ProxyError) -> bool {
    *e == tags_not_text(crate::cache::NotText { key: Key::Tags })
}

/// `/api/show` is cached per model and verbosity, for plain requests only (see [`crate::cache::show_key`]).
fn show_key(body: &ReqBody) -> Option<Key> {
    let ReqBody::Buffered(bytes) = body else {
        return None;
    };
    crate::cache::show_key(bytes)
}

fn cache_headers(app: &App, entry: &Entry, resp: &mut Resp) {
    let h = resp.headers_mut();
    h.insert(header::AGE, HeaderValue::from(entry.age().as_secs()));
    let label = if entry.is_fresh(app.cfg.cache_duration) {
        "fresh"
    } else {
        "stale"
    };
    h.insert("x-ollama-proxy-cache", HeaderValue::from_static(label));
}

pub(crate) fn from_cache(app: &App, route: &Route, entry: &Entry) -> Resp {
    if matches!(route, Route::V1Models | Route::V1Model(_)) {
        return openai_models(app, route, entry);
    }
    let mut resp = Response::new(Body::from(entry.body.clone()));
    if let Ok(ct) = HeaderValue::from_str(&entry.content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    cache_headers(app, entry, &mut resp);
    resp
}

fn openai_models(app: &App, route: &Route, tags: &Entry) -> Resp {
    let body = match route {
        Route::V1Model(id) => models::find(&tags.body, id),
        _ => models::list(&tags.body),
    };
    let mut resp = match (body, route) {
        (Some(v), _) => axum::Json(v).into_response(),
        (None, Route::V1Model(id)) => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"message": format!("model '{id}' not found"), "type": "not_found_error", "param": null, "code": null}})),
        )
            .into_response(),
        (None, _) => return ProxyError::Upstream("cached /api/tags is not a model list".into()).into_response_for(true),
    };
    cache_headers(app, tags, &mut resp);
    resp
}
