//! The errors the proxy answers itself: status, `Retry-After`, and Ollama's or OpenAI's JSON shape
//! (see "Error responses" in docs/behaviour.md).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An error answered by the proxy instead of Ollama.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Ollama cannot be reached and there is no way to wake it.
    #[error(
        "Ollama is unreachable ({0}) and no wake method is configured (set WOL_MAC or WAKE_URL)"
    )]
    Unreachable(String),
    /// Ollama failed while answering.
    #[error("Ollama failed: {0}")]
    Upstream(String),
    /// Ollama is asleep and did not wake in time, or the connection broke after the body was sent.
    #[error("Ollama is asleep and did not answer in time ({0}); try again later")]
    Asleep(String, u64),
    /// Too many requests are already waiting for Ollama to wake.
    #[error("too many requests are waiting for Ollama to wake (MAX_QUEUE={0}); try again later")]
    QueueFull(usize, u64),
    /// The proxy itself is short of a resource; Ollama's state is unknown and unchanged.
    #[error("the proxy is out of {0}")]
    OutOfResource(&'static str),
    /// Buffered request bodies use all of BODY_BUDGET and this one would have to be held.
    #[error("the proxy's memory for held request bodies is in use (BODY_BUDGET={budget}); try again later")]
    BodyBudget {
        /// The configured budget, as written for humans.
        budget: String,
        /// Seconds for `Retry-After`.
        retry: u64,
    },
    /// The client stopped sending its request body.
    #[error("the request body stopped arriving: nothing for {} (CLIENT_HEADER_TIMEOUT), or it came too slowly", humantime::format_duration(*.0))]
    ClientTimeout(Duration),
    /// A method the proxy never forwards (`CONNECT`, `TRACE`).
    #[error("method {0} is not allowed")]
    MethodNotAllowed(String),
    /// The client's request could not be read.
    #[error("{0}")]
    BadRequest(String),
    /// MAX_WAKES_PER_HOUR wake cycles of this machine in the last hour.
    #[error(
        "the machine was woken too often (MAX_WAKES_PER_HOUR); it may be woken again in {0} s"
    )]
    WakeLimit(u64),
    /// No API key, or not a configured one.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The API key's rights do not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The proxy is shutting down.
    #[error("ollama-proxy is shutting down")]
    ShuttingDown,
    /// Ollama did not answer within a timeout.
    #[error("Ollama did not answer within {} (raise {option} to wait longer)", humantime::format_duration(*after))]
    Timeout {
        /// The option that sets the limit, e.g. `--model-timeout (MODEL_TIMEOUT_SECONDS)`.
        option: &'static str,
        after: Duration,
    },
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unreachable(_) | ProxyError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Asleep(..)
            | ProxyError::QueueFull(..)
            | ProxyError::ShuttingDown
            | ProxyError::OutOfResource(_)
            | ProxyError::BodyBudget { .. }
            | ProxyError::WakeLimit(_) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::ClientTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::Asleep(_, s) | ProxyError::QueueFull(_, s) | ProxyError::WakeLimit(s) => {
                Some(*s)
            }
            ProxyError::BodyBudget { retry, .. } => Some(*retry),
            ProxyError::ShuttingDown => Some(5),
            ProxyError::OutOfResource(_) => Some(1),
            _ => None,
        }
    }

    /// The response: `{"error":"..."}` on native paths, OpenAI's error object on `/v1/*`.
    pub fn into_response_for(self, openai: bool) -> Response {
        let message = self.to_string();
        let kind = match self {
            ProxyError::BadRequest(_)
            | ProxyError::MethodNotAllowed(_)
            | ProxyError::ClientTimeout(_) => "invalid_request_error",
            ProxyError::Unauthorized(_) => "authentication_error",
            ProxyError::Forbidden(_) => "permission_error",
            _ => "api_error",
        };
        let body = if openai {
            serde_json::json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        } else {
            serde_json::json!({ "error": message })
        };
        let mut resp = (self.status(), axum::Json(body)).into_response();
        if self.status() == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// An error and its sources on one line.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn shapes_and_statuses() {
        let e = ProxyError::Asleep("wake timed out after 2m".into(), 40);
        let resp = e.clone().into_response_for(false);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "40");
        assert!(body(resp).await["error"]
            .as_str()
            .unwrap()
            .contains("asleep"));

        let resp = e.into_response_for(true);
        let v = body(resp).await;
        assert_eq!(v["error"]["type"], "api_error");
        assert!(v["error"]["param"].is_null() && v["error"]["code"].is_null());

        let t = ProxyError::Timeout {
            option: "--model-timeout (MODEL_TIMEOUT_SECONDS)",
            after: Duration::from_secs(30),
        };
        let resp = t.into_response_for(false);
        assert_eq!(resp.status(), 504);
        let msg = body(resp).await["error"].as_str().unwrap().to_string();
        assert!(
            msg.contains("MODEL_TIMEOUT_SECONDS") && msg.contains("30s"),
            "{msg}"
        );
        assert_eq!(ProxyError::Unreachable("refused".into()).status(), 502);
        assert_eq!(ProxyError::QueueFull(1, 3).status(), 503);
        let resp = ProxyError::OutOfResource("file descriptors").into_response_for(false);
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "1");
        assert_eq!(
            body(resp).await["error"],
            "the proxy is out of file descriptors"
        );
    }
}
