//! Putting the host back to sleep (see "Sleep" in docs/behaviour.md), with the real binary and a
//! host in a network namespace that goes silent when a sleep method reaches it: a sleep-on-lan
//! packet (the MAC reversed), `GET /sleep` on port 8009, or a command.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use common::netns::Net;
use common::nshost::Host;
use common::{client, get_json, strs, Child};

/// SLEEP_AFTER in these tests.
const AFTER: Duration = Duration::from_secs(2);
/// Generous bound for anything that should happen within a few seconds on a loaded machine.
const LIMIT: Duration = Duration::from_secs(40);

/// A host awake with Ollama running, answering magic packets, sleep packets and `GET /sleep`.
fn host() -> Option<Arc<Host>> {
    let host = Arc::new(Host::new(Net::create()?, true));
    host.wake_on_lan(Duration::ZERO);
    host.serve_sleep_url();
    Some(host)
}

/// The proxy binary for `host` with SLEEP_AFTER=2s and MIN_AWAKE=0 (from the environment) and
/// `extra` flags.
async fn proxy(host: &Host, extra: &[&str]) -> Child {
    let mut args = host.proxy_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let path = std::env::var("PATH").unwrap_or_default();
    let env = [
        ("SLEEP_AFTER", "2s"),
        ("MIN_AWAKE", "0"),
        ("PATH", path.as_str()),
    ];
    Child::start(&strs(&args), &env).await
}

fn sleep_url(host: &Host) -> String {
    format!("http://{}:8009/sleep", host.net.peer_ip)
}

async fn chat(proxy: &Child, seq: &str) -> reqwest::Response {
    client()
        .post(proxy.url("/api/chat"))
        .header("x-seq", seq)
        .json(&json!({"model": "llama3.2", "stream": false}))
        .send()
        .await
        .unwrap()
}

