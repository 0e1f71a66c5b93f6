//! The metadata cache: fresh and stale answers, invalidation, the cache file (see "Cache" in
//! docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};

use common::{client, post_json, Child, Fake, Proxy};

async fn get(url: String) -> reqwest::Response {
    client().get(url).send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn fresh_list_is_served_without_contacting_ollama() {
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    let first = get(proxy.url("/api/tags")).await;
    assert_eq!(header(&first, "x-ollama-proxy-cache"), "");
    let first: Value = first.json().await.unwrap();
    for _ in 0..3 {
        let resp = get(proxy.url("/api/tags")).await;
        assert_eq!(header(&resp, "x-ollama-proxy-cache"), "fresh");
        assert!(header(&resp, "age").parse::<u64>().is_ok());
        assert_eq!(resp.json::<Value>().await.unwrap(), first);
    }
    // /v1/models is derived from the same cached list.
    let v: Value = get(proxy.url("/v1/models")).await.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(
        v["data"][0],
        json!({"id": "llama3.2:latest", "object": "model", "created": 1_717_261_872, "owned_by": "library"})
    );
    assert_eq!(v["data"][1]["owned_by"], "jmorgan");
    let v: Value = get(proxy.url("/v1/models/llama3.2"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "llama3.2:latest");
    let resp = get(proxy.url("/v1/models/absent")).await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );
    assert_eq!(fake.log().count("/api/tags"), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn stale_copies_while_ollama_is_down() {
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url(), "--cache-duration", "0"]).await;
    // Fill the cache while Ollama is up; with a zero cache duration every list is forwarded.
    for _ in 0..2 {
        assert_eq!(get(proxy.url("/api/tags")).await.status(), 200);
    }
    assert_eq!(fake.log().count("/api/tags"), 2);
    assert_eq!(get(proxy.url("/api/version")).await.status(), 200);
    let show = post_json(proxy.url("/api/show"), &json!({"model": "llama3.2:latest"})).await;
    assert_eq!(show.status(), 200);
    let show: Value = show.json().await.unwrap();
    fake.kill().await;

    let resp = get(proxy.url("/api/tags")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ollama-proxy-cache"), "stale");
    assert!(header(&resp, "age").parse::<u64>().is_ok());
    assert_eq!(
        resp.json::<Value>().await.unwrap()["models"][0]["name"],
        "llama3.2:latest"
    );
    let resp = get(proxy.url("/api/version")).await;
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"version": "0.33.0"})
    );
    let resp = post_json(proxy.url("/api/show"), &json!({"model": "llama3.2:latest"})).await;
    assert_eq!(header(&resp, "x-ollama-proxy-cache"), "stale");
    assert_eq!(resp.json::<Value>().await.unwrap(), show);
    assert_eq!(
        get(proxy.url("/v1/models"))
            .await
            .json::<Value>()
            .await
            .unwrap()["data"][0]["id"],
        "llama3.2:latest"
    );
    assert_eq!(
        get(proxy.url("/api/ps"))
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({"models": []})
    );
    assert_eq!(
        get(proxy.url("/")).await.text().await.unwrap(),
        "Ollama is running"
    );
    let health: Value = get(proxy.url("/health")).await.json().await.unwrap();
    assert_eq!(health["backend"], "asleep");
    proxy.stop().await;
}

#[tokio::test]
async fn a_pull_marks_the_list_stale() {
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    get(proxy.url("/api/tags")).await;
    assert_eq!(
        header(&get(proxy.url("/api/tags")).await, "x-ollama-proxy-cache"),
        "fresh"
    );
    let pull = post_json(proxy.url("/api/pull"), &json!({"model": "qwen3"})).await;
    assert!(pull.text().await.unwrap().contains("success"));
    let resp = get(proxy.url("/api/tags")).await;
    assert_eq!(
        header(&resp, "x-ollama-proxy-cache"),
        "",
        "served from cache after a pull"
    );
    let names: Vec<String> = resp.json::<Value>().await.unwrap()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().into())
        .collect();
    assert!(names.contains(&"qwen3:latest".to_string()), "{names:?}");
    assert_eq!(fake.log().count("/api/tags"), 2);
    proxy.stop().await;
}

