//! Learning the desktop's MAC (see "Learning the MAC" in docs/behaviour.md): a desktop in a
//! network namespace whose card has its own MAC and which wakes only on a magic packet that carries
//! it; the proxy, given only OLLAMA_URL, learns that MAC from one answer and wakes the desktop with
//! it after a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use common::netns::Net;
use common::nshost::{Host, MAC};
use common::{client, get_json, post_json, Child};

const LIMIT: Duration = Duration::from_secs(10);

/// The proxy binary for `host` with only OLLAMA_URL (and short timeouts), its state in `state`.
async fn proxy(host: &Host, state: &std::path::Path, extra: &[&str]) -> Child {
    let url = format!("http://{}:11434", host.net.peer_ip);
    let mut args = vec![
        "--ollama-url",
        &url,
        "--connect-timeout",
        "1s",
        "--wake-timeout",
        "20s",
    ];
    args.extend_from_slice(extra);
    let env = [("XDG_STATE_HOME", state.to_str().unwrap())];
    Child::start(&args, &env).await
}

/// One request Ollama answers (the model list: nothing is cached yet, so it is forwarded).
async fn answered_once(proxy: &Child) {
    let resp = client().get(proxy.url("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

fn log(proxy: &Child) -> String {
    proxy.stderr.lock().unwrap().clone()
}

#[tokio::test]
async fn the_mac_learned_from_one_answer_wakes_the_desktop_after_a_restart() {
    let Some(net) = Net::create() else { return };
    let host = Arc::new(Host::new(net, true));
    host.wake_on_lan(Duration::from_millis(200));
    let state = tempfile::tempdir().unwrap();
    let (ip, iface, bcast) = (
        host.net.peer_ip.to_string(),
        host.net.host_if.clone(),
        host.net.broadcast.to_string(),
    );

    // Seen awake once: its MAC, interface and broadcast are learned and kept.
    let mut first = proxy(&host, state.path(), &[]).await;
    answered_once(&first).await;
    first
        .wait_log(&format!("learned MAC {MAC} of {ip} on {iface}"), LIMIT)
        .await;
    let status = get_json(first.url("/proxy/status")).await;
    let learned = &status["backends"][0]["learned"];
    assert_eq!(learned["mac"], MAC, "{status}");
    assert_eq!(learned["broadcast"], bcast.as_str(), "{status}");
    assert!(first.terminate().await.success());
    let file = state.path().join("ollama-proxy/cache.json");
    let kept: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept["learned"]["mac"], MAC, "{kept}");
    assert_eq!(kept["learned"]["interface"], iface.as_str(), "{kept}");
    assert_eq!(kept["learned"]["broadcast"], bcast.as_str(), "{kept}");
    assert!(kept["learned"]["learned_at"].as_u64().unwrap() > 0);
    assert_eq!(host.packets.load(Ordering::SeqCst), 0, "no wake was needed");

    // Restarted with no MAC, the desktop asleep: a chat wakes it with the learned MAC (it wakes
    // only on its own) and is answered once.
    host.sleep();
    let second = proxy(&host, state.path(), &[]).await;
    second.wait_log("from the cache file", LIMIT).await;
    let chat = json!({"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let resp = post_json(second.url("/api/chat"), &chat).await;
    assert_eq!(resp.status(), 200, "{}", log(&second));
    assert!(resp.text().await.unwrap().contains("\"done\":true"));
    assert!(
        host.packets.load(Ordering::SeqCst) >= 1,
        "no magic packet with its MAC arrived"
    );
    assert_eq!(host.power.count(&host.power.woken), 1);
    assert_eq!(host.state.log.count("/api/chat"), 1);
    second
        .wait_log(&format!("magic packet sent to {bcast}:9"), LIMIT)
        .await;
}

/// `ARGS…` run with `/proc` mounted `subset=pid` in a mount namespace of their own, as systemd's
/// `ProcSubset=pid` (the shipped unit) leaves it: only the process directories, no `/proc/net`.
const PROC_SUBSET_PID: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "sh",
    "-c",
    "mount -t proc -o subset=pid proc /proc && test ! -e /proc/net && exec \"$@\"",
    "sh",
];

/// Whether [`PROC_SUBSET_PID`] works here (root, a kernel with `subset=pid`); skips the caller
/// unless `OLLAMA_PROXY_REQUIRE_NETNS=1` demands it.
fn proc_subset_pid_works() -> bool {
    let ok = std::process::Command::new(PROC_SUBSET_PID[0])
        .args(&PROC_SUBSET_PID[1..])
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("OLLAMA_PROXY_REQUIRE_NETNS").as_deref() != Ok("1"),
            "cannot mount /proc with subset=pid in a mount namespace"
        );
        eprintln!("SKIPPED: cannot mount /proc with subset=pid in a mount namespace");
    }
    ok
}

#[tokio::test]
async fn the_mac_is_learned_under_the_units_proc_subset_pid() {
    if !proc_subset_pid_works() {
        return;
    }
    let Some(net) = Net::create() else { return };
    let host = Arc::new(Host::new(net, true));
    let state = tempfile::tempdir().unwrap();
    let url = format!("http://{}:11434", host.net.peer_ip);
    let env = [("XDG_STATE_HOME", state.path().to_str().unwrap())];
    let args = ["--ollama-url", &url, "--connect-timeout", "1s"];
    let proxy = Child::start_wrapped(PROC_SUBSET_PID, &args, &env).await;
    answered_once(&proxy).await;
    let ip = host.net.peer_ip;
    proxy
        .wait_log(&format!("learned MAC {MAC} of {ip}"), LIMIT)
        .await;
    assert!(!log(&proxy).contains("cannot learn"), "{}", log(&proxy));
}

#[tokio::test]
async fn an_address_added_without_brd_still_gives_the_subnets_broadcast() {
    let Some(net) = Net::create() else { return };
    net.readdress_without_brd();
    let host = Arc::new(Host::new(net, true));
    let state = tempfile::tempdir().unwrap();
    let proxy = proxy(&host, state.path(), &[]).await;
    answered_once(&proxy).await;
    proxy.wait_log("learned MAC", LIMIT).await;
    let status = get_json(proxy.url("/proxy/status")).await;
    let learned = &status["backends"][0]["learned"];
    // Not this machine's own address, which is what getifaddrs reports without `brd`.
    let bcast = host.net.broadcast.to_string();
    assert_eq!(learned["broadcast"], bcast.as_str(), "{status}");
}

/// A cache file in `dir` holding only a learned record of [`MAC`] for `ip` on `interface`.
fn file_with_record(dir: &std::path::Path, ip: &str, interface: &str, bcast: &str) -> String {
    let record = json!({
        "ip": ip, "mac": MAC, "interface": interface, "broadcast": bcast, "learned_at": 1_700_000_000u64,
    });
    common::cache_with_record(dir, record)
}

/// The learned record in the cache file `file`.
fn record_in(file: &str) -> Value {
    let kept: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    kept["learned"].clone()
}

#[tokio::test]
async fn a_record_for_another_address_than_the_urls_is_forgotten_at_start() {
    let fake = common::Fake::bind().await;
    let state = tempfile::tempdir().unwrap();
    let file = file_with_record(state.path(), "192.0.2.7", "eth0", "192.0.2.255");
    let mut proxy = Child::start(&["--ollama-url", &fake.url(), "--cache-file", &file], &[]).await;
    proxy
        .wait_log(
            "forgot the learned MAC 02:00:5e:10:20:30 of 192.0.2.7",
            LIMIT,
        )
        .await;
    let status = get_json(proxy.url("/proxy/status")).await;
    assert!(status["backends"][0]["learned"].is_null(), "{status}");
    assert!(
        !log(&proxy).contains("magic packets go to the learned MAC"),
        "{}",
        log(&proxy)
    );
    assert!(proxy.terminate().await.success());
    assert!(record_in(&file).is_null());
}

#[tokio::test]
async fn a_desktop_now_behind_a_router_has_its_record_forgotten() {
    let Some(router) = Net::create() else { return };
    let Some(far) = router.behind_router() else {
        return;
    };
    let host = Arc::new(Host::new(far, true));
    let state = tempfile::tempdir().unwrap();
    let ip = host.net.peer_ip.to_string();
    // Learned when it was on this machine's link, kept in the file.
    let file = file_with_record(
        state.path(),
        &ip,
        &router.host_if,
        &host.net.broadcast.to_string(),
    );
    let mut proxy = proxy(&host, state.path(), &["--cache-file", &file]).await;
    proxy.wait_log("from the cache file", LIMIT).await;
    answered_once(&proxy).await;
    // The first look-up says why it is not learned; the one that confirms it, CONFIRM (20 s)
    // later, forgets the record.
    proxy
        .wait_log("not on a directly connected subnet", LIMIT)
        .await;
    assert!(
        !log(&proxy).contains("forgot the learned MAC"),
        "{}",
        log(&proxy)
    );
    proxy
        .wait_log(
            &format!("forgot the learned MAC {MAC} of {ip}"),
            LIMIT + Duration::from_secs(20),
        )
        .await;
    let text = log(&proxy);
    let line = text
        .lines()
        .find(|l| l.contains("forgot the learned MAC"))
        .unwrap();
    assert!(
        line.contains("WARN") && line.contains("not on a directly connected subnet"),
        "{line}"
    );
    let status = get_json(proxy.url("/proxy/status")).await;
    assert!(status["backends"][0]["learned"].is_null(), "{status}");
    assert!(proxy.terminate().await.success());
    assert!(record_in(&file).is_null());
    drop(host);
    drop(router);
}

#[tokio::test]
async fn a_configured_mac_that_differs_is_warned_about_naming_both_and_kept() {
    let Some(net) = Net::create() else { return };
    let host = Arc::new(Host::new(net, true));
    let state = tempfile::tempdir().unwrap();
    let wrong = "02:00:00:00:00:99";
    let bcast = host.net.broadcast.to_string();
    let proxy = proxy(
        &host,
        state.path(),
        &["--mac", wrong, "--broadcast", &bcast],
    )
    .await;
    answered_once(&proxy).await;
    proxy.wait_log("differs from the MAC", LIMIT).await;
    let text = log(&proxy);
    let line = text
        .lines()
        .find(|l| l.contains("differs from the MAC"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains(wrong) && line.contains(MAC), "{line}");
    assert!(line.contains("keeping the configured one"), "{line}");
    // The learned MAC is never used in its place.
    assert!(
        !text.contains("magic packets go to the learned MAC"),
        "{text}"
    );
}

#[tokio::test]
async fn a_desktop_behind_a_router_is_never_learned() {
    let Some(router) = Net::create() else { return };
    let Some(far) = router.behind_router() else {
        return;
    };
    let host = Arc::new(Host::new(far, true));
    let state = tempfile::tempdir().unwrap();
    let proxy = proxy(&host, state.path(), &[]).await;
    answered_once(&proxy).await;
    proxy
        .wait_log("is not on a directly connected subnet", LIMIT)
        .await;
    let text = log(&proxy);
    let line = text
        .lines()
        .find(|l| l.contains("not on a directly connected subnet"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&router.peer_ip.to_string()),
        "names the router: {line}"
    );
    assert!(!text.contains("learned MAC"), "{text}");
    let status = get_json(proxy.url("/proxy/status")).await;
    assert!(status["backends"][0]["learned"].is_null(), "{status}");
    drop(host);
    drop(router);
}
