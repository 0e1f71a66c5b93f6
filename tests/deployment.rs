//! Deployment: systemd readiness, graceful shutdown of the real binary, and the unit, Dockerfile
//! and compose files checked by their own tools (see "Deployment" and "Signals and shutdown" in
//! docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use common::sleeping::SleepingHost;
use common::{bin, client, post_json, Child, Fake};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tool the checks need: `None` (skip, printed) unless `OLLAMA_PROXY_REQUIRE_TOOLS=1` (CI).
fn tool(path: &Path) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_path_buf());
    }
    let why = format!("{} is not installed", path.display());
    assert!(
        std::env::var("OLLAMA_PROXY_REQUIRE_TOOLS").as_deref() != Ok("1"),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    None
}

fn recv_notify(sock: &UnixDatagram) -> Option<String> {
    let mut buf = [0u8; 1024];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn ready_is_sent_only_after_the_socket_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let notify = path.to_str().unwrap();

    // A port already taken: the proxy cannot bind, exits 1, and never says READY.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = Command::new(bin())
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--ollama-url",
            "http://10.9.9.9:11434",
        ])
        .env_clear()
        .env("NOTIFY_SOCKET", notify)
        .env("XDG_STATE_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    sock.set_nonblocking(true).unwrap();
    assert_eq!(
        recv_notify(&sock),
        None,
        "READY sent without a bound socket"
    );

    // A free port: READY arrives, and at that moment the port already accepts connections.
    sock.set_nonblocking(false).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut proxy = Child::start(
        &["--ollama-url", "http://10.9.9.9:11434"],
        &[("NOTIFY_SOCKET", notify)],
    )
    .await;
    let msg = recv_notify(&sock).expect("no READY");
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(
        msg.contains(&format!("STATUS=listening on {}", proxy.addr)),
        "{msg}"
    );
    std::net::TcpStream::connect(proxy.addr).unwrap();
    assert_eq!(
        client()
            .get(proxy.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let status = proxy.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(recv_notify(&sock).unwrap().contains("STOPPING=1"));
}

#[tokio::test]
async fn sigterm_lets_streams_finish_and_answers_held_requests_503() {
    // A proxy with a stream in flight.
    let fake = Fake::bind().await;
    fake.knobs()
        .chunk_delay_ms
        .store(200, std::sync::atomic::Ordering::SeqCst);
    fake.knobs()
        .chunks
        .store(8, std::sync::atomic::Ordering::SeqCst);
    let mut streaming = Child::start(&["--ollama-url", &fake.url()], &[]).await;
    let mut resp = post_json(streaming.url("/api/chat"), &json!({"model": "m"})).await;
    let mut body = resp.chunk().await.unwrap().unwrap().to_vec();

    // A proxy holding a request for a host that never wakes.
    let host = SleepingHost::gated(Duration::ZERO).await;
    let args = host.wake_args();
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut holding = Child::start(&argv, &[]).await;
    let url = holding.url("/api/chat");
    let held = tokio::spawn(async move { post_json(url, &json!({"model": "m"})).await });
    common::wait_held(&holding.url("/health"), 1, Duration::from_secs(5)).await;

    let (s1, s2) = tokio::join!(streaming.terminate(), holding.terminate());
    assert!(s1.success() && s2.success(), "{s1:?} {s2:?}");

    // The stream finished completely and cleanly.
    while let Some(c) = resp.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.lines().count(), 9, "{text}");
    assert!(text.lines().last().unwrap().contains("\"done\":true"));
    // The held request got 503 with Retry-After.
    let resp = held.await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert!(resp.text().await.unwrap().contains("shutting down"));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(streaming.addr).is_err());
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool(Path::new("/usr/bin/systemd-analyze")) else {
        return;
    };
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = std::fs::read_to_string(root().join("systemd/ollama-proxy.service")).unwrap();
    assert!(
        unit.contains("Type=notify")
            && unit.contains("DynamicUser=yes")
            && unit.contains("StateDirectory=")
    );
    // Learning the MAC lists the interfaces over netlink (getifaddrs): a sandbox without
    // AF_NETLINK makes every look-up fail (see "Learning the MAC" in docs/behaviour.md).
    let families = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .unwrap();
    assert!(
        families.split_whitespace().any(|f| f == "AF_NETLINK"),
        "{families}"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ollama-proxy.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/ollama-proxy", bin())).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let text = common::output_text(&out);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}

#[test]
fn env_example_lists_every_option() {
    let env = std::fs::read_to_string(root().join("systemd/ollama-proxy.env")).unwrap();
    let help = Command::new(bin())
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let vars: Vec<&str> = help
        .split("[env: ")
        .skip(1)
        .map(|s| s.split([']', '=']).next().unwrap())
        .collect();
    assert!(vars.len() >= 19, "{vars:?}");
    for var in vars {
        assert!(
            env.contains(&format!("{var}=")),
            "{var} missing from systemd/ollama-proxy.env"
        );
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = common::py::venv_bin("hadolint") else {
        return;
    };
    let out = Command::new(hadolint)
        .arg(root().join("Dockerfile"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(text.contains("HEALTHCHECK --interval=30s --timeout=10s --retries=3"));
    assert!(text.contains("EXPOSE 11434") && text.contains("USER 65534"));
}

#[test]
fn compose_file_parses_and_uses_host_networking() {
    let Some(python) = common::py::python() else {
        return;
    };
    let script = "import sys, yaml; d = yaml.safe_load(open(sys.argv[1])); s = d['services']['ollama-proxy']; \
                  assert s['network_mode'] == 'host', s; assert any(v.endswith(':/data') for v in s['volumes']); \
                  e = s['environment']; assert e['CACHE_FILE'].startswith('/data/') and 'OLLAMA_URL' in e and 'WOL_MAC' in e; print('ok')";
    let out = Command::new(python)
        .args(["-c", script])
        .arg(root().join("docker-compose.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
