//! The request handler: `/health`, metadata (in [`crate::meta`]) and forwarding of everything
//! else; the steps every forwarded request shares.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Response};
use axum::response::IntoResponse;
use serde_json::json;

use crate::auth::{Caller, Refusal, Rights};
use crate::backend::{Backend, Backends};
use crate::body::OnEnd;
use crate::config::Config;
use crate::driver::Cause;
use crate::error::ProxyError;
use crate::meta;
use crate::proxy::{self, Failure, Outgoing, Timeouts};
use crate::request::{Budget, BudgetPermit, Intake, ReadError, ReqBody};
use crate::routed;
use crate::routes::{self, Route};
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
    /// Metrics and the status page (see "Monitoring").
    pub monitor: crate::monitor::Monitor,
    /// Cancelled at shutdown (a sleep asked for by hand stops with it).
    pub shutdown: tokio_util::sync::CancellationToken,
}

type Resp = Response<Body>;

pub async fn handle(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: Request,
) -> Resp {
    let route = routes::route(req.method(), req.uri().path());
    let class = crate::monitor::route_class(&route);
    let metadata = matches!(
        route,
        Route::Tags | Route::Version | Route::Show | Route::V1Models | Route::V1Model(_)
    );
    let work = matches!(route, Route::Work).then(std::time::Instant::now);
    let openai = routes::is_openai(req.uri().path());
    // Made here, so that the future awaited below holds the route's box and not the request.
    let made = dispatch(&app, route, req, client);
    let answer = async {
        match made {
            Ok(Answer::Now(resp)) => resp,
            Ok(Answer::Later(future)) => {
                future.await.unwrap_or_else(|e| e.into_response_for(openai))
            }
            Err(e) => e.into_response_for(openai),
        }
    };
    let (resp, by) = crate::monitor::requests::scope(answer).await;
    // Atomics only, on the handles of the machine that answered (see "Monitoring").
    let counters = crate::monitor::requests::answered(app.backends.all(), by)
        .map_or(&app.monitor.proxy, |b| &b.driver.watch.m.requests);
    let cache = metadata.then(|| {
        let label = resp.headers().get("x-ollama-proxy-cache");
        label.map(|v| v.as_bytes())
    });
    let took = work.map(|start| start.elapsed());
    counters.count(class, resp.status().as_u16(), took, cache);
    resp
}

/// A route's answer: at once, or a future in a box of that route's own size. One future holding
/// every route's would be as large as the largest (about 6 KB), and it is moved (and its memory
/// touched) on every request; the one for metadata is about 4 KB.
enum Answer<'a> {
    Now(Resp),
    Later(Pin<Box<dyn Future<Output = Result<Resp, ProxyError>> + Send + 'a>>),
}

/// The answer to a request of class `route`.
fn dispatch(
    app: &Arc<App>,
    route: Route,
    mut req: Request,
    client: SocketAddr,
) -> Result<Answer<'_>, ProxyError> {
    well_formed(&req).and_then(|()| admit(app, &route, &mut req, client))?;
    let later: Pin<Box<dyn Future<Output = Result<Resp, ProxyError>> + Send + '_>> = match route {
        Route::Proxy(own) => {
            Box::pin(async move { Ok(crate::status::answer(app, own, req, client).await) })
        }
        Route::NotAllowed => return Err(ProxyError::MethodNotAllowed(req.method().to_string())),
        Route::Health => return Ok(Answer::Now(health(app))),
        Route::Ps if !app.backends.single() => {
            Box::pin(async move { Ok(several::ps(app, req, client).await) })
        }
        Route::Root | Route::Ps => {
            let backend = app.backends.preferred();
            Box::pin(async move { Ok(meta::always(app, backend, req, client, route).await) })
        }
        Route::Tags | Route::V1Models | Route::V1Model(_) if !app.backends.single() => {
            Box::pin(several::tags(app, req, client, route))
        }
        Route::Work => Box::pin(routed::work(app, req, client)),
        Route::Show => Box::pin(routed::show(app, req, client, route)),
        _ => Box::pin(meta::meta(
            app,
            app.backends.preferred(),
            req,
            client,
            route,
        )),
    };
    Ok(Answer::Later(later))
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

