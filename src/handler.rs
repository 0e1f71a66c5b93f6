//! The request handler: `/health`, cached metadata (see "Cache" in docs/behaviour.md) and
//! forwarding of everything else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::json;

use crate::body::OnEnd;
use crate::cache::{Cache, Entry, Key};
use crate::config::Config;
use crate::driver::{Cause, Driver};
use crate::error::ProxyError;
use crate::models;
use crate::proxy::{self, Failure, Outgoing, Timeouts};
use crate::request::{Budget, Intake, ReadError, ReqBody};
use crate::routes::{self, Patience, Route};
use crate::upstream::Client;

/// Largest answer kept in the cache.
const CAPTURE_LIMIT: usize = 8 << 20;

/// Everything a request needs.
pub struct App {
    pub cfg: Config,
    pub driver: Arc<Driver>,
    pub client: Arc<Client>,
    pub cache: Arc<Cache>,
    pub timeouts: Timeouts,
    /// Memory for buffered request bodies, shared by all requests.
    pub budget: Budget,
}

type Resp = Response<Body>;

pub async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: Request,
) -> Resp {
    let route = routes::route(req.method(), req.uri().path());
    let openai = routes::is_openai(req.uri().path());
    if let Err(e) = well_formed(&req) {
        return e.into_response_for(openai);
    }
    let result = match route {
        Route::NotAllowed => Err(ProxyError::MethodNotAllowed(req.method().to_string())),
        Route::Health => Ok(health(&app)),
        Route::Root | Route::Ps => Ok(always(&app, req, client, route).await),
        Route::Work => work(&app, req, client).await,
        _ => meta(&app, req, client, route).await,
    };
    result.unwrap_or_else(|e| e.into_response_for(openai))
}

/// HTTP/1.1 requests carry exactly one `Host` (see "HTTP hygiene" in docs/behaviour.md).
fn well_formed(req: &Request) -> Result<(), ProxyError> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if req.version() == axum::http::Version::HTTP_11 && hosts != 1 {
        return Err(ProxyError::BadRequest(format!(
            "an HTTP/1.1 request needs exactly one Host header (got {hosts})"
        )));
    }
    Ok(())
}

fn health(app: &App) -> Resp {
    let d = &app.driver;
    let body = json!({"status": "healthy", "backend": d.state().as_str(), "held": d.held(), "wakes": d.wake_cycles()});
    axum::Json(body).into_response()
}

/// Reads what forwarding needs from the client's request. `may_hold`: the request may be held
/// while Ollama sleeps, so a full queue or a used-up body budget refuses it before its body is read.
async fn prepare(
    app: &App,
    req: Request,
    client: SocketAddr,
    may_hold: bool,
) -> Result<Outgoing, ProxyError> {
    let asleep = may_hold && app.driver.can_wake() && app.driver.state().holds();
    if asleep && app.driver.queue_full() {
        return Err(app.driver.queue_full_error());
    }
    let (parts, body) = req.into_parts();
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let intake = Intake {
        limit: app.cfg.max_held_body,
        budget: &app.budget,
        silence: app.cfg.client_header_timeout,
        must_hold: asleep,
    };
    let (body, permit) = ReqBody::read(body, length, intake)
        .await
        .map_err(|e| match e {
            ReadError::OverBudget => {
                tracing::warn!(budget = app.budget.total(), path = %parts.uri.path(), "body budget used up while Ollama sleeps: refusing a request");
                ProxyError::BodyBudget {
                    budget: app.budget.describe(),
                    retry: app.driver.retry_after(),
                }
            }
            ReadError::Stalled(after) => ProxyError::ClientTimeout(after),
            ReadError::Body(e) => ProxyError::BadRequest(format!("cannot read the request body: {e}")),
        })?;
    let cause = Cause {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        client,
    };
    let patience = routes::patience(parts.uri.path());
    let mut out = Outgoing::new(
        parts,
        body,
        cause,
        &app.client.upstream().authority,
        patience,
    );
    out.budget = permit;
    Ok(out)
}

async fn send(app: &App, out: &mut Outgoing, may_wake: bool) -> Result<proxy::Answer, Failure> {
    proxy::forward(&app.driver, &app.client, app.timeouts, out, may_wake).await
}

fn respond(app: &App, answer: proxy::Answer, capture: usize, on_end: Option<OnEnd>) -> Resp {
    proxy::respond(answer, app.timeouts.model, capture, on_end)
}

/// Any other request: forward, waking Ollama when needed.
async fn work(app: &App, req: Request, client: SocketAddr) -> Result<Resp, ProxyError> {
    let changes = routes::changes_models(req.method(), req.uri().path());
    let mut out = prepare(app, req, client, true).await?;
    let resp = send(app, &mut out, true)
        .await
        .map_err(unreachable_is_502)?;
    let on_end: Option<OnEnd> = (changes && resp.0.status().is_success()).then(|| {
        let cache = Arc::clone(&app.cache);
        Box::new(move |_: Option<Bytes>| cache.invalidate_models()) as OnEnd
    });
    Ok(respond(app, resp, 0, on_end))
}

