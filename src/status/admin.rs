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
use crate::config::access::AdminToken;
use crate::driver::Cause;
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
    };
    let result = match action {
        Action::Wake => wake(backend, &cause),
        Action::Sleep => sleep(app, backend),
    };
    if form {
        return redirect(token, set_cookie);
    }
    match result {
        Ok(what) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"backend": name, "result": what})),
        )
            .into_response(),
        Err(why) => (
            StatusCode::CONFLICT,
            axum::Json(json!({"backend": name, "error": why})),
        )
            .into_response(),
    }
}

type Resp = Response<Body>;

fn wake(backend: &Backend, cause: &Cause) -> Result<&'static str, &'static str> {
    let d = &backend.driver;
    if !d.can_wake() {
        return Err("this machine has no wake method");
    }
    match d.state() {
        State::Awake => Ok("already awake"),
        State::Waking => Ok("already waking"),
        _ => {
            d.wake(cause);
            Ok("wake started")
        }
    }
}

fn sleep(app: &App, backend: &Arc<Backend>) -> Result<&'static str, &'static str> {
    let Some(sleeper) = backend.sleeper.clone() else {
        return Err("this machine has no sleep method (SLEEP_AFTER and a method are needed)");
    };
    if backend.driver.state() != State::Awake {
        return Err("the machine is not awake");
    }
    let (b, stop) = (Arc::clone(backend), app.shutdown.clone());
    tokio::spawn(async move {
        crate::backend::sleep::put_to_sleep(&b, &sleeper, &stop, true).await;
    });
    Ok("sleep started")
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

/// Back to the page (303), setting the cookie when the token came with the form.
fn redirect(token: &AdminToken, set_cookie: bool) -> Resp {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    let h = resp.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/proxy/"));
    let value = format!(
        "{COOKIE}={}; Path=/proxy/; HttpOnly; SameSite=Strict",
        token.cookie()
    );
    if let (true, Ok(v)) = (set_cookie, HeaderValue::from_str(&value)) {
        h.insert(header::SET_COOKIE, v);
    }
    resp
}