/// Who is asking (see "Access" in docs/behaviour.md): with API keys configured, every request but
/// `/health` needs one, and a `read` key may not run models or wake a machine. The caller goes into
/// the request's extensions; `Authorization` is kept back from Ollama unless FORWARD_AUTHORIZATION.
fn admit(
    app: &App,
    route: &Route,
    req: &mut Request,
    client: SocketAddr,
) -> Result<(), ProxyError> {
    let access = &app.cfg.access;
    // The buttons have their own token, checked by `status` (see "Monitoring").
    let admin = matches!(route, Route::Proxy(own) if own.is_admin());
    if access.keys.is_empty() || matches!(route, Route::Health) || admin {
        return Ok(());
    }
    let auth = req.headers().get(header::AUTHORIZATION);
    let caller = access.keys.check(auth.map(|v| v.as_bytes())).map_err(|refusal| {
        tracing::debug!(path = %req.uri().path(), client = %client, ?refusal, "refused: no valid API key");
        ProxyError::Unauthorized(match refusal {
            Refusal::Missing => "an API key is needed: send it as Authorization: Bearer <key>",
            Refusal::Wrong => "the API key is not valid",
        })
    })?;
    if caller.rights == Rights::Read && matches!(route, Route::Work) {
        let name = caller.key.as_deref().unwrap_or_default();
        return Err(ProxyError::Forbidden(format!(
            "the API key {name} may read model lists, not run models or wake a machine"
        )));
    }
    if !access.forward_authorization {
        req.headers_mut().remove(header::AUTHORIZATION);
    }
    req.extensions_mut().insert(caller);
    Ok(())
}

/// The cause of the requests made for a client (the API key it used, and whether it may wake).
pub(crate) fn cause_of(
    method: &axum::http::Method,
    uri: &axum::http::Uri,
    extensions: &axum::http::Extensions,
    client: SocketAddr,
) -> Cause {
    let caller = extensions.get::<Caller>();
    let rights = caller.is_none_or(|c| c.rights == Rights::Use);
    Cause {
        method: method.clone(),
        uri: uri.clone(),
        client,
        key: caller.and_then(|c| c.key.clone()),
        may_wake: rights && extensions.get::<routed::NoWake>().is_none(),
        model: None,
    }
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
    let asleep = room_to_hold(backend, may_hold)?;
    let (parts, body) = req.into_parts();
    let (body, permit) = read_body(app, backend, &parts, body, asleep).await?;
    // The model is only for the record of a wake or a refusal, which a machine that answered a
    // moment ago does not make: then the body is not scanned (see "Monitoring").
    let model = match &body {
        ReqBody::Buffered(bytes) if !backend.driver.heard_recently() => {
            crate::routing::requested_model(parts.method.as_str(), parts.uri.path(), bytes)
        }
        _ => None,
    };
    finish(backend, parts, body, permit, client, model.as_deref())
}

/// Whether a request that may be held will be (its machine sleeps), after checking that the queue
/// has room for it.
pub(crate) fn room_to_hold(backend: &Backend, may_hold: bool) -> Result<bool, ProxyError> {
    let driver = &backend.driver;
    let asleep = may_hold && driver.can_wake() && driver.state().holds();
    if asleep && driver.queue_full() {
        return Err(driver.queue_full_error());
    }
    Ok(asleep)
}

/// Takes in a request body (see "Request bodies" in docs/behaviour.md); `must_hold`: it will be
/// held, so a body the budget has no room for is refused rather than streamed.
pub(crate) async fn read_body(
    app: &App,
    backend: &Backend,
    parts: &Parts,
    body: Body,
    must_hold: bool,
) -> Result<(ReqBody, Option<BudgetPermit>), ProxyError> {
    let intake = Intake {
        limit: app.cfg.max_held_body,
        budget: &app.budget,
        silence: app.cfg.client_header_timeout,
        must_hold,
    };
    ReqBody::read(body, content_length(&parts.headers), intake)
        .await
        .map_err(|e| read_error(app, backend, parts.uri.path(), e))
}

/// The request for `backend`, its body taken in; `model`: the model its body names (for the
/// events and the log: see "Monitoring").
pub(crate) fn finish(
    backend: &Backend,
    parts: Parts,
    body: ReqBody,
    permit: Option<BudgetPermit>,
    client: SocketAddr,
    model: Option<&str>,
) -> Result<Outgoing, ProxyError> {
    let mut cause = cause_of(&parts.method, &parts.uri, &parts.extensions, client);
    cause.model = model.map(|m| Arc::from(&*crate::routing::shown(m)));
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

pub(crate) async fn send(
    app: &App,
    backend: &Backend,
    out: &mut Outgoing,
    may_wake: bool,
) -> Result<proxy::Answer, Failure> {
    let allowed = out.cause.may_wake;
    let t = app.timeouts;
    match proxy::forward(
        &backend.driver,
        &backend.client,
        t,
        out,
        may_wake && allowed,
    )
    .await
    {
        Err(Failure::Unreachable(_)) if may_wake && !allowed && out.cause.key.is_some() => {
            let name = out.cause.key.as_deref().unwrap_or_default();
            Err(Failure::Error(ProxyError::Forbidden(format!(
                "Ollama is asleep, and the API key {name} may not wake it"
            ))))
        }
        other => other,
    }
}

pub(crate) fn respond(
    app: &App,
    answer: proxy::Answer,
    capture: usize,
    on_end: Option<OnEnd>,
) -> Resp {
    proxy::respond(answer, app.timeouts.model, capture, on_end)
}

pub(crate) fn unreachable_is_502(f: Failure) -> ProxyError {
    match f {
        Failure::Unreachable(why) => ProxyError::Unreachable(why),
        Failure::Error(e) => e,
    }
}
