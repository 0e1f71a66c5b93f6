//! `ollama-proxy wake`, `health` and start-up validation, run as the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query;
use axum::Json;
use md5::{Digest, Md5};
use serde_json::json;
use tokio::net::{TcpListener, UdpSocket};

use common::{output_text as text, run_bin as run, Fake, Proxy};

fn expected_packet(mac: [u8; 6], secureon: Option<[u8; 6]>) -> Vec<u8> {
    let mut p = vec![0xff; 6];
    for _ in 0..16 {
        p.extend_from_slice(&mac);
    }
    if let Some(s) = secureon {
        p.extend_from_slice(&s);
    }
    p
}

async fn recv(sock: &UdpSocket) -> Vec<u8> {
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("no packet")
        .unwrap();
    buf[..n].to_vec()
}

#[tokio::test]
async fn wake_sends_the_magic_packet() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let out = run(
        &[
            "wake",
            "--mac",
            "AA-BB-CC-DD-EE-0F",
            "--broadcast",
            "127.0.0.1",
            "--wol-port",
            &port,
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("127.0.0.1:{port}")),
        "{}",
        text(&out)
    );
    let packet = recv(&sock).await;
    assert_eq!(packet.len(), 102);
    assert_eq!(
        packet,
        expected_packet([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f], None)
    );
}

#[tokio::test]
async fn wake_reads_the_environment_and_flags_win() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let out = run(
        &["wake", "--wol-port", &port],
        &[
            ("WOL_MAC", "aabb.ccdd.eeff"),
            ("WOL_BROADCAST", "127.0.0.1"),
            ("WOL_PORT", "1"),
            ("WOL_SECUREON", "01:02:03:04:05:06"),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("01:02:03:04:05:06"),
        "secret printed: {}",
        text(&out)
    );
    let packet = recv(&sock).await;
    assert_eq!(
        packet,
        expected_packet(
            [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff],
            Some([1, 2, 3, 4, 5, 6])
        )
    );
}

