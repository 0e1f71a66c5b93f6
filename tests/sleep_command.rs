//! `ollama-proxy sleep` and the start-up checks of the sleep settings, run as the real binary.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use tokio::net::UdpSocket;

use common::{closed_url, output_text as text, run_bin as run};

#[tokio::test]
async fn sleep_sends_the_sleep_on_lan_packet_with_the_mac_reversed() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let url = closed_url();
    let out = run(
        &[
            "sleep",
            "--mac",
            "02:11:22:33:44:55",
            "--broadcast",
            "127.0.0.1",
            "--ollama-url",
            &url,
        ],
        &[("WOL_PORT", &port), ("SLEEP_PACKET", "true")],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("putting default to sleep (sleep packet)"),
        "{said}"
    );
    assert!(
        said.contains(&format!("sleep packet: sent to 127.0.0.1:{port}")),
        "{said}"
    );
    let mut expected = vec![0xff; 6];
    for _ in 0..16 {
        expected.extend_from_slice(&[0x55, 0x44, 0x33, 0x22, 0x11, 0x02]);
    }
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .expect("no packet")
            .unwrap();
        assert_eq!(buf[..n], expected[..]);
    }
}

#[tokio::test]
async fn sleep_exit_codes() {
    let url = closed_url();
    // Nothing configured to send: bad usage.
    let out = run(&["sleep", "--ollama-url", &url], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--sleep-packet"), "{}", text(&out));
    // Every method failed: 1.
    let out = run(
        &[
            "sleep",
            "--ollama-url",
            &url,
            "--sleep-command",
            "/nonexistent/suspend now",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("sleep command failed: cannot run /nonexistent/suspend"),
        "{}",
        text(&out)
    );
    // A command that succeeds: 0, and it says so.
    let out = run(
        &["sleep", "--ollama-url", &url, "--sleep-command", "true"],
        &[("PATH", "/usr/bin:/bin")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sleep command: true exited 0"));
    // A backend that does not exist.
    let out = run(
        &[
            "sleep",
            "--ollama-url",
            &url,
            "--sleep-command",
            "true",
            "--backend",
            "nope",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test]
async fn sleep_settings_that_cannot_work_stop_start_up_with_exit_2() {
    let url = closed_url();
    for (args, says) in [
        (&["--sleep-packet"][..], "--sleep-packet (SLEEP_PACKET)"),
        (
            &["--sleep-url", "https://desktop:8009/sleep"][..],
            "--sleep-url (SLEEP_URL)",
        ),
        (&["--sleep-command", "''"][..], "the command is empty"),
        (&["--sleep-after", "5m"][..], "needs a sleep method"),
    ] {
        let mut argv = vec!["--ollama-url", &url, "--port", "0"];
        argv.extend_from_slice(args);
        let out = run(&argv, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(says), "{err}");
    }
}
