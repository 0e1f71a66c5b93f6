//! Two machines, each in its own network namespace: a desktop that sleeps (`big:70b` and
//! `small:1b`) and an always-on mini PC (`small:1b`). A request goes to a machine that has its
//! model, and only that machine is woken (see "Routing" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::netns::Net;
use common::nshost::Host;
use common::{client, get_json, Proxy};

const DESKTOP_MAC: &str = "02:00:5e:10:30:01";
const MINIPC_MAC: &str = "02:00:5e:10:30:02";

fn config(desktop: &Host, minipc: &Host) -> String {
    format!(
        r#"
[[backend]]
name = "desktop"
url = "http://{}:11434"
mac = "{DESKTOP_MAC}"
broadcast = "{}"
wol_port = 9
priority = 1
connect_timeout = "1s"
wake_timeout = "20s"

[[backend]]
name = "minipc"
url = "http://{}:11434"
always_on = true
priority = 2
connect_timeout = "1s"
"#,
        desktop.net.peer_ip, desktop.net.broadcast, minipc.net.peer_ip
    )
}

struct Setup {
    desktop: Arc<Host>,
    minipc: Arc<Host>,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

/// Both machines awake; the proxy has seen both model lists once.
async fn setup() -> Option<Setup> {
    let desktop_net = Net::create()?;
    let minipc_net = Net::create()?;
    let desktop = Arc::new(Host::machine(
        desktop_net,
        true,
        DESKTOP_MAC,
        &["big:70b", "small:1b"],
    ));
    let minipc = Arc::new(Host::machine(minipc_net, true, MINIPC_MAC, &["small:1b"]));
    desktop.wake_on_lan(Duration::ZERO);
    minipc.wake_on_lan(Duration::ZERO);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config(&desktop, &minipc)).unwrap();
    common::logs();
    let path = path.to_str().unwrap().to_string();
    let proxy = Proxy::start(&["--config", &path, "--wake-interval", "1h"]).await;
    let tags = get_json(proxy.url("/api/tags")).await;
    assert_eq!(names(&tags), ["big:70b", "small:1b"], "{tags}");
    Some(Setup {
        desktop,
        minipc,
        proxy,
        _dir: dir,
    })
}

