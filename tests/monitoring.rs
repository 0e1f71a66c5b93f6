//! Monitoring (see "Monitoring" in docs/behaviour.md): `/metrics` parsed with a real Prometheus
//! parser moves by exactly the expected amounts, per machine; `/proxy/status` lists the wake with
//! its cause and model and keeps the day's figures across a restart; the Grafana dashboard fits
//! the metrics. The buttons are tested in buttons.rs.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use serde_json::{json, Value};

use common::py::{moved, scrape, total};
use common::sleeping::SleepingHost;
use common::{client, get_json, post_json, Child, Proxy};

fn chat() -> Value {
    json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}]})
}

const WORK_AWAKE: &str = "ollama_proxy_wake_cycles_total{backend=default,cause=work,outcome=awake}";

#[tokio::test]
async fn metrics_move_by_exactly_the_expected_amounts() {
    let Some(py) = common::py::python() else {
        return;
    };
    common::logs();
    let host = SleepingHost::gated(Duration::from_millis(50)).await;
    let mut argv = host.wake_args();
    argv.extend(["--max-queue".into(), "1".into()]);
    let proxy = Proxy::start(&common::strs(&argv)).await;
    let s0 = scrape(&py, proxy.url("/metrics")).await;
    let url = proxy.url("/api/chat");
    let held = tokio::spawn(async move { post_json(url, &chat()).await.status().as_u16() });
    proxy.wait_held(1, Duration::from_secs(10)).await;
    let refused = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(refused.status(), 503);
    let s1 = scrape(&py, proxy.url("/metrics")).await;
    assert_eq!(s1["ollama_proxy_held_requests{backend=default}"], 1.0);
    assert_eq!(
        moved(
            &s0,
            &s1,
            "ollama_proxy_queue_rejections_total{backend=default}"
        ),
        1.0
    );
    assert_eq!(moved(&s0, &s1, WORK_AWAKE), 0.0);
    assert_eq!(
        s1["ollama_proxy_backend_state{backend=default,state=waking}"],
        1.0
    );
    host.open_gate();
    assert_eq!(held.await.unwrap(), 200);
    // Two reads of the model list: the first asks Ollama (miss), the second is fresh.
    for _ in 0..2 {
        let r = client().get(proxy.url("/api/tags")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let s2 = scrape(&py, proxy.url("/metrics")).await;
    assert_eq!(moved(&s0, &s2, WORK_AWAKE), 1.0);
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_held_released_total{backend=default}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_wake_duration_seconds_count{backend=default}"
        ),
        1.0
    );
    assert_eq!(s2["ollama_proxy_held_requests{backend=default}"], 0.0);
    assert_eq!(
        s2["ollama_proxy_backend_state{backend=default,state=awake}"],
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_cache_answers_total{backend=default,result=miss}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_cache_answers_total{backend=default,result=fresh}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{backend=default,route=work,status=2xx}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{backend=default,route=work,status=5xx}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{backend=default,route=tags,status=2xx}"
        ),
        2.0
    );
    let ttfb = "ollama_proxy_time_to_first_byte_seconds_count{backend=default}";
    assert_eq!(moved(&s0, &s2, ttfb), 2.0);
    assert!(s2["ollama_proxy_process_resident_memory_bytes{}"] > 1e6);
    assert!(s2["ollama_proxy_process_open_fds{}"] >= 3.0);
    // The scrapes themselves are counted, and Ollama never saw them.
    assert_eq!(
        moved(
            &s0,
            &s2,
            "ollama_proxy_requests_total{backend=*,route=proxy,status=2xx}"
        ),
        2.0
    );
    assert_eq!(host.log().count("/metrics"), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn status_lists_the_wake_with_its_cause_and_model_and_keeps_the_day_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let host = SleepingHost::new(Duration::from_millis(50)).await;
    let argv = host.wake_args_with_cache(dir.path());
    let mut proxy = Child::start(&common::strs(&argv), &[]).await;
    let started = now();
    let resp = post_json(proxy.url("/api/chat"), &chat()).await;
    assert_eq!(resp.status(), 200);
    let status = get_json(proxy.url("/proxy/status")).await;
    let b = &status["backends"][0];
    assert_eq!(b["name"], "default");
    assert_eq!(b["state"], "awake");
    if now() / 86_400 == started / 86_400 {
        assert_eq!(b["wakes_today"], 1, "{b}");
    }
    let events = b["events"].as_array().unwrap();
    assert_eq!(events[0]["kind"], "awake", "{events:?}");
    let wake = events
        .iter()
        .find(|e| e["kind"] == "wake_requested")
        .unwrap();
    assert_eq!(wake["cause"], "work");
    assert_eq!(wake["method"], "POST");
    assert_eq!(wake["path"], "/api/chat");
    assert_eq!(wake["model"], "llama3.2");
    assert_eq!(wake["client"], "127.0.0.1");
    proxy
        .wait_log("waking Ollama", Duration::from_secs(10))
        .await;
    let log = proxy.stderr.lock().unwrap().clone();
    assert!(log.contains("model=\"llama3.2\""), "{log}");
    let page = client().get(proxy.url("/proxy/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("http-equiv=\"refresh\"") && html.contains("id=\"backend-default\""));
    assert!(!html.contains("<form"), "buttons shown without ADMIN_TOKEN");
    let table = html.split("id=\"events\"").nth(1).unwrap();
    assert!(
        table.contains("POST /api/chat, model llama3.2, from 127.0.0.1"),
        "{table}"
    );
    assert!(proxy.terminate().await.success());
    assert_eq!(
        host.log().count("/proxy/status") + host.log().count("/proxy/"),
        0
    );
    // The file beside the cache file keeps the events and the day's ledger. With the events
    // dropped from it, the restarted proxy still counts today's wake: from the ledger.
    let file = dir.path().join("cache.events.json");
    let mut kept: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept["ledger"][0]["wakes"], 1, "{kept}");
    assert!(kept["events"].as_array().unwrap().len() >= 2, "{kept}");
    kept["events"] = json!([]);
    std::fs::write(&file, kept.to_string()).unwrap();
    let again = Child::start(&common::strs(&argv), &[]).await;
    let status = get_json(again.url("/proxy/status")).await;
    if now() / 86_400 == started / 86_400 {
        assert_eq!(status["backends"][0]["wakes_today"], 1, "{status}");
    }
    assert_eq!(status["backends"][0]["events"], json!([]), "{status}");
    // A file from before the ledger and the model loads: its wake events make the ledger.
    drop(again);
    let written = now();
    let old = json!({"events": [
        {"at": written, "kind": "wake_requested", "cause": "work", "method": "POST", "path": "/api/chat", "client": "10.0.0.2"},
        {"at": written, "kind": "wake_requested", "cause": "manual"}
    ], "asleep": [[written - 60, written]]});
    std::fs::write(&file, old.to_string()).unwrap();
    let third = Child::start(&common::strs(&argv), &[]).await;
    let status = get_json(third.url("/proxy/status")).await;
    let b = &status["backends"][0];
    assert_eq!(b["events"].as_array().unwrap().len(), 2, "{status}");
    // (Unless midnight UTC passed in between, which starts a new day.)
    if now() / 86_400 == (written - 60) / 86_400 {
        assert_eq!(b["wakes_today"], 2, "{status}");
        assert_eq!(b["asleep_today_s"], 60, "{status}");
    }
}