/// Waits (bounded) until /health says the backend is `state`.
async fn wait_state(proxy: &Child, state: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let h = get_json(proxy.url("/health")).await;
        if h["backend"] == state {
            return h;
        }
        assert!(tokio::time::Instant::now() < deadline, "never {state}: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until the sleep command wrote `record`, then does what it would do on a real
/// desktop (the host goes silent) and waits until the proxy finds it asleep.
async fn after_the_command(host: &Host, proxy: &Child, record: &std::path::Path) {
    let deadline = Instant::now() + LIMIT;
    while !record.exists() {
        assert!(Instant::now() < deadline, "the command never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    host.sleep();
    wait_state(proxy, "asleep", LIMIT).await;
}

fn slept_at(host: &Host) -> Instant {
    host.power.slept_at.lock().unwrap().unwrap()
}

fn count(c: &std::sync::atomic::AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

#[tokio::test]
async fn one_sleep_packet_after_the_last_answer_then_asleep_and_quiet() {
    let Some(host) = host() else { return };
    let proxy = proxy(&host, &["--sleep-packet"]).await;
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    let answered = Instant::now();
    host.power
        .wait_for("the sleep", LIMIT, |p| p.slept_at.lock().unwrap().is_some())
        .await;
    wait_state(&proxy, "asleep", LIMIT).await;
    let idle = slept_at(&host).duration_since(answered);
    assert!(
        idle >= AFTER - Duration::from_millis(100),
        "slept {idle:?} after the answer"
    );
    proxy.wait_log(" asleep backend=default", LIMIT).await;
    let log = proxy.stderr.lock().unwrap().clone();
    let line = log
        .lines()
        .find(|l| l.contains(" asleep backend="))
        .unwrap();
    for field in ["idle_s=", "awake_s=", "methods=sleep packet"] {
        assert!(line.contains(field), "{line}");
    }
    // Asleep stays asleep: no second sleep, no wake, nothing sent for a while.
    let packets = count(&host.power.sleep_packets);
    assert_eq!(packets, 3, "one burst of sleep packets");
    tokio::time::sleep(AFTER * 3).await;
    assert_eq!(count(&host.power.sleeps), 1);
    assert_eq!(count(&host.power.sleep_packets), packets);
    assert_eq!(count(&host.power.woken), 0);
    let h = get_json(proxy.url("/health")).await;
    assert_eq!(
        (h["backend"].as_str(), h["wakes"].as_u64()),
        (Some("asleep"), Some(0))
    );
    // The next request wakes it at once (no connect timeout first) and is answered.
    let started = Instant::now();
    assert_eq!(chat(&proxy, "again").await.status(), 200);
    assert_eq!(count(&host.power.woken), 1);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        proxy.stderr.lock().unwrap().contains("waking Ollama"),
        "woken by a wake cycle"
    );
}

#[tokio::test]
async fn a_five_second_stream_is_never_cut_and_the_sleep_comes_after_it() {
    let Some(host) = host() else { return };
    host.state.knobs.chunks.store(10, Ordering::SeqCst);
    host.state.knobs.chunk_delay_ms.store(500, Ordering::SeqCst);
    let proxy = proxy(&host, &["--sleep-packet"]).await;
    let started = Instant::now();
    let resp = client()
        .post(proxy.url("/api/generate"))
        .json(&json!({"model": "llama3.2", "prompt": "long"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let ended = Instant::now();
    assert!(
        ended - started >= Duration::from_millis(4500),
        "{:?}",
        ended - started
    );
    assert_eq!(body.lines().count(), 11, "{body}");
    assert!(body.lines().last().unwrap().contains("\"done\":true"));
    assert_eq!(count(&host.power.sleeps), 0, "slept during the stream");
    host.power
        .wait_for("the sleep", LIMIT, |p| p.slept_at.lock().unwrap().is_some())
        .await;
    let after = slept_at(&host).duration_since(ended);
    assert!(
        after >= AFTER - Duration::from_millis(100),
        "slept {after:?} after the stream ended"
    );
    assert_eq!(host.state.log.cancelled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_model_that_has_not_expired_holds_the_sleep_off() {
    let Some(host) = host() else { return };
    let hold = Duration::from_secs(6);
    let expires = SystemTime::now() + hold;
    let until = Instant::now() + hold;
    *host.state.knobs.ps_expires_at.lock().unwrap() =
        Some(humantime::format_rfc3339_millis(expires).to_string());
    let proxy = proxy(&host, &["--sleep-url", &sleep_url(&host)]).await;
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    host.power
        .wait_for("the sleep", LIMIT, |p| p.slept_at.lock().unwrap().is_some())
        .await;
    assert!(
        slept_at(&host) >= until - Duration::from_millis(100),
        "slept while a model was loaded"
    );
    assert!(
        host.state.log.count("/api/ps") >= 2,
        "asked, held off, asked again"
    );
    wait_state(&proxy, "asleep", LIMIT).await;
}

#[tokio::test]
async fn ps_is_not_asked_before_the_machine_is_idle() {
    let Some(host) = host() else { return };
    let proxy = proxy(
        &host,
        &["--sleep-url", &sleep_url(&host), "--min-awake", "1h"],
    )
    .await;
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    // Idle for longer than SLEEP_AFTER, but MIN_AWAKE is not reached: nothing is sent.
    tokio::time::sleep(AFTER * 2).await;
    assert_eq!(host.state.log.count("/api/ps"), 0);
    assert_eq!(count(&host.power.sleep_calls), 0);
    assert_eq!(get_json(proxy.url("/health")).await["backend"], "awake");
}

#[tokio::test]
async fn a_request_just_after_the_sleep_is_held_woken_after_silence_and_answered_once() {
    let Some(host) = host() else { return };
    // The machine takes a second to suspend after it was told to.
    host.power.sleep_delay_ms.store(1000, Ordering::SeqCst);
    let proxy = proxy(&host, &["--sleep-url", &sleep_url(&host)]).await;
    assert_eq!(chat(&proxy, "first").await.status(), 200);
    host.power
        .wait_for("the sleep call", LIMIT, |p| count(&p.sleep_calls) == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = {
        let url = proxy.url("/api/chat");
        tokio::spawn(async move {
            client()
                .post(url)
                .header("x-seq", "late")
                .json(&json!({"model": "llama3.2", "stream": false}))
                .send()
                .await
                .unwrap()
        })
    };
    let resp = late.await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(count(&host.power.sleeps), 1);
    assert_eq!(count(&host.power.woken), 1, "woken once");
    let (slept, woken) = (
        slept_at(&host),
        host.power.woken_at.lock().unwrap().unwrap(),
    );
    assert!(woken > slept, "woken before it went silent");
    assert_eq!(*host.state.log.arrivals.lock().unwrap(), ["first", "late"]);
    assert_eq!(get_json(proxy.url("/health")).await["wakes"], 1);
}

#[tokio::test]
async fn a_host_that_ignores_the_sleep_gets_one_retry_then_warnings_only() {
    let Some(host) = host() else { return };
    host.power.ignore_sleep.store(true, Ordering::SeqCst);
    let proxy = proxy(
        &host,
        &["--sleep-url", &sleep_url(&host), "--sleep-confirm", "2s"],
    )
    .await;
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    host.power
        .wait_for("the retry", LIMIT, |p| count(&p.sleep_calls) == 2)
        .await;
    proxy.wait_log("not trying again", LIMIT).await;
    proxy.wait_log("idle, but not put to sleep", LIMIT).await;
    let log = proxy.stderr.lock().unwrap().clone();
    let warn = log
        .lines()
        .find(|l| l.contains("did not go silent"))
        .unwrap();
    assert!(
        warn.contains("WARN") && warn.contains("sleep URL") && warn.contains("answered 200"),
        "{warn}"
    );
    // Never a loop: no third sleep however long it stays idle.
    tokio::time::sleep(AFTER * 4).await;
    assert_eq!(count(&host.power.sleep_calls), 2);
    assert_eq!(get_json(proxy.url("/health")).await["backend"], "awake");
    assert_eq!(
        proxy
            .stderr
            .lock()
            .unwrap()
            .matches("idle, but not put to sleep")
            .count(),
        1
    );
}

#[tokio::test]
async fn metadata_never_delays_or_causes_a_sleep_or_a_wake() {
    let Some(host) = host() else { return };
    let proxy = proxy(&host, &["--sleep-packet"]).await;
    // Cached while awake.
    for path in ["/api/tags", "/api/version"] {
        assert_eq!(
            client().get(proxy.url(path)).send().await.unwrap().status(),
            200
        );
    }
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    let answered = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = {
        let (stop, base) = (stop.clone(), proxy.url(""));
        tokio::spawn(async move {
            let mut polls = 0;
            while !stop.is_cancelled() {
                for path in ["/api/tags", "/api/version", "/api/ps", "/", "/v1/models"] {
                    let resp = client().get(format!("{base}{path}")).send().await.unwrap();
                    assert_eq!(resp.status(), 200, "{path}");
                    polls += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            polls
        })
    };
    host.power
        .wait_for("the sleep", LIMIT, |p| p.slept_at.lock().unwrap().is_some())
        .await;
    let idle = slept_at(&host).duration_since(answered);
    assert!(
        idle < AFTER + Duration::from_secs(8),
        "metadata delayed the sleep: {idle:?}"
    );
    wait_state(&proxy, "asleep", LIMIT).await;
    // Asleep, metadata keeps coming: answered from the cache, nothing wakes the host.
    tokio::time::sleep(AFTER * 2).await;
    stop.cancel();
    assert!(poller.await.unwrap() > 20);
    assert_eq!(count(&host.power.woken), 0);
    assert_eq!(
        count(&host.packets),
        3,
        "only the first request's early wake burst"
    );
    let h = get_json(proxy.url("/health")).await;
    assert_eq!(
        (h["backend"].as_str(), h["wakes"].as_u64()),
        (Some("asleep"), Some(0))
    );
    assert_eq!(count(&host.power.sleeps), 1);
}

#[tokio::test]
async fn a_sleep_command_runs_without_a_shell_with_its_arguments_split() {
    let Some(host) = host() else { return };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("suspend.sh");
    let record = dir.path().join("args");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > {0}.tmp && mv {0}.tmp {0}\necho suspending now\n",
            record.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let command = format!(
        "{} -o BatchMode=yes 'user@desk top' \"sudo systemctl\" suspend\\ now '$HOME;true'",
        script.display()
    );
    let proxy = proxy(&host, &["--sleep-command", &command]).await;
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    after_the_command(&host, &proxy, &record).await;
    let args = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "-o",
            "BatchMode=yes",
            "user@desk top",
            "sudo systemctl",
            "suspend now",
            "$HOME;true"
        ]
    );
    proxy.wait_log(" asleep backend=default", LIMIT).await;
    let log = proxy.stderr.lock().unwrap().clone();
    assert!(
        log.contains("suspending now"),
        "the output goes to the log: {log}"
    );
    assert!(
        log.contains("sleep command: suspend.sh exited 0") || log.contains("exited 0"),
        "{log}"
    );
}

#[tokio::test]
async fn the_sleep_command_line_waits_until_the_host_is_silent() {
    let Some(host) = host() else { return };
    host.power.sleep_delay_ms.store(500, Ordering::SeqCst);
    let mut args = host.proxy_args();
    args.extend(["sleep", "--sleep-packet", "--wait"].map(String::from));
    // `sleep` comes first, its flags after.
    let sub = args.split_off(args.len() - 3);
    let mut argv = vec![sub[0].clone()];
    argv.extend(args);
    argv.extend(sub[1..].iter().cloned());
    let out = tokio::process::Command::new(common::bin())
        .args(&argv)
        .env_clear()
        .output()
        .await
        .unwrap();
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sleep packet: sent to"), "{text}");
    assert!(text.contains("silent after"), "{text}");
    assert_eq!(count(&host.power.sleeps), 1);
    assert!(host.asleep.load(Ordering::SeqCst));
}

/// The status page's "Sleep now" (see "Monitoring"): refused without the admin token; with it
/// the sleep command runs exactly once, the sleep is recorded with cause `manual`, and the sleeps
/// metric moves by one.
#[tokio::test]
async fn the_sleep_button_runs_the_sleep_command_once_with_the_admin_token() {
    let Some(host) = host() else { return };
    let Some(py) = common::py::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("suspend.sh");
    let record = dir.path().join("runs");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho run >> {}\n", record.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut args = host.proxy_args();
    args.extend(["--sleep-command".into(), script.display().to_string()]);
    // SLEEP_AFTER gives the machine its sleeper; an hour keeps the idle watch out of the way.
    let token = "sleep-admin-token";
    let env = [("SLEEP_AFTER", "1h"), ("ADMIN_TOKEN", token)];
    let proxy = Child::start(&strs(&args), &env).await;
    assert_eq!(chat(&proxy, "work").await.status(), 200);
    wait_state(&proxy, "awake", LIMIT).await;
    // The first request sent a wake alongside (WAKE_INTERVAL): once it has arrived, it cannot
    // wake the host after its sleep.
    proxy.wait_log("magic packet sent to", LIMIT).await;
    let deadline = Instant::now() + LIMIT;
    while count(&host.packets) == 0 {
        assert!(Instant::now() < deadline, "no magic packet");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sleep = proxy.url("/proxy/backends/default/sleep");
    let press = |token: &str| client().post(&sleep).bearer_auth(token).send();
    let r = client().post(&sleep).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(press("wrong-token-123456").await.unwrap().status(), 403);
    assert!(!record.exists(), "the sleep command ran without the token");
    let s0 = common::py::scrape(&py, proxy.url("/metrics")).await;
    assert_eq!(press(token).await.unwrap().status(), 202);
    after_the_command(&host, &proxy, &record).await;
    proxy.wait_log(" asleep backend=default", LIMIT).await;
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "run\n");
    let status = get_json(proxy.url("/proxy/status")).await;
    let events = status["backends"][0]["events"].as_array().unwrap();
    let sent: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "sleep_sent")
        .collect();
    assert_eq!(sent.len(), 1, "{status}");
    assert_eq!(sent[0]["cause"], "manual");
    assert_eq!(sent[0]["detail"], "sleep command");
    assert_eq!(events[0]["kind"], "asleep", "{status}");
    let s1 = common::py::scrape(&py, proxy.url("/metrics")).await;
    let key = "ollama_proxy_sleeps_total{backend=default,method=sleep command,outcome=asleep}";
    assert_eq!(common::py::moved(&s0, &s1, key), 1.0);
    // Asleep now: a second press does not apply.
    assert_eq!(press(token).await.unwrap().status(), 409);
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "run\n");
}
