//! A fake Ollama following ../shared/OLLAMA-API.md: real HTTP, NDJSON and SSE streams, blob uploads,
//! with knobs for delays, deaths mid-stream, and a log of what it saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body_len: u64,
    pub body: Bytes,
}

/// Behaviour knobs, changeable while running.
#[derive(Default)]
pub struct Knobs {
    /// Delay between stream chunks.
    pub chunk_delay_ms: AtomicU64,
    /// Delay before response headers of generate/chat/embed (model loading) and /slow.
    pub header_delay_ms: AtomicU64,
    /// Chunks per generate/chat/pull stream (0 = 5).
    pub chunks: AtomicUsize,
    /// Abort the connection after this many chunks (0 = never).
    pub die_after: AtomicUsize,
    /// Stop sending (but keep the connection) after this many chunks (0 = never).
    pub stall_after: AtomicUsize,
    /// `/api/tags` answers 200 with a body that is not UTF-8 (the usual list with a 0xff byte in it).
    pub tags_not_utf8: AtomicBool,
    /// `/api/version` and `/api/ps` wait (at most 30 s) until this is false again and
    /// `meta_released` is notified: an Ollama that is slow to answer.
    pub hold_meta: AtomicBool,
    pub meta_released: Notify,
    /// `expires_at` of the model `/api/ps` lists (default: a time long past).
    pub ps_expires_at: Mutex<Option<String>>,
}

/// What the fake has seen.
#[derive(Default)]
pub struct Log {
    pub seen: Mutex<Vec<Seen>>,
    /// `x-seq` header of each request, in the order the handler was entered.
    pub arrivals: Mutex<Vec<String>>,
    /// Streams whose client went away before the end.
    pub cancelled: AtomicUsize,
    pub changed: Notify,
}

impl Log {
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    }
    /// Waits (bounded) until `pred` holds.
    pub async fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&Log) -> bool) {
        super::wait_until(&self.changed, what, limit, || pred(self)).await;
    }
}

pub struct FakeState {
    pub knobs: Knobs,
    pub log: Log,
    pub models: Mutex<Vec<String>>,
}

/// A running fake Ollama.
#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
    pub stop: tokio_util::sync::CancellationToken,
}

impl Fake {
    /// Serves on an already bound listener.
    pub fn start(listener: TcpListener) -> Fake {
        let state = Arc::new(FakeState {
            knobs: Knobs::default(),
            log: Log::default(),
            models: Mutex::new(vec!["llama3.2:latest".into(), "jmorgan/coder:7b".into()]),
        });
        Self::start_with(listener, state)
    }

    pub fn start_with(listener: TcpListener, state: Arc<FakeState>) -> Fake {
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let s = stop.clone();
        tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(s.clone().cancelled_owned());
            tokio::select! {
                _ = serve => {}
                _ = s.cancelled() => {}
            }
        });
        Fake { addr, state, stop }
    }

    pub async fn bind() -> Fake {
        Self::start(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and waits (bounded) until connects are refused.
    pub async fn kill(&self) {
        self.stop.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fake Ollama still listening"
            );
            tokio::task::yield_now().await;
        }
    }
    pub fn log(&self) -> &Log {
        &self.state.log
    }
    pub fn knobs(&self) -> &Knobs {
        &self.state.knobs
    }
}

fn ndjson(v: Value) -> Bytes {
    let mut s = v.to_string();
    s.push('\n');
    Bytes::from(s)
}

fn tags_body(models: &[String]) -> Value {
    let list: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({"name": m, "model": m, "modified_at": "2024-06-01T10:11:12.123456789-07:00", "size": 2019393189u64,
                   "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
                   "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                               "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}})
        })
        .collect();
    json!({ "models": list })
}

/// Counts a stream as cancelled when dropped before its end.
struct CancelGuard {
    state: Arc<FakeState>,
    done: bool,
}

impl CancelGuard {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.state.log.cancelled.fetch_add(1, Ordering::SeqCst);
            self.state.log.changed.notify_waiters();
        }
    }
}