fn names(tags: &Value) -> Vec<String> {
    let mut names: Vec<String> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

async fn chat(proxy: &Proxy, model: &str, seq: &str) -> u16 {
    client()
        .post(proxy.url("/api/chat"))
        .header("x-seq", seq)
        .json(&json!({"model": model, "stream": false, "messages": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The paths a machine's Ollama was asked, in order.
fn paths(host: &Host) -> Vec<String> {
    host.state.log.all().into_iter().map(|r| r.path).collect()
}

fn arrivals(host: &Host) -> Vec<String> {
    host.state.log.arrivals.lock().unwrap().clone()
}

#[tokio::test]
async fn the_merged_list_comes_from_the_cache_while_both_sleep() {
    let Some(s) = setup().await else { return };
    s.desktop.sleep();
    s.minipc.sleep();
    let start = Instant::now();
    let tags = get_json(s.proxy.url("/api/tags")).await;
    assert_eq!(names(&tags), ["big:70b", "small:1b"]);
    let models = get_json(s.proxy.url("/v1/models")).await;
    assert_eq!(models["data"].as_array().unwrap().len(), 2, "{models}");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(s.desktop.packets.load(Ordering::SeqCst), 0);
    assert_eq!(s.minipc.packets.load(Ordering::SeqCst), 0);
    let health = s.proxy.health().await;
    let backends = health["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2, "{health}");
    assert_eq!(backends[0]["name"], "desktop");
    assert_eq!(backends[1]["name"], "minipc");
    s.proxy.stop().await;
}

#[tokio::test]
async fn each_model_goes_to_a_machine_that_has_it_and_only_that_one_wakes() {
    let Some(s) = setup().await else { return };
    s.desktop.sleep();
    // The mini PC has small:1b: the sleeping desktop is not woken for it.
    assert_eq!(chat(&s.proxy, "small:1b", "small-0").await, 200);
    assert_eq!(arrivals(&s.minipc), ["small-0"]);
    assert_eq!(s.desktop.packets.load(Ordering::SeqCst), 0);
    // Only the desktop has big:70b: it is woken, and the request replayed once.
    assert_eq!(chat(&s.proxy, "big:70b", "big-0").await, 200);
    assert!(s.desktop.packets.load(Ordering::SeqCst) > 0);
    assert_eq!(s.minipc.packets.load(Ordering::SeqCst), 0);
    assert_eq!(arrivals(&s.desktop), ["big-0"]);
    s.proxy.stop().await;
}

#[tokio::test]
async fn while_the_desktop_boots_the_mini_pc_answers_at_once() {
    let Some(s) = setup().await else { return };
    s.desktop.sleep();
    s.desktop.resume_ms.store(1500, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for i in 0..20 {
        for model in ["big:70b", "small:1b"] {
            let url = s.proxy.url("/api/chat");
            let seq = format!("{model}-{i}");
            tasks.push(tokio::spawn(async move {
                let resp = client()
                    .post(url)
                    .header("x-seq", &seq)
                    .json(&json!({"model": model, "stream": false, "messages": []}))
                    .send()
                    .await
                    .unwrap();
                (seq, resp.status().as_u16(), Instant::now())
            }));
        }
    }
    let mut small_done = Vec::new();
    let mut big_done = Vec::new();
    for t in tasks {
        let (seq, status, at) = t.await.unwrap();
        assert_eq!(status, 200, "{seq}");
        if seq.starts_with("small") {
            small_done.push(at);
        } else {
            big_done.push(at);
        }
    }
    // Every small request was answered before the first big one: none waited for the desktop.
    let last_small = small_done.iter().max().unwrap();
    let first_big = big_done.iter().min().unwrap();
    assert!(
        last_small < first_big,
        "a small request waited for the desktop"
    );
    let on_minipc: HashSet<String> = arrivals(&s.minipc).into_iter().collect();
    let on_desktop: HashSet<String> = arrivals(&s.desktop).into_iter().collect();
    assert_eq!(arrivals(&s.minipc).len(), 20, "lost or duplicated");
    assert_eq!(arrivals(&s.desktop).len(), 20, "lost or duplicated");
    assert!(on_minipc.iter().all(|a| a.starts_with("small")));
    assert!(on_desktop.iter().all(|a| a.starts_with("big")));
    assert_eq!((on_minipc.len(), on_desktop.len()), (20, 20));
    assert_eq!(s.minipc.packets.load(Ordering::SeqCst), 0);
    s.proxy.stop().await;
}

#[tokio::test]
async fn official_python_clients_list_and_chat_across_two_machines() {
    let Some(py) = common::py::python() else {
        return;
    };
    let Some(s) = setup().await else { return };
    s.desktop.sleep();
    let out = common::py::run_clients(&py, &s.proxy.url(""), &["--two-machines"]).await;
    eprintln!("{out}");
    assert!(out.contains("openai chat big:70b"), "{out}");
    // The ollama client's chat went to the mini PC, the OpenAI one woke the desktop.
    let (minipc, desktop) = (paths(&s.minipc), paths(&s.desktop));
    assert!(minipc.contains(&"/api/chat".to_string()), "{minipc:?}");
    assert!(
        !minipc.contains(&"/v1/chat/completions".to_string()),
        "{minipc:?}"
    );
    assert!(
        desktop.contains(&"/v1/chat/completions".to_string()),
        "{desktop:?}"
    );
    assert!(!desktop.contains(&"/api/chat".to_string()), "{desktop:?}");
    assert!(s.desktop.packets.load(Ordering::SeqCst) > 0);
    assert_eq!(s.minipc.packets.load(Ordering::SeqCst), 0);
    s.proxy.stop().await;
}