/// Unix seconds now.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Two machines: `a` (wakes by magic packet, preferred) with `llama3.2`, and `b` (always on)
/// with `llama3.2` and `qwen`.
fn two_machines(a: &common::Fake, b: &common::Fake, wol_port: u16) -> String {
    *a.state.models.lock().unwrap() = vec!["llama3.2:latest".into()];
    *b.state.models.lock().unwrap() = vec!["llama3.2:latest".into(), "qwen:latest".into()];
    format!(
        "[[backend]]\nname = \"a\"\nurl = \"{}\"\nmac = \"{}\"\nbroadcast = \"127.0.0.1\"\n\
         wol_port = {wol_port}\npriority = 1\nwake_timeout = \"2s\"\n\n\
         [[backend]]\nname = \"b\"\nurl = \"{}\"\nalways_on = true\npriority = 2\n",
        a.url(),
        common::TEST_MAC,
        b.url()
    )
}

fn chat_with(model: &str) -> Value {
    json!({"model": model, "stream": false, "messages": [{"role": "user", "content": "hi"}]})
}

#[tokio::test]
async fn request_metrics_are_per_machine_and_merged_answers_count_once_under_star() {
    let Some(py) = common::py::python() else {
        return;
    };
    let (a, b) = (common::Fake::bind().await, common::Fake::bind().await);
    let (_catcher, wol) = common::magic_catcher().await;
    let port: u16 = wol[5].parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, two_machines(&a, &b, port)).unwrap();
    let cfg = cfg.display().to_string();
    let proxy = Child::start(&["--config", &cfg], &[]).await;
    let s0 = scrape(&py, proxy.url("/metrics")).await;
    // Merged model lists (both asked, then a fresh merge): `*`, once per answer.
    for _ in 0..2 {
        let r = client().get(proxy.url("/api/tags")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        post_json(proxy.url("/api/chat"), &chat_with("llama3.2"))
            .await
            .status(),
        200
    );
    assert_eq!(
        post_json(proxy.url("/api/chat"), &chat_with("qwen"))
            .await
            .status(),
        200
    );
    let ps = client().get(proxy.url("/api/ps")).send().await.unwrap();
    assert_eq!(ps.status(), 200);
    let show = post_json(proxy.url("/api/show"), &json!({"model": "llama3.2"})).await;
    assert_eq!(show.status(), 200);
    let trace = client()
        .request(reqwest::Method::TRACE, proxy.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(trace.status(), 405);
    // `a` stops answering while believed awake: `b`, which has the model too, answers instead,
    // and the request counts for `b`.
    a.kill().await;
    assert_eq!(
        post_json(proxy.url("/api/chat"), &chat_with("llama3.2"))
            .await
            .status(),
        200
    );
    let s1 = scrape(&py, proxy.url("/metrics")).await;
    let req = |backend: &str, route: &str, status: &str| {
        let key = format!(
            "ollama_proxy_requests_total{{backend={backend},route={route},status={status}}}"
        );
        moved(&s0, &s1, &key)
    };
    let cache = |backend: &str, result: &str| {
        let key = format!("ollama_proxy_cache_answers_total{{backend={backend},result={result}}}");
        moved(&s0, &s1, &key)
    };
    let ttfb = |backend: &str| {
        let key = format!("ollama_proxy_time_to_first_byte_seconds_count{{backend={backend}}}");
        moved(&s0, &s1, &key)
    };
    assert_eq!(req("*", "tags", "2xx"), 2.0);
    assert_eq!(
        (req("a", "tags", "2xx"), req("b", "tags", "2xx")),
        (0.0, 0.0)
    );
    assert_eq!(cache("*", "fresh"), 2.0);
    assert_eq!((cache("a", "fresh"), cache("b", "fresh")), (0.0, 0.0));
    assert_eq!(req("*", "ps", "2xx"), 1.0);
    assert_eq!(req("a", "work", "2xx"), 1.0);
    assert_eq!(req("b", "work", "2xx"), 2.0);
    assert_eq!(req("*", "work", "2xx"), 0.0);
    assert_eq!((ttfb("a"), ttfb("b"), ttfb("*")), (1.0, 2.0, 0.0));
    assert_eq!(req("a", "show", "2xx"), 1.0);
    assert_eq!(cache("a", "miss"), 1.0);
    assert_eq!(req("*", "not_allowed", "4xx"), 1.0);
    assert_eq!(req("*", "proxy", "2xx"), 1.0);
    let upstream = "ollama_proxy_upstream_errors_total{backend=a,kind=connect}";
    assert_eq!(moved(&s0, &s1, upstream), 1.0);
    // Every request counted exactly once: summed over all labels, the nine requests.
    let requests = "ollama_proxy_requests_total";
    assert_eq!(total(&s1, requests) - total(&s0, requests), 9.0);
}

/// The Grafana dashboard in contrib/ names only metrics a scrape has, and selects every metric
/// that carries `backend` by it.
#[tokio::test]
async fn the_grafana_dashboard_uses_the_metrics_and_their_backend_label() {
    let Some(py) = common::py::python() else {
        return;
    };
    let fake = common::Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    let samples = scrape(&py, proxy.url("/metrics")).await;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana-dashboard.json"
    );
    let dashboard: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(!exprs.is_empty());
    for expr in &exprs {
        let names = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("ollama_proxy_"));
        for name in names {
            let with_labels: Vec<_> = samples
                .keys()
                .filter(|k| k.starts_with(&format!("{name}{{")))
                .collect();
            assert!(
                !with_labels.is_empty(),
                "{name} (in {expr}) is not in a scrape"
            );
            if with_labels.iter().all(|k| k.contains("backend=")) {
                let selector = format!("{name}{{backend=~\"$backend");
                assert!(
                    expr.contains(&selector),
                    "{expr} does not select {name} by backend"
                );
            }
        }
    }
    proxy.stop().await;
}
