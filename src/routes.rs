//! Request classes and timeout classes, decided from method and path alone (see "Request classes"
//! and "Timeouts" in docs/behaviour.md).

use axum::http::Method;

/// How the proxy treats a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The proxy's own `/health`, answered without Ollama.
    Health,
    /// `GET|HEAD /`: always has an answer.
    Root,
    /// `GET /api/ps`: always has an answer.
    Ps,
    /// `GET|HEAD /api/tags`: cacheable metadata.
    Tags,
    /// `GET|HEAD /api/version`: cacheable metadata.
    Version,
    /// `POST /api/show`: cacheable metadata when the request is a plain one.
    Show,
    /// `GET /v1/models`: derived from the cached tags.
    V1Models,
    /// `GET /v1/models/{model}`: derived from the cached tags.
    V1Model(String),
    /// Everything else (work): may wake Ollama.
    Work,
    /// `CONNECT` and `TRACE`: never forwarded (405).
    NotAllowed,
    /// `/metrics` and everything under `/proxy/`: the proxy's own, never forwarded (see
    /// "Monitoring" in docs/behaviour.md).
    Proxy(Own),
}

/// The proxy's own pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Own {
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /proxy/`: the status page.
    Page,
    /// `GET /proxy/status`: the status as JSON.
    Status,
    /// `POST /proxy/backends/{name}/wake`.
    Wake(String),
    /// `POST /proxy/backends/{name}/sleep`.
    Sleep(String),
    /// Anything else under `/proxy/` (404).
    Unknown,
    /// A method these pages do not take (405).
    NotAllowed,
}

impl Own {
    /// The buttons: allowed only with the admin token.
    pub fn is_admin(&self) -> bool {
        matches!(self, Own::Wake(_) | Own::Sleep(_))
    }
}

fn own(method: &Method, path: &str) -> Own {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    let page = match path {
        "/metrics" => Own::Metrics,
        "/proxy" | "/proxy/" => Own::Page,
        "/proxy/status" => Own::Status,
        _ => {
            let action = path
                .strip_prefix("/proxy/backends/")
                .and_then(|r| r.split_once('/'));
            return match action {
                Some((name, "wake")) if method == Method::POST => Own::Wake(name.to_string()),
                Some((name, "sleep")) if method == Method::POST => Own::Sleep(name.to_string()),
                Some((_, "wake" | "sleep")) => Own::NotAllowed,
                _ => Own::Unknown,
            };
        }
    };
    if get_or_head {
        page
    } else {
        Own::NotAllowed
    }
}

/// How long Ollama may take (see "Timeouts" in docs/behaviour.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// TIMEOUT_SECONDS to headers.
    Simple,
    /// MODEL_TIMEOUT_SECONDS of silence, before headers and between chunks.
    Model,
}

pub fn route(method: &Method, path: &str) -> Route {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    if method == Method::CONNECT || method == Method::TRACE {
        return Route::NotAllowed;
    }
    if path == "/metrics" || path == "/proxy" || path.starts_with("/proxy/") {
        return Route::Proxy(own(method, path));
    }
    match path {
        "/health" if get_or_head => Route::Health,
        "/" if get_or_head => Route::Root,
        "/api/ps" if method == Method::GET => Route::Ps,
        "/api/tags" if get_or_head => Route::Tags,
        "/api/version" if get_or_head => Route::Version,
        "/api/show" if method == Method::POST => Route::Show,
        "/v1/models" if method == Method::GET => Route::V1Models,
        _ if method == Method::GET => match path.strip_prefix("/v1/models/") {
            Some(id) if !id.is_empty() => Route::V1Model(id.to_string()),
            _ => Route::Work,
        },
        _ => Route::Work,
    }
}

pub fn patience(path: &str) -> Patience {
    const MODEL: [&str; 12] = [
        "/api/generate",
        "/api/chat",
        "/api/embed",
        "/api/embeddings",
        "/api/pull",
        "/api/push",
        "/api/create",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/responses",
        "/v1/messages",
    ];
    if MODEL.contains(&path) || path.starts_with("/api/blobs/") {
        Patience::Model
    } else {
        Patience::Simple
    }
}

/// A successful answer to this request changes the model list (see "Invalidation" in
/// docs/behaviour.md).
pub fn changes_models(method: &Method, path: &str) -> bool {
    matches!(
        (method.as_str(), path),
        ("POST", "/api/pull")
            | ("POST", "/api/create")
            | ("POST", "/api/copy")
            | ("DELETE", "/api/delete")
    )
}

/// Errors on `/v1/*` use OpenAI's shape.
pub fn is_openai(path: &str) -> bool {
    path.starts_with("/v1/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(route(&Method::GET, "/health"), Route::Health);
        assert_eq!(route(&Method::HEAD, "/health"), Route::Health);
        assert_eq!(route(&Method::POST, "/health"), Route::Work);
        assert_eq!(route(&Method::HEAD, "/"), Route::Root);
        assert_eq!(route(&Method::GET, "/api/tags"), Route::Tags);
        assert_eq!(route(&Method::HEAD, "/api/version"), Route::Version);
        assert_eq!(route(&Method::POST, "/api/show"), Route::Show);
        assert_eq!(route(&Method::GET, "/api/ps"), Route::Ps);
        assert_eq!(route(&Method::GET, "/v1/models"), Route::V1Models);
        assert_eq!(
            route(&Method::GET, "/v1/models/jm/x:7b"),
            Route::V1Model("jm/x:7b".into())
        );
        assert_eq!(route(&Method::GET, "/v1/models/"), Route::Work);
        assert_eq!(route(&Method::CONNECT, "/"), Route::NotAllowed);
        assert_eq!(route(&Method::TRACE, "/api/chat"), Route::NotAllowed);
        assert_eq!(route(&Method::GET, "/metrics"), Route::Proxy(Own::Metrics));
        assert_eq!(route(&Method::GET, "/proxy/"), Route::Proxy(Own::Page));
        assert_eq!(
            route(&Method::GET, "/proxy/status"),
            Route::Proxy(Own::Status)
        );
        assert_eq!(
            route(&Method::POST, "/proxy/status"),
            Route::Proxy(Own::NotAllowed)
        );
        assert_eq!(
            route(&Method::POST, "/proxy/backends/gpu/wake"),
            Route::Proxy(Own::Wake("gpu".into()))
        );
        assert_eq!(
            route(&Method::GET, "/proxy/backends/gpu/sleep"),
            Route::Proxy(Own::NotAllowed)
        );
        assert_eq!(
            route(&Method::POST, "/proxy/api/chat"),
            Route::Proxy(Own::Unknown)
        );
        for (m, p) in [
            (Method::POST, "/api/generate"),
            (Method::POST, "/api/chat"),
            (Method::DELETE, "/api/delete"),
            (Method::POST, "/api/blobs/sha256:00"),
            (Method::POST, "/v1/chat/completions"),
            (Method::GET, "/unknown"),
            (Method::POST, "/api/tags"),
        ] {
            assert_eq!(route(&m, p), Route::Work, "{m} {p}");
        }
    }

    #[test]
    fn patience_and_invalidation() {
        assert_eq!(patience("/api/chat"), Patience::Model);
        assert_eq!(patience("/api/blobs/sha256:ab"), Patience::Model);
        assert_eq!(patience("/v1/responses"), Patience::Model);
        assert_eq!(patience("/api/tags"), Patience::Simple);
        assert_eq!(patience("/api/delete"), Patience::Simple);
        assert!(changes_models(&Method::POST, "/api/pull"));
        assert!(changes_models(&Method::DELETE, "/api/delete"));
        assert!(!changes_models(&Method::GET, "/api/pull"));
        assert!(is_openai("/v1/models") && !is_openai("/api/chat"));
    }
}