fn unreachable_is_502(f: Failure) -> ProxyError {
    match f {
        Failure::Unreachable(why) => ProxyError::Unreachable(why),
        Failure::Error(e) => e,
    }
}

/// `/` and `/api/ps`: Ollama's answer when it is awake, a synthesized one otherwise (see "What is
/// cached" in docs/behaviour.md).
async fn always(app: &App, req: Request, client: SocketAddr, route: Route) -> Resp {
    let synthesized = || match route {
        Route::Ps => axum::Json(json!({"models": []})).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Ollama is running",
        )
            .into_response(),
    };
    if app.driver.state().holds() {
        return synthesized();
    }
    let forwarded = async {
        let mut out = prepare(app, req, client, false).await?;
        send(app, &mut out, false).await.map_err(unreachable_is_502)
    };
    match forwarded.await {
        Ok(resp) => respond(app, resp, 0, None),
        Err(e @ ProxyError::OutOfResource(_)) => e.into_response_for(false),
        Err(e) => {
            tracing::debug!(error = %e, "answering for a sleeping Ollama");
            synthesized()
        }
    }
}

/// Cacheable metadata: the cached answer while Ollama sleeps or when it is a fresh model list, else
/// forwarded (the cached answer if Ollama does not answer); wakes only when nothing is cached (see
/// "Freshness" and "Empty cache" in docs/behaviour.md).
async fn meta(
    app: &App,
    req: Request,
    client: SocketAddr,
    route: Route,
) -> Result<Resp, ProxyError> {
    let mut out = prepare(app, req, client, false).await?;
    let key = match &route {
        Route::Version => Key::Version,
        Route::Show => match show_key(&out.body) {
            Some(k) => k,
            None => return forward_and_keep(app, &mut out, None, true).await,
        },
        _ => Key::Tags,
    };
    let derived = matches!(route, Route::V1Models | Route::V1Model(_));
    let Some(entry) = app.cache.get(&key) else {
        // Nothing cached: this may wake Ollama (see "Empty cache").
        if derived {
            let tags = fetch_tags(app, out.cause.clone(), true)
                .await
                .map_err(unreachable_is_502)?;
            return Ok(openai_models(app, &route, &tags));
        }
        return forward_and_keep(app, &mut out, Some(key), true).await;
    };
    let fresh_list = key == Key::Tags && entry.is_fresh(app.cfg.cache_duration);
    if fresh_list || app.driver.state().holds() {
        return Ok(from_cache(app, &route, &entry));
    }
    if derived {
        return match fetch_tags(app, out.cause.clone(), false).await {
            Ok(tags) => Ok(openai_models(app, &route, &tags)),
            // Ollama did answer: the older list is not its answer.
            Err(Failure::Error(e)) if is_tags_not_text(&e) => Err(e),
            Err(_) => Ok(from_cache(app, &route, &entry)),
        };
    }
    match forward_and_keep(app, &mut out, Some(key), false).await {
        Ok(resp) => Ok(resp),
        Err(e) => {
            tracing::debug!(error = %e, "Ollama did not answer; serving the cached copy");
            Ok(from_cache(app, &route, &entry))
        }
    }
}

/// Forwards and keeps a successful answer in the cache under `key`.
async fn forward_and_keep(
    app: &App,
    out: &mut Outgoing,
    key: Option<Key>,
    may_wake: bool,
) -> Result<Resp, ProxyError> {
    let is_head = out.method == Method::HEAD;
    let resp = send(app, out, may_wake).await.map_err(unreachable_is_502)?;
    let keep = key.filter(|_| resp.0.status() == StatusCode::OK && !is_head);
    let Some(key) = keep else {
        return Ok(respond(app, resp, 0, None));
    };
    let content_type = content_type(resp.0.headers());
    let cache = Arc::clone(&app.cache);
    let on_end: OnEnd = Box::new(move |body| {
        if let Some(body) = body {
            // A body that is not text is not kept; `store` says so.
            let _ = cache.store(key, body, &content_type);
        }
    });
    Ok(respond(app, resp, CAPTURE_LIMIT, Some(on_end)))
}

fn content_type(h: &axum::http::HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json; charset=utf-8")
        .to_string()
}

/// `GET /api/tags` on behalf of `/v1/models`: stored, and returned as stored.
async fn fetch_tags(app: &App, cause: Cause, may_wake: bool) -> Result<Entry, Failure> {
    let mut headers = axum::http::HeaderMap::new();
    crate::headers::upstream_request(
        &mut headers,
        cause.client.ip(),
        &app.client.upstream().authority,
    );
    let mut out = Outgoing {
        method: Method::GET,
        path_and_query: "/api/tags".into(),
        headers,
        body: ReqBody::Buffered(Bytes::new()),
        cause,
        patience: Patience::Simple,
        budget: None,
    };
    let (resp, lease) = send(app, &mut out, may_wake).await?;
    let status = resp.status();
    let ct = content_type(resp.headers());
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
    app.cache
        .store(Key::Tags, body, &ct)
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

fn from_cache(app: &App, route: &Route, entry: &Entry) -> Resp {
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