#[tokio::test]
async fn bad_configuration_exits_2_with_one_line() {
    let out = run(
        &[
            "--mac",
            "zz:00:00:00:00:00",
            "--ollama-url",
            "http://10.9.9.9:11434",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--mac") && err.contains("WOL_MAC") && err.contains("zz:00:00:00:00:00"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let out = run(
        &["--port", "11434", "--ollama-url", "http://127.0.0.1:11434"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("points back"),
        "{}",
        text(&out)
    );

    let out = run(
        &[],
        &[
            ("WOL_MAC", "010:02:03:04:05:6"),
            ("OLLAMA_URL", "http://10.9.9.9:11434"),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("WOL_MAC"));

    let out = run(
        &["wake", "--mac", "aa:bb:cc:dd:ee:ff", "--secureon", "nothex"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        !text(&out).contains("nothex"),
        "secret printed: {}",
        text(&out)
    );

    let out = run(
        &["--help"],
        &[
            ("WAKE_KEY", "hunter2"),
            ("WOL_SECUREON", "01:02:03:04:05:06"),
        ],
    )
    .await;
    assert!(out.status.success());
    assert!(!text(&out).contains("hunter2") && !text(&out).contains("01:02:03:04:05:06"));
}

/// Settings that cannot work (zero, or a duration past the one-year maximum) stop start-up: exit 2,
/// one line naming the flag and its variable; before this they panicked (exit 101) or hung.
#[tokio::test]
async fn unworkable_settings_exit_2_naming_flag_and_variable() {
    let ollama = ["--ollama-url", "http://10.9.9.9:11434", "--port", "0"];
    let huge = u64::MAX.to_string();
    let cases: [(&[&str], &str, &str); 9] = [
        (&["--timeout", "0"], "--timeout", "TIMEOUT_SECONDS"),
        (
            &["--model-timeout", "0"],
            "--model-timeout",
            "MODEL_TIMEOUT_SECONDS",
        ),
        (&["--max-queue", "0"], "--max-queue", "MAX_QUEUE"),
        (&["--wake-timeout", "0"], "--wake-timeout", "WAKE_TIMEOUT"),
        (
            &["--mac", "aa:bb:cc:dd:ee:ff", "--wol-port", "0"],
            "--wol-port",
            "WOL_PORT",
        ),
        (&["--wake-timeout", &huge], "--wake-timeout", "WAKE_TIMEOUT"),
        (&["--timeout", &huge], "--timeout", "TIMEOUT_SECONDS"),
        (
            &["--wake-interval", &huge],
            "--wake-interval",
            "WAKE_INTERVAL",
        ),
        (
            &["wake", "--mac", "aa:bb:cc:dd:ee:ff", "--wake-timeout", "2y"],
            "--wake-timeout",
            "WAKE_TIMEOUT",
        ),
    ];
    for (args, flag, env) in cases {
        let mut argv: Vec<&str> = args.to_vec();
        if argv[0] != "wake" {
            argv.extend(ollama);
        }
        let out = run(&argv, &[]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {}", text(&out));
        assert!(err.contains(flag) && err.contains(env), "{argv:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{argv:?}: {err}");
    }
    // The same through the environment.
    let out = run(
        &[],
        &[
            ("OLLAMA_URL", "http://10.9.9.9:11434"),
            ("WAKE_TIMEOUT", &huge),
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("maximum"), "{}", text(&out));
}

/// A WolGoWeb-like server: checks `token == md5(key + mac + time)` and answers `{"error":N}`.
async fn wolgoweb(
    key: &'static str,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<HashMap<String, String>>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/wol",
        axum::routing::get(move |Query(q): Query<HashMap<String, String>>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(q.clone());
                let (mac, time, token) = (
                    &q["mac"],
                    q.get("time").cloned().unwrap_or_default(),
                    q.get("token").cloned().unwrap_or_default(),
                );
                let want: String = Md5::digest(format!("{key}{mac}{time}"))
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if token == want {
                    Json(json!({"error": 0, "message": "OK", "data": {"mac": mac}}))
                } else {
                    Json(json!({"error": 104, "message": "token error"}))
                }
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (
        format!("http://{addr}/wol?mac=00-11-22-33-44-55&port=9"),
        rx,
    )
}

#[tokio::test]
async fn wake_url_signed_for_wolgoweb() {
    let (url, mut seen) = wolgoweb("123456").await;
    let out = run(&["wake", "--wake-url", &url, "--wake-key", "123456"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("123456"),
        "key printed: {}",
        text(&out)
    );
    let q = seen.recv().await.unwrap();
    assert_eq!(q["mac"], "00-11-22-33-44-55");
    assert!(q["time"].parse::<u64>().unwrap() > 1_600_000_000);

    // A wrong key: WolGoWeb answers 200 with error 104, which is a failure.
    let out = run(&["wake", "--wake-url", &url], &[("WAKE_KEY", "wrong")]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("104"), "{}", text(&out));

    // A wake server that is down.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_url = format!(
        "http://{}/wol?mac=00-11-22-33-44-55",
        dead.local_addr().unwrap()
    );
    drop(dead);
    let out = run(&["wake", "--wake-url", &dead_url], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("failed"), "{}", text(&out));
}

#[tokio::test]
async fn wake_wait_reports_how_long_ollama_took() {
    let fake = Fake::bind().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let common = [
        "wake",
        "--mac",
        "aa:bb:cc:dd:ee:ff",
        "--broadcast",
        "127.0.0.1",
        "--wol-port",
        &port,
        "--wait",
    ];
    let mut args = common.to_vec();
    let url = fake.url();
    args.extend(["--ollama-url", &url]);
    let out = run(&args, &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Ollama answered after"),
        "{}",
        text(&out)
    );
    assert!(fake.log().count("/api/version") >= 1);

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut args = common.to_vec();
    args.extend(["--ollama-url", &closed_url, "--wake-timeout", "1s"]);
    let started = std::time::Instant::now();
    let out = run(&args, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(text(&out).contains("did not answer"), "{}", text(&out));
}

#[tokio::test]
async fn health_command() {
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&["--ollama-url", &fake.url()]).await;
    let out = run(&["health", "--url", &proxy.url("/health")], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    let port = proxy.addr.port().to_string();
    let out = run(&["health"], &[("PORT", &port)]).await;
    assert!(out.status.success(), "{}", text(&out));
    // /health never touches Ollama.
    assert!(fake.log().all().is_empty());
    proxy.stop().await;

    let out = run(&["health"], &[("PORT", &port)]).await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));

    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(|| async { Json(json!({"status": "starting"})) }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let out = run(&["health", "--url", &format!("http://{addr}/health")], &[]).await;
    assert_ne!(out.status.code(), Some(0), "{}", text(&out));
}

/// `wake --config`: the `[[backend]]` named is woken with its own settings (its MAC, its
/// broadcast address and port), the other machine gets nothing; a name is needed with several
/// machines, must exist, and needs the file; an always-on machine is never woken.
#[tokio::test]
async fn wake_with_a_configuration_file_wakes_the_backend_named() {
    let desk = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    let toml = format!(
        r#"
[[backend]]
name = "desk"
url = "http://127.0.0.1:9"
mac = "02:00:00:00:00:0a"
broadcast = "127.0.0.1"
wol_port = {}

[[backend]]
name = "other"
url = "http://127.0.0.2:9"
mac = "02:00:00:00:00:0b"
broadcast = "127.0.0.1"
wol_port = {}

[[backend]]
name = "always"
url = "http://127.0.0.3:9"
always_on = true
"#,
        port(&desk),
        port(&other)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let file = path.to_str().unwrap();

    // The command has exited: every packet it sent is waiting in the sockets.
    let out = run(&["wake", "--config", file, "--backend", "desk"], &[]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("waking desk"), "{}", text(&out));
    assert_only(&desk, &expected_packet([2, 0, 0, 0, 0, 0x0a], None));
    assert!(drain(&other).is_empty(), "the other machine was woken");
    // The file through the environment, as `serve` reads it.
    let out = run(&["wake", "--backend", "other"], &[("CONFIG", file)]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_only(&other, &expected_packet([2, 0, 0, 0, 0, 0x0b], None));
    assert!(drain(&desk).is_empty(), "the first machine was woken again");

    let refused: [(&[&str], &str); 4] = [
        (
            &["wake", "--config", file],
            "--backend (desk, other, always)",
        ),
        (
            &["wake", "--config", file, "--backend", "nope"],
            "no such backend",
        ),
        (
            &["wake", "--config", file, "--backend", "always"],
            "always on",
        ),
        (
            &["wake", "--backend", "desk", "--mac", "02:00:00:00:00:0a"],
            "--config",
        ),
    ];
    for (argv, says) in refused {
        let out = run(argv, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{argv:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{argv:?}: {err}");
    }
    for sock in [&desk, &other] {
        assert!(drain(sock).is_empty(), "a refused wake sent a packet");
    }
}

/// Every datagram waiting in `sock`, without waiting for more.
fn drain(sock: &UdpSocket) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 1500];
    while let Ok(n) = sock.try_recv(&mut buf) {
        all.push(buf[..n].to_vec());
    }
    all
}

/// `sock` received at least one datagram, each of them `packet` (a wake repeats its packet).
fn assert_only(sock: &UdpSocket, packet: &[u8]) {
    let got = drain(sock);
    assert!(!got.is_empty(), "no packet");
    assert!(got.iter().all(|p| p == packet), "{got:?}");
}
