//! The "Wake now" / "Sleep now" buttons: allowed only with ADMIN_TOKEN, sent as a Bearer token or
//! entered once on the page (a cookie then holds a digest of it); recorded with cause `manual`
//! (see "Monitoring" in docs/behaviour.md).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::plain;
use crate::backend::machine::State;
use crate::backend::Backend;
use crate::driver::{Cause, Woken};
use crate::error::ProxyError;
use crate::handler::App;

/// The cookie the page's form sets.
const COOKIE: &str = "ollama_proxy_admin";
/// Largest form body read.
const FORM_LIMIT: usize = 4096;

/// Which button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Wake,
    Sleep,
}

/// The request carries a valid admin cookie (the page then needs no token field).
pub fn has_cookie(app: &App, headers: &HeaderMap) -> bool {
    let Some(token) = &app.cfg.access.admin_token else {
        return false;
    };
    cookie(headers).is_some_and(|c| token.cookie_matches(c.as_bytes()))
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    let all = headers.get_all(header::COOKIE).iter();
    all.filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    v.strip_prefix(b"Bearer ")
}

/// Performs a button's action for machine `name` when the request is allowed to.
pub async fn act(app: &App, req: Request, client: SocketAddr, name: &str, action: Action) -> Resp {
    let Some(token) = &app.cfg.access.admin_token else {
        return plain(StatusCode::FORBIDDEN, "no ADMIN_TOKEN is configured");
    };
    let (parts, body) = req.into_parts();
    let form = is_form(&parts.headers);
    let mut allowed =
        bearer(&parts.headers).is_some_and(|b| token.matches(b)) || has_cookie(app, &parts.headers);
    let mut set_cookie = false;
    if !allowed && form {
        allowed = form_token(body)
            .await
            .is_some_and(|t| token.matches(t.as_bytes()));
        set_cookie = allowed;
    }
    if !allowed {
        return plain(StatusCode::FORBIDDEN, "the admin token is missing or wrong");
    }
    let Some(backend) = app.backends.all().iter().find(|b| b.name == name) else {
        return plain(StatusCode::NOT_FOUND, "no such backend");
    };
    let cause = Cause {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        client,
        key: None,
        may_wake: true,
        model: None,
    };
    let outcome = match action {
        Action::Wake => wake(backend, &cause, app.cfg.access.max_wakes_per_hour),
        Action::Sleep => sleep(app, backend),
    };
    let cookie = set_cookie.then(|| token.cookie());
    match outcome {
        Outcome::Done(_) if form => redirect(cookie),
        Outcome::Done(what) => {
            let status = if what == ALREADY_AWAKE {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            let body = json!({"backend": name, "result": what});
            (status, axum::Json(body)).into_response()
        }
        Outcome::Refused(status, why, retry) => refusal(name, status, &why, retry, form, cookie),
    }
}

type Resp = Response<Body>;

/// What a button did: done (a sentence for the answer), or refused with a status, a reason and
/// the seconds after which it may work.
enum Outcome {
    Done(&'static str),
    Refused(StatusCode, String, Option<u64>),
}

const ALREADY_AWAKE: &str = "already awake";

fn conflict(why: &str) -> Outcome {
    Outcome::Refused(StatusCode::CONFLICT, why.to_string(), None)
}

fn wake(backend: &Backend, cause: &Cause, max: Option<usize>) -> Outcome {
    let d = &backend.driver;
    if !d.can_wake() {
        return conflict("this machine has no wake method");
    }
    match d.try_wake(cause) {
        Ok(Woken::Started) => Outcome::Done("wake started"),
        Ok(Woken::AfterSleep) => Outcome::Done("wake starts when the running sleep ends"),
        Ok(Woken::AlreadyWaking) => Outcome::Done("already waking: no second wake started"),
        Ok(Woken::AlreadyAwake) => Outcome::Done(ALREADY_AWAKE),
        Err(ProxyError::WakeLimit(retry)) => {
            let max = max.unwrap_or_default();
            let why = format!("not woken: MAX_WAKES_PER_HOUR ({max}) wake cycles were started in the last hour; the next may start in {retry} s");
            Outcome::Refused(StatusCode::TOO_MANY_REQUESTS, why, Some(retry))
        }
        Err(e) => Outcome::Refused(StatusCode::CONFLICT, e.to_string(), None),
    }
}

fn sleep(app: &App, backend: &Arc<Backend>) -> Outcome {
    let Some(sleeper) = backend.sleeper.clone() else {
        return conflict("this machine has no sleep method (SLEEP_AFTER and a method are needed)");
    };
    if backend.driver.state() != State::Awake {
        return conflict("the machine is not awake");
    }
    let (b, stop) = (Arc::clone(backend), app.shutdown.clone());
    tokio::spawn(async move {
        crate::backend::sleep::put_to_sleep(&b, &sleeper, &stop, true).await;
    });
    Outcome::Done("sleep started")
}

/// A button that did nothing: JSON for a script; for the page's form a small page with the
/// reason and a link back.
fn refusal(
    name: &str,
    status: StatusCode,
    why: &str,
    retry: Option<u64>,
    form: bool,
    cookie: Option<String>,
) -> Resp {
    let mut resp = if form {
        let html = format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
<link rel=\"icon\" href=\"data:,\"><title>ollama-proxy: {name}</title></head><body>\
<p id=\"refused\"><b>{name}</b>: {why}</p><p><a href=\"/proxy/\">Back to the status page</a></p></body></html>",
            name = super::page::esc(name),
            why = super::page::esc(why)
        );
        let ct = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
        (status, ct, html).into_response()
    } else {
        let body = json!({"backend": name, "error": why});
        (status, axum::Json(body)).into_response()
    };
    let h = resp.headers_mut();
    if let Some(v) = retry.and_then(|r| HeaderValue::from_str(&r.to_string()).ok()) {
        h.insert(header::RETRY_AFTER, v);
    }
    if let Some(v) = cookie.and_then(|c| cookie_header(&c)) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

async fn form_token(body: Body) -> Option<String> {
    let bytes = axum::body::to_bytes(body, FORM_LIMIT).await.ok()?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).ok()?;
    fields
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that stands for the admin token (its digest `value`).
fn cookie_header(value: &str) -> Option<HeaderValue> {
    let v = format!("{COOKIE}={value}; Path=/proxy/; HttpOnly; SameSite=Strict");
    HeaderValue::from_str(&v).ok()
}

/// Back to the page (303), setting the cookie when the token came with the form.
fn redirect(cookie: Option<String>) -> Resp {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/proxy/"));
    if let Some(v) = cookie.and_then(|c| cookie_header(&c)) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}
