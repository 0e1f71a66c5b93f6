//! Metadata when there are several machines: one merged model list, the union of the models the
//! awake machines have loaded (see "Routing" in docs/behaviour.md). Nothing here wakes a machine
//! unless no machine has ever listed its models.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;

use crate::backend::{pick, Backend};
use crate::cache::{Entry, Key};
use crate::driver::Cause;
use crate::error::ProxyError;
use crate::handler::{send, App};
use crate::meta::{self, Raced};
use crate::proxy::Outgoing;
use crate::routes::Route;

type Resp = Response<Body>;

/// The cause of the requests made on a client's behalf.
fn cause(req: &Request, client: SocketAddr) -> Cause {
    crate::handler::cause_of(req.method(), req.uri(), req.extensions(), client)
}

/// One machine's model list: the cached one when it is fresh or the machine sleeps, else asked
/// for (never waking it), the cached one if it does not answer in time.
async fn list_of(app: &Arc<App>, backend: &Arc<Backend>, cause: Cause) -> Option<Arc<Entry>> {
    let cached = backend.cache.get(&Key::Tags);
    let fresh = cached
        .as_ref()
        .is_some_and(|e| e.is_fresh(app.cfg.cache_duration));
    if fresh || !pick::worth_asking(backend) {
        return cached;
    }
    let attempt = {
        let (app, backend) = (Arc::clone(app), Arc::clone(backend));
        async move { meta::fetch_tags(&app, &backend, cause, false).await }
    };
    match meta::head_start(app, backend, attempt).await {
        Raced::Ready(Ok(entry)) => Some(entry),
        Raced::Ready(Err(_)) | Raced::Late(_) | Raced::Lost => cached,
    }
}

/// `/api/tags`, `/v1/models` and `/v1/models/{id}` over every machine's list: a model on several
/// machines is listed once. With no list anywhere, the preferred machine is asked as with one
/// machine (see "Empty cache" in docs/behaviour.md).
pub(crate) async fn tags(
    app: &Arc<App>,
    req: Request,
    client: SocketAddr,
    route: Route,
) -> Result<Resp, ProxyError> {
    let asks = app
        .backends
        .all()
        .iter()
        .map(|b| list_of(app, b, cause(&req, client)));
    let lists: Vec<Arc<Entry>> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    if lists.is_empty() {
        return meta::meta(app, app.backends.preferred(), req, client, route).await;
    }
    let bodies: Vec<&str> = lists.iter().map(|e| e.body.as_str()).collect();
    let merged = Entry {
        body: crate::routing::lists::merge_tags(&bodies),
        content_type: "application/json; charset=utf-8".into(),
        stored_at: lists.iter().map(|e| e.stored_at).min().unwrap_or_default(),
        invalidated: lists.iter().any(|e| e.invalidated),
    };
    Ok(meta::from_cache(app, &route, &merged))
}

/// `GET /api/ps`: the loaded models of every awake machine; sleeping ones have none and are not
/// asked.
pub(crate) async fn ps(app: &Arc<App>, req: Request, client: SocketAddr) -> Resp {
    let awake = pick::awake(&app.backends);
    let asks = awake
        .iter()
        .map(|b| ps_in_time(app, b, cause(&req, client)));
    let answers: Vec<Bytes> = futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect();
    let bodies: Vec<&str> = answers
        .iter()
        .filter_map(|b| std::str::from_utf8(b).ok())
        .collect();
    let joined = crate::routing::lists::join_ps(&bodies);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )],
        joined,
    )
        .into_response()
}

/// One machine's `/api/ps` body, if it answers within the head start a machine believed awake
/// gets (see "Freshness" in docs/behaviour.md); a late answer still updates the machine's state.
async fn ps_in_time(app: &Arc<App>, backend: &Arc<Backend>, cause: Cause) -> Option<Bytes> {
    let attempt = {
        let (app, backend) = (Arc::clone(app), Arc::clone(backend));
        async move { ps_of(&app, &backend, cause).await }
    };
    match meta::head_start(app, backend, attempt).await {
        Raced::Ready(answer) => answer,
        Raced::Late(_) | Raced::Lost => None,
    }
}

/// One machine's `/api/ps` body, if it answers 200 in time.
async fn ps_of(app: &Arc<App>, backend: &Arc<Backend>, cause: Cause) -> Option<Bytes> {
    let mut out = Outgoing::get("/api/ps", cause, backend.target()).ok()?;
    let (resp, lease) = send(app, backend, &mut out, false).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let limit = app.timeouts.simple;
    let read = crate::body::read_all(resp, lease, limit);
    tokio::time::timeout(limit, read).await.ok()?.ok()
}