/// A stream of `chunks` pieces made by `make(i)` then `tail`, paced, possibly dying or stalling.
fn paced(
    state: Arc<FakeState>,
    make: impl Fn(usize) -> Bytes + Send + 'static,
    tail: Option<Bytes>,
) -> Body {
    let n = match state.knobs.chunks.load(Ordering::SeqCst) {
        0 => 5,
        n => n,
    };
    let delay = Duration::from_millis(state.knobs.chunk_delay_ms.load(Ordering::SeqCst));
    let die = state.knobs.die_after.load(Ordering::SeqCst);
    let stall = state.knobs.stall_after.load(Ordering::SeqCst);
    let guard = CancelGuard { state, done: false };
    let stream =
        futures_util::stream::unfold((0usize, guard, false), move |(i, mut guard, ended)| {
            let next = if ended {
                None
            } else if i < n {
                Some(make(i))
            } else {
                tail.clone()
            };
            async move {
                if ended {
                    return None;
                }
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if die > 0 && i == die {
                    guard.done = true;
                    return Some((
                        Err(std::io::Error::other("fake Ollama died")),
                        (i, guard, true),
                    ));
                }
                if stall > 0 && i == stall {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                match next {
                    Some(c) => {
                        let last = i >= n;
                        guard.done |= last;
                        Some((Ok(c), (i + 1, guard, last)))
                    }
                    None => {
                        guard.finish();
                        None
                    }
                }
            }
        });
    Body::from_stream(stream)
}

/// Counts a request as cancelled when its client leaves before the answer (or stream) is complete.
async fn handle(State(state): State<Arc<FakeState>>, req: Request) -> Response {
    let guard = CancelGuard {
        state: Arc::clone(&state),
        done: false,
    };
    let resp = answer(state, req).await;
    guard.finish();
    resp
}

async fn answer(state: Arc<FakeState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    if let Some(seq) = parts.headers.get("x-seq").and_then(|v| v.to_str().ok()) {
        state.log.arrivals.lock().unwrap().push(seq.to_string());
    }
    let path = parts.uri.path().to_string();
    // Blob uploads are counted as they stream; everything else is read whole.
    let mut body_len = 0u64;
    let mut kept = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        body_len += chunk.len() as u64;
        if kept.len() < 1 << 20 {
            kept.extend_from_slice(&chunk);
        }
    }
    let body = Bytes::from(kept);
    state.log.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: path.clone(),
        query: parts.uri.query().map(String::from),
        headers: parts.headers.clone(),
        body_len,
        body: body.clone(),
    });
    state.log.changed.notify_waiters();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let stream = json_body.get("stream").and_then(Value::as_bool);
    let model = json_body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("llama3.2")
        .to_string();
    let header_delay = Duration::from_millis(state.knobs.header_delay_ms.load(Ordering::SeqCst));
    let m = parts.method.clone();
    if matches!(path.as_str(), "/api/version" | "/api/ps") {
        let held = async {
            loop {
                let released = state.knobs.meta_released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if !state.knobs.hold_meta.load(Ordering::SeqCst) {
                    return;
                }
                released.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(30), held).await;
    }
    match (m.as_str(), path.as_str()) {
        ("GET" | "HEAD", "/") => "Ollama is running".into_response(),
        ("GET" | "HEAD", "/api/version") => axum::Json(json!({"version": "0.33.0"})).into_response(),
        ("GET" | "HEAD", "/api/tags") if state.knobs.tags_not_utf8.load(Ordering::SeqCst) => {
            let mut body = tags_body(&state.models.lock().unwrap()).to_string().into_bytes();
            body.splice(11..11, *b"\xff");
            ([(header::CONTENT_TYPE, "application/json; charset=utf-8")], body).into_response()
        }
        ("GET" | "HEAD", "/api/tags") => axum::Json(tags_body(&state.models.lock().unwrap())).into_response(),
        ("GET", "/api/ps") => {
            let expires = state.knobs.ps_expires_at.lock().unwrap().clone().unwrap_or_else(|| "2024-06-01T10:11:12Z".into());
            axum::Json(json!({"models": [{"name": "llama3.2:latest", "model": "llama3.2:latest", "size": 1, "digest": "x", "details": {}, "expires_at": expires, "size_vram": 1, "context_length": 4096}]})).into_response()
        }
        ("POST", "/api/show") => {
            if !state.models.lock().unwrap().iter().any(|n| n == &model || *n == format!("{model}:latest")) {
                return (StatusCode::NOT_FOUND, axum::Json(json!({"error": format!("model '{model}' not found")}))).into_response();
            }
            axum::Json(json!({"modelfile": "FROM x", "parameters": "", "template": "{{ .Prompt }}", "details": {"family": "llama"},
                              "model_info": {"general.architecture": "llama"}, "modified_at": "2024-06-01T10:11:12Z", "capabilities": ["completion"]})).into_response()
        }
        ("GET", "/slow") => {
            tokio::time::sleep(header_delay).await;
            "slow".into_response()
        }
        ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS", "/echo") => axum::Json(json!({
            "method": parts.method.as_str(), "path": path, "query": parts.uri.query(),
            "host": parts.headers.get(header::HOST).and_then(|v| v.to_str().ok()),
            "xff": parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
            "proto": parts.headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()),
            "connection": parts.headers.get(header::CONNECTION).and_then(|v| v.to_str().ok()),
            "custom": parts.headers.get("x-custom").and_then(|v| v.to_str().ok()),
            "body_len": body_len,
        })).into_response(),
        ("POST", "/api/generate" | "/api/chat") => {
            tokio::time::sleep(header_delay).await;
            let chat = path == "/api/chat";
            let piece = move |i: usize| {
                let text = format!("tok{i} ");
                let mut v = if chat {
                    json!({"model": "m", "created_at": "2024-06-01T10:11:12Z", "message": {"role": "assistant", "content": text}, "done": false})
                } else {
                    json!({"model": "m", "created_at": "2024-06-01T10:11:12Z", "response": text, "done": false})
                };
                v["model"] = json!("llama3.2");
                v
            };
            let last = {
                let mut v = piece(0);
                v["done"] = json!(true);
                v["done_reason"] = json!("stop");
                if chat { v["message"]["content"] = json!(""); } else { v["response"] = json!(""); }
                v
            };
            if stream == Some(false) {
                let mut v = piece(0);
                v["done"] = json!(true);
                return axum::Json(v).into_response();
            }
            let body = paced(Arc::clone(&state), move |i| ndjson(piece(i)), Some(ndjson(last)));
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        ("POST", "/api/embed") => {
            tokio::time::sleep(header_delay).await;
            axum::Json(json!({"model": model, "embeddings": [[0.1, 0.2, 0.3]]})).into_response()
        }
        ("POST", "/api/embeddings") => axum::Json(json!({"embedding": [0.1, 0.2, 0.3]})).into_response(),
        ("POST", "/api/pull") => {
            let name = json_body.get("model").or(json_body.get("name")).and_then(Value::as_str).unwrap_or("new").to_string();
            let st = Arc::clone(&state);
            let body = paced(Arc::clone(&state), |i| ndjson(json!({"status": "pulling", "completed": i, "total": 5})), Some(ndjson(json!({"status": "success"}))));
            let full = if name.contains(':') { name } else { format!("{name}:latest") };
            st.models.lock().unwrap().push(full);
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        ("DELETE", "/api/delete") => {
            state.models.lock().unwrap().retain(|n| n != &model);
            StatusCode::OK.into_response()
        }
        ("POST", "/api/copy") => StatusCode::OK.into_response(),
        ("HEAD", p) if p.starts_with("/api/blobs/") => StatusCode::NOT_FOUND.into_response(),
        ("POST", p) if p.starts_with("/api/blobs/") => (StatusCode::CREATED, format!("{body_len}")).into_response(),
        ("POST", "/v1/chat/completions") => {
            tokio::time::sleep(header_delay).await;
            let piece = |i: usize| json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama3.2",
                                         "choices": [{"index": 0, "delta": {"role": "assistant", "content": format!("tok{i} ")}, "finish_reason": null}]});
            if stream == Some(true) {
                let body = paced(Arc::clone(&state), move |i| Bytes::from(format!("data: {}\n\n", piece(i))), Some(Bytes::from_static(b"data: [DONE]\n\n")));
                return ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response();
            }
            axum::Json(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "llama3.2",
                              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}, "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})).into_response()
        }
        ("POST", "/v1/embeddings") => axum::Json(json!({"object": "list", "data": [{"object": "embedding", "embedding": [0.1, 0.2, 0.3], "index": 0}],
                                                        "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1}})).into_response(),
        ("GET", "/v1/models") => axum::Json(json!({"object": "list", "data": state.models.lock().unwrap().iter().map(|m| json!({"id": m, "object": "model", "created": 1717261872, "owned_by": "library"})).collect::<Vec<_>>()})).into_response(),
        _ => (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/plain")], "404 page not found").into_response(),
    }
}
