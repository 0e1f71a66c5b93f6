//! The request handler: `/health`, metadata (in [`crate::meta`]) and forwarding of everything
//! else; the steps every forwarded request shares.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Response};
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::json;

use crate::body::OnEnd;
use crate::cache::Cache;
use crate::config::Config;
use crate::driver::{Cause, Driver};
use crate::error::ProxyError;
use crate::meta;
use crate::proxy::{self, Failure, Outgoing, Target, Timeouts};
use crate::request::{Budget, Intake, ReadError, ReqBody};
use crate::routes::{self, Route};
use crate::upstream::Client;

/// Everything a request needs.
pub struct App {
    pub cfg: Config,
    pub driver: Arc<Driver>,
    pub client: Arc<Client>,
    pub cache: Arc<Cache>,
    pub timeouts: Timeouts,
    /// Memory for buffered request bodies, shared by all requests.
    pub budget: Budget,
    /// Metadata requests to Ollama running at once (see [`crate::meta`]).
    pub attempts: Arc<tokio::sync::Semaphore>,
    /// Ollama's `Host` value, made once ([`crate::headers::host_value`]).
    pub host: Option<HeaderValue>,
}

impl App {
    /// Where forwarded requests go.
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            prefix: &self.client.upstream().prefix,
            host: self.host.as_ref(),
        }
    }
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
        Route::Root | Route::Ps => Ok(meta::always(&app, req, client, route).await),
        Route::Work => work(&app, req, client).await,
        _ => meta::meta(&app, req, client, route).await,
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
pub(crate) async fn prepare(
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
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        client,
    };
    let patience = routes::patience(parts.uri.path());
    let mut out = Outgoing::new(parts, body, cause, app.target(), patience)?;
    out.budget = permit;
    Ok(out)
}

pub(crate) async fn send(
    app: &App,
    out: &mut Outgoing,
    may_wake: bool,
) -> Result<proxy::Answer, Failure> {
    proxy::forward(&app.driver, &app.client, app.timeouts, out, may_wake).await
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

pub(crate) fn unreachable_is_502(f: Failure) -> ProxyError {
    match f {
        Failure::Unreachable(why) => ProxyError::Unreachable(why),
        Failure::Error(e) => e,
    }
}
