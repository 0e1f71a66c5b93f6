//! The request handler: `/health`, metadata (in [`crate::meta`]) and forwarding of everything
//! else; the steps every forwarded request shares.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Response};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::json;

use crate::backend::{pick, Backend, Backends};
use crate::body::OnEnd;
use crate::config::Config;
use crate::driver::Cause;
use crate::error::ProxyError;
use crate::meta;
use crate::proxy::{self, Failure, Outgoing, Timeouts};
use crate::request::{Budget, Intake, ReadError, ReqBody};
use crate::routes::{self, Route};
use crate::routing;
use crate::several;

/// Everything a request needs.
pub struct App {
    pub cfg: Config,
    /// The machines running Ollama.
    pub backends: Backends,
    pub timeouts: Timeouts,
    /// Memory for buffered request bodies, shared by all requests.
    pub budget: Budget,
    /// Metadata requests to Ollama running at once (see [`crate::meta`]).
    pub attempts: Arc<tokio::sync::Semaphore>,
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
        Route::Ps if !app.backends.single() => Ok(several::ps(&app, req, client).await),
        Route::Root | Route::Ps => {
            let backend = app.backends.preferred();
            Ok(meta::always(&app, backend, req, client, route).await)
        }
        Route::Tags | Route::V1Models | Route::V1Model(_) if !app.backends.single() => {
            several::tags(&app, req, client, route).await
        }
        Route::Work => match by_model(&app, req, client).await {
            Ok(routed) => work(&app, routed, client).await,
            Err(e) => Err(e),
        },
        Route::Show => match by_model(&app, req, client).await {
            Ok(r) => meta::meta(&app, &r.backend, r.req, client, route).await,
            Err(e) => Err(e),
        },
        _ => meta::meta(&app, app.backends.preferred(), req, client, route).await,
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

/// The preferred machine's fields (as with a single machine), and every machine's.
fn health(app: &App) -> Resp {
    let d = &app.backends.preferred().driver;
    let all: Vec<_> = app.backends.all().iter().map(|b| b.health()).collect();
    let body = json!({"status": "healthy", "backend": d.state().as_str(), "held": d.held(), "wakes": d.wake_cycles(), "backends": all});
    axum::Json(body).into_response()
}

/// Reads what forwarding needs from the client's request. `may_hold`: the request may be held
/// while Ollama sleeps, so a full queue or a used-up body budget refuses it before its body is read.
pub(crate) async fn prepare(
    app: &App,
    backend: &Backend,
    req: Request,
    client: SocketAddr,
    may_hold: bool,
) -> Result<Outgoing, ProxyError> {
    let driver = &backend.driver;
    let asleep = may_hold && driver.can_wake() && driver.state().holds();
    if asleep && driver.queue_full() {
        return Err(driver.queue_full_error());
    }
    let (parts, body) = req.into_parts();
    let length = content_length(&parts.headers);
    let intake = Intake {
        limit: app.cfg.max_held_body,
        budget: &app.budget,
        silence: app.cfg.client_header_timeout,
        must_hold: asleep,
    };
    let (body, permit) = ReqBody::read(body, length, intake)
        .await
        .map_err(|e| read_error(app, backend, parts.uri.path(), e))?;
    let cause = Cause {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        client,
    };
    let patience = routes::patience(parts.uri.path());
    let mut out = Outgoing::new(parts, body, cause, backend.target(), patience)?;
    out.budget = permit;
    Ok(out)
}

fn content_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn read_error(app: &App, backend: &Backend, path: &str, e: ReadError) -> ProxyError {
    match e {
        ReadError::OverBudget => {
            tracing::warn!(
                budget = app.budget.total(),
                path,
                "body budget used up while Ollama sleeps: refusing a request"
            );
            ProxyError::BodyBudget {
                budget: app.budget.describe(),
                retry: backend.driver.retry_after(),
            }
        }
        ReadError::Stalled(after) => ProxyError::ClientTimeout(after),
        ReadError::Body(e) => ProxyError::BadRequest(format!("cannot read the request body: {e}")),
    }
}

/// A request and the machine chosen for it.
struct Routed {
    req: Request,
    backend: Arc<Backend>,
    /// The model its body names, if any.
    model: Option<String>,
}

/// The machine for a request (see "Routing" in docs/behaviour.md): with several machines, a
/// request whose body names a model goes to one that has it. The body is read here to find the
/// model, and handed on as it was read.
async fn by_model(app: &App, req: Request, client: SocketAddr) -> Result<Routed, ProxyError> {
    let preferred = app.backends.preferred();
    let keys = routing::model_keys(req.method().as_str(), req.uri().path());
    if app.backends.single() || keys.is_none() {
        let backend = Arc::clone(preferred);
        return Ok(Routed {
            req,
            backend,
            model: None,
        });
    }
    let (parts, body) = req.into_parts();
    let intake = Intake {
        limit: app.cfg.max_held_body,
        budget: &app.budget,
        silence: app.cfg.client_header_timeout,
        must_hold: false,
    };
    let length = content_length(&parts.headers);
    let (mut body, _permit) = ReqBody::read(body, length, intake)
        .await
        .map_err(|e| read_error(app, preferred, parts.uri.path(), e))?;
    let model = match &body {
        ReqBody::Buffered(bytes) => {
            routing::requested_model(parts.method.as_str(), parts.uri.path(), bytes)
        }
        _ => None,
    };
    let backend = Arc::clone(pick::for_model(&app.backends, model.as_deref()));
    tracing::debug!(model = model.as_deref().unwrap_or(""), backend = %backend.name, client = %client, "routed");
    let req = Request::from_parts(parts, body.take());
    Ok(Routed {
        req,
        backend,
        model,
    })
}

pub(crate) async fn send(
    app: &App,
    backend: &Backend,
    out: &mut Outgoing,
    may_wake: bool,
) -> Result<proxy::Answer, Failure> {
    proxy::forward(
        &backend.driver,
        &backend.client,
        app.timeouts,
        out,
        may_wake,
    )
    .await
}

pub(crate) fn respond(
    app: &App,
    answer: proxy::Answer,
    capture: usize,
    on_end: Option<OnEnd>,
) -> Resp {
    proxy::respond(answer, app.timeouts.model, capture, on_end)
}

/// Any other request: forward, waking Ollama when needed.
async fn work(app: &App, routed: Routed, client: SocketAddr) -> Result<Resp, ProxyError> {
    let Routed {
        req,
        mut backend,
        model,
    } = routed;
    let changes = routes::changes_models(req.method(), req.uri().path());
    // Counted from here to the end of its answer (streams included): work keeps the machine from
    // being put to sleep, and a request counted before a sleep begins cancels it (see "Sleep").
    let mut in_flight = backend.begin();
    let mut out = prepare(app, &backend, req, client, true).await?;
    // A machine believed awake may have gone to sleep: when another awake one has the model, it
    // serves the request instead of waking this one.
    let wake_first = !pick::awake_alternative(&app.backends, &backend, model.as_deref());
    let mut sent = send(app, &backend, &mut out, wake_first).await;
    if let (Err(Failure::Unreachable(why)), false) = (&sent, wake_first) {
        let next = Arc::clone(pick::for_model(&app.backends, model.as_deref()));
        tracing::info!(from = %backend.name, to = %next.name, error = %why, "machine unreachable; another one that has the model serves the request");
        out.retarget(next.target())?;
        backend = next;
        in_flight = backend.begin();
        sent = send(app, &backend, &mut out, true).await;
    }
    let resp = sent.map_err(unreachable_is_502)?;
    let on_end: Option<OnEnd> = (changes && resp.0.status().is_success()).then(|| {
        let cache = Arc::clone(&backend.cache);
        Box::new(move |_: Option<Bytes>| cache.invalidate_models()) as OnEnd
    });
    let resp = respond(app, resp, 0, on_end);
    Ok(in_flight.until_end_of(resp))
}

pub(crate) fn unreachable_is_502(f: Failure) -> ProxyError {
    match f {
        Failure::Unreachable(why) => ProxyError::Unreachable(why),
        Failure::Error(e) => e,
    }
}
