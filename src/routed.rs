//! Work and `/api/show` on their way to a machine: find the model the body names, pick the machine
//! (see "Routing" in docs/behaviour.md), and go to another one that has the model when the chosen
//! one turns out asleep while another is awake. With one machine this is the plain request path.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::Response;
use bytes::Bytes;

use crate::backend::{pick, Backend};
use crate::body::OnEnd;
use crate::error::ProxyError;
use crate::handler::{
    finish, prepare, read_body, respond, room_to_hold, send, unreachable_is_502, App,
};
use crate::meta;
use crate::proxy::{Failure, Outgoing};
use crate::request::{BudgetPermit, ReqBody};
use crate::routes::{self, Route};
use crate::routing;

type Resp = Response<Body>;

/// A request whose body was read to find its model.
struct Read {
    parts: Parts,
    body: ReqBody,
    permit: Option<BudgetPermit>,
}

/// A request, the machine chosen for it, and the model it names.
struct Routed {
    /// `Err`: the request as it came (one machine, or no model to look for).
    read: Result<Read, Request>,
    backend: Arc<Backend>,
    model: Option<String>,
}

/// The machine for a request: with several machines, a request whose body names a model goes to
/// one that has it. The body is read here (within MAX_HELD_BODY and the body budget) and kept
/// with its share of the budget for forwarding.
async fn by_model(app: &App, req: Request, client: SocketAddr) -> Result<Routed, ProxyError> {
    let preferred = app.backends.preferred();
    let keys = routing::model_keys(req.method().as_str(), req.uri().path());
    if app.backends.single() || keys.is_none() {
        let backend = Arc::clone(preferred);
        return Ok(Routed {
            read: Err(req),
            backend,
            model: None,
        });
    }
    let (parts, body) = req.into_parts();
    let (body, permit) = read_body(app, preferred, &parts, body, false).await?;
    let model = match &body {
        ReqBody::Buffered(bytes) => {
            routing::requested_model(parts.method.as_str(), parts.uri.path(), bytes)
        }
        _ => None,
    };
    let backend = Arc::clone(pick::for_model(&app.backends, model.as_deref()));
    tracing::debug!(model = ?model.as_deref().map(routing::shown), backend = %backend.name, client = %client, "routed");
    Ok(Routed {
        read: Ok(Read {
            parts,
            body,
            permit,
        }),
        backend,
        model,
    })
}

/// Any request that is not metadata: forward, waking its machine when needed.
pub(crate) async fn work(app: &App, req: Request, client: SocketAddr) -> Result<Resp, ProxyError> {
    let changes = routes::changes_models(req.method(), req.uri().path());
    let Routed {
        read,
        mut backend,
        model,
    } = by_model(app, req, client).await?;
    crate::monitor::answered_by(&backend);
    // Counted from here to the end of its answer (streams included): work keeps the machine from
    // being put to sleep, and a request counted before a sleep begins cancels it (see "Sleep").
    let mut in_flight = backend.begin();
    let mut out: Outgoing = match read {
        Err(req) => prepare(app, &backend, req, client, true).await?,
        Ok(r) => {
            room_to_hold(&backend, true)?;
            finish(
                &backend,
                r.parts,
                r.body,
                r.permit,
                client,
                model.as_deref(),
            )?
        }
    };
    // A machine believed awake may have gone to sleep: when another awake one has the model, it
    // serves the request instead of this one being woken.
    let wake_first = !pick::awake_alternative(&app.backends, &backend, model.as_deref());
    let mut sent = send(app, &backend, &mut out, wake_first).await;
    if let (Err(Failure::Unreachable(why)), false) = (&sent, wake_first) {
        let next = Arc::clone(pick::for_model(&app.backends, model.as_deref()));
        if !Arc::ptr_eq(&next, &backend) {
            tracing::info!(from = %backend.name, to = %next.name, error = %why, "machine unreachable; another one that has the model serves the request");
            out.retarget(next.target())?;
            backend = next;
            crate::monitor::answered_by(&backend);
            in_flight = backend.begin();
        }
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

/// The marker of a metadata request that must not wake its machine: another awake one has the
/// model.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NoWake;

/// `/api/show` for the machine that has the model; when that one is believed awake but does not
/// answer while another awake one has the model, the other one answers, and nothing is woken.
pub(crate) async fn show(
    app: &Arc<App>,
    req: Request,
    client: SocketAddr,
    route: Route,
) -> Result<Resp, ProxyError> {
    let routed = by_model(app, req, client).await?;
    let (r, backend) = match routed.read {
        Err(req) => return meta::meta(app, &routed.backend, req, client, route).await,
        Ok(Read {
            parts, mut body, ..
        }) if !body.replayable() => {
            let req = Request::from_parts(parts, body.take());
            return meta::meta(app, &routed.backend, req, client, route).await;
        }
        Ok(r) => (r, routed.backend),
    };
    let model = routed.model.as_deref();
    if !pick::awake_alternative(&app.backends, &backend, model) {
        return meta::meta(app, &backend, rebuild(&r, false), client, route).await;
    }
    let first = meta::meta(app, &backend, rebuild(&r, true), client, route.clone()).await;
    match first {
        Err(ProxyError::Unreachable(_) | ProxyError::Forbidden(_)) => {
            let next = Arc::clone(pick::for_model(&app.backends, model));
            meta::meta(app, &next, rebuild(&r, false), client, route).await
        }
        other => other,
    }
}

/// The request again, its body as read (kept in memory: see `show`).
fn rebuild(r: &Read, no_wake: bool) -> Request {
    let body = match &r.body {
        ReqBody::Buffered(bytes) => Body::from(bytes.clone()),
        _ => Body::empty(),
    };
    let mut req = Request::new(body);
    *req.method_mut() = r.parts.method.clone();
    *req.uri_mut() = r.parts.uri.clone();
    *req.version_mut() = r.parts.version;
    *req.headers_mut() = r.parts.headers.clone();
    if let Some(caller) = r.parts.extensions.get::<crate::auth::Caller>() {
        req.extensions_mut().insert(caller.clone());
    }
    if no_wake {
        req.extensions_mut().insert(NoWake);
    }
    req
}