#[tokio::test]
async fn cache_file_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.json");
    let file = file.to_str().unwrap();
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url(), "--cache-file", file]).await;
    let listed: Value = get(proxy.url("/api/tags")).await.json().await.unwrap();
    proxy.stop().await;
    fake.kill().await;

    let proxy = Proxy::start(&["--ollama-url", &fake.url(), "--cache-file", file]).await;
    let resp = get(proxy.url("/api/tags")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ollama-proxy-cache"), "fresh");
    assert_eq!(resp.json::<Value>().await.unwrap(), listed);
    proxy.stop().await;
}

#[tokio::test]
async fn corrupt_cache_file_only_warns() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.json");
    std::fs::write(&file, b"{\"tags\": [not json").unwrap();
    let fake = Fake::bind().await;
    let proxy = Child::start(
        &[
            "--ollama-url",
            &fake.url(),
            "--cache-file",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert_eq!(get(proxy.url("/health")).await.status(), 200);
    assert!(
        proxy.stderr.lock().unwrap().contains("corrupt cache file"),
        "{}",
        proxy.stderr.lock().unwrap()
    );
    // The proxy works and rewrites the file with what it learns.
    assert_eq!(get(proxy.url("/api/tags")).await.status(), 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap()).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "cache file never rewritten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 9: a show request with anything beyond model/verbose is forwarded as is and never
/// becomes the cached answer for the plain request.
#[tokio::test]
async fn show_requests_with_extra_or_case_variant_keys_are_not_cached() {
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    let poisoned = [
        json!({"model": "llama3.2:latest", "system": "INJECTED"}),
        json!({"model": "llama3.2:latest", "Model": "jmorgan/coder:7b"}),
        json!({"Model": "llama3.2:latest"}),
    ];
    for body in &poisoned {
        let resp = post_json(proxy.url("/api/show"), body).await;
        assert_eq!(resp.status(), 200, "{body}");
        assert_eq!(header(&resp, "x-ollama-proxy-cache"), "");
    }
    let seen: Vec<Value> = fake
        .log()
        .all()
        .iter()
        .filter(|s| s.path == "/api/show")
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .collect();
    assert_eq!(seen, poisoned, "forwarded as is");
    // A plain request is still cached.
    let plain_other = json!({"model": "jmorgan/coder:7b"});
    assert_eq!(
        post_json(proxy.url("/api/show"), &plain_other)
            .await
            .status(),
        200
    );
    fake.kill().await;

    let resp = post_json(proxy.url("/api/show"), &plain_other).await;
    assert_eq!(resp.status(), 200);
    assert_ne!(header(&resp, "x-ollama-proxy-cache"), "", "from the cache");
    // Nothing was cached for the plain llama3.2 request: it needs Ollama (unreachable, no wake).
    for body in [
        json!({"model": "llama3.2:latest"}),
        json!({"name": "llama3.2:latest"}),
    ] {
        let resp = post_json(proxy.url("/api/show"), &body).await;
        assert_eq!(resp.status(), 502, "{body}");
        assert_eq!(header(&resp, "x-ollama-proxy-cache"), "");
    }
    proxy.stop().await;
}

/// Issue 9: Ollama answers /api/tags with bytes that are not text: /v1/models answers an error,
/// not the older list as if it were the new one; /api/tags passes the answer through.
#[tokio::test]
async fn a_tags_answer_that_is_not_text_is_not_replaced_by_the_older_list() {
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url(), "--cache-duration", "0"]).await;
    let v: Value = get(proxy.url("/v1/models")).await.json().await.unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    fake.knobs().tags_not_utf8.store(true, Ordering::SeqCst);
    let before = fake.log().count("/api/tags");
    for path in ["/v1/models", "/v1/models/llama3.2"] {
        let resp = get(proxy.url(path)).await;
        assert_eq!(resp.status(), 502, "{path}");
        assert_eq!(header(&resp, "x-ollama-proxy-cache"), "");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["type"], "api_error", "{path}: {v}");
    }
    assert_eq!(fake.log().count("/api/tags"), before + 2);
    let resp = get(proxy.url("/api/tags")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-ollama-proxy-cache"), "");
    assert!(
        resp.bytes().await.unwrap().contains(&0xff),
        "Ollama's own answer"
    );
    proxy.stop().await;

    // With nothing cached yet, the same answer is an error too.
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    assert_eq!(get(proxy.url("/v1/models")).await.status(), 502);
    proxy.stop().await;
}
