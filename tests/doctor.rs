//! `ollama-proxy doctor`, run as the real binary: its lines and exit codes for a healthy set-up, a
//! wrong MAC, an Ollama that does not answer, a link without carrier, a missing interface and a bad
//! configuration (or no place for the cache file), and the magic packets it sends (none without
//! `--wake`, one burst with it). With a learned MAC: tests/doctor_learned.rs.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::doctor::{assert_line, awake_desktop, doctor, learned_2h_ago, queued};
use common::netns::Net;
use common::{closed_url, magic_catcher, output_text as text, run_bin, strs, Fake};

/// An Ollama that answers on loopback, a socket catching the magic packets, and the flags for both.
async fn on_loopback() -> (Fake, tokio::net::UdpSocket, Vec<String>) {
    let fake = Fake::bind().await;
    let (sock, wake) = magic_catcher().await;
    let mut args = vec!["--ollama-url".to_string(), fake.url()];
    args.extend(wake);
    (fake, sock, args)
}

#[tokio::test]
async fn a_healthy_setup_exits_0_with_every_finding_ok() {
    let Some(net) = Net::create() else { return };
    let host = awake_desktop(net);
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache.json").display().to_string();
    let mut args = host.proxy_args();
    args.extend(["--cache-file".to_string(), cache.clone()]);
    let out = doctor(&strs(&args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let (ip, iface) = (host.net.peer_ip.to_string(), &host.net.host_if);
    let url = format!("http://{ip}:11434");
    assert_line(
        &out,
        "[ok]   default: ",
        &["Ollama 0.33.0 reachable at", &url],
    );
    assert_line(
        &out,
        "[ok]   default: ",
        &["configured MAC", &host.mac, &ip],
    );
    assert_line(
        &out,
        "[ok]   default: ",
        &["route to", &ip, iface, "directly"],
    );
    let bcast = host.net.broadcast.to_string();
    assert_line(&out, "[ok]   default: ", &["packets to", &bcast, iface]);
    assert_line(
        &out,
        "[ok]   default: ",
        &["cache file", &cache, "writable"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("[warn]") && !stdout.contains("[fail]"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().last(),
        Some("doctor: 1 machine checked: nothing wrong found")
    );
}

#[tokio::test]
async fn a_wrong_mac_exits_1_naming_both_macs() {
    let Some(net) = Net::create() else { return };
    let host = awake_desktop(net);
    let wrong = "02:00:00:00:00:99";
    let mut args = host.proxy_args();
    let at = args.iter().position(|a| a == "--mac").unwrap();
    args[at + 1] = wrong.to_string();
    // The MAC learned earlier, kept in the cache file: reported beside the one seen now.
    let dir = tempfile::tempdir().unwrap();
    args.extend(["--cache-file".to_string(), learned_2h_ago(&host, &dir)]);
    let out = doctor(&strs(&args)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let ip = host.net.peer_ip.to_string();
    assert_line(
        &out,
        "[warn] default: ",
        &[
            "configured MAC",
            wrong,
            "differs from the MAC seen",
            &ip,
            &host.mac,
        ],
    );
    assert_line(
        &out,
        "[warn] default: ",
        &[
            "configured MAC",
            wrong,
            "differs from the learned MAC",
            &host.mac,
            "2h ago",
        ],
    );
}

#[tokio::test]
async fn an_ollama_that_does_not_answer_exits_1() {
    let refused = closed_url();
    let out = doctor(&["--ollama-url", &refused, "--mac", common::TEST_MAC]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(
        &out,
        "[fail] default: ",
        &[&refused, "refused the connection"],
    );

    // A desktop that sleeps answers nothing: without --wake it is left asleep.
    let Some(net) = Net::create() else { return };
    let host = awake_desktop(net);
    host.sleep();
    host.wake_on_lan(Duration::ZERO);
    let out = doctor(&strs(&host.proxy_args())).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let url = format!("http://{}:11434", host.net.peer_ip);
    assert_line(
        &out,
        "[warn] default: ",
        &[&url, "does not answer", "--wake"],
    );
    assert!(host.asleep.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_link_without_carrier_is_named() {
    let Some(net) = Net::create() else { return };
    let host = awake_desktop(net);
    host.net.unplug();
    let out = doctor(&strs(&host.proxy_args())).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let iface = &host.net.host_if;
    assert_line(&out, "[warn] default: ", &[iface, "up but has no carrier"]);
}

#[tokio::test]
async fn with_wake_a_sleeping_desktop_is_woken_and_checked() {
    let Some(net) = Net::create() else { return };
    let host = awake_desktop(net);
    host.sleep();
    host.wake_on_lan(Duration::from_millis(200));
    let mut args = host.proxy_args();
    args.push("--wake".into());
    let out = doctor(&strs(&args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let bcast = format!("{}:9", host.net.broadcast);
    assert_line(
        &out,
        "[ok]   default: ",
        &["--wake: magic packet sent to", &bcast],
    );
    assert_line(&out, "[ok]   default: ", &["reachable", "after the wake"]);
    assert_eq!(host.power.count(&host.power.woken), 1);
}

#[tokio::test]
async fn without_wake_nothing_is_sent_and_with_it_one_burst() {
    let (_fake, sock, mut args) = on_loopback().await;
    let out = doctor(&strs(&args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(queued(&sock), 0, "a magic packet without --wake");

    args.push("--wake".into());
    let out = doctor(&strs(&args)).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let port = sock.local_addr().unwrap().port();
    let sent = format!("--wake: magic packet sent to 127.0.0.1:{port}");
    assert_line(&out, "[ok]   default: ", &[&sent]);
    // One burst: the packet three times (see "Magic packets" in docs/behaviour.md).
    assert_eq!(queued(&sock), 3);
}

#[tokio::test]
async fn a_missing_interface_is_a_failure_as_the_proxy_refuses_it() {
    let (_fake, sock, mut args) = on_loopback().await;
    args.extend(["--interface".to_string(), "nosuchif0".to_string()]);
    let out = doctor(&strs(&args)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(
        &out,
        "[fail] default: ",
        &[
            "interface nosuchif0 does not exist",
            "lo",
            "refuses to start",
        ],
    );
    // `serve` with the same settings does refuse to start, with the same exit code.
    let mut serve = vec!["--bind", "127.0.0.1", "--port", "0"];
    serve.extend(strs(&args));
    let out = run_bin(&serve, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("nosuchif0"), "{}", text(&out));
    assert_eq!(queued(&sock), 0);
}

#[tokio::test]
async fn bad_configuration_exits_2_with_one_line() {
    let out = doctor(&[
        "--mac",
        "zz:00:00:00:00:00",
        "--ollama-url",
        "http://10.9.9.9:11434",
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--mac") && err.contains("WOL_MAC"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "[[backend]]\nname = \"Desk\"\nurl = \"http://10.9.9.9:11434\"\n",
    )
    .unwrap();
    let out = doctor(&["--config", &file.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("config.toml:2:"), "{}", text(&out));

    // No place for the cache file (nor CACHE_FILE): `serve`'s exit code and line.
    let args = ["doctor", "--ollama-url", "http://127.0.0.1:9"];
    let out = run_bin(&args, &[("XDG_STATE_HOME", "")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CACHE_FILE= (empty)"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty(), "{}", text(&out));
}

#[tokio::test]
async fn each_machine_of_a_config_file_gets_its_own_lines() {
    let fake = Fake::bind().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    let cache = dir.path().join("cache.json");
    let toml = format!(
        "cache_file = {cache:?}\n\
         [[backend]]\nname = \"desktop\"\nurl = \"{}\"\nmac = \"{}\"\nbroadcast = \"127.0.0.1\"\n\
         [[backend]]\nname = \"mini\"\nurl = \"{}\"\nalways_on = true\n",
        fake.url(),
        common::TEST_MAC,
        closed_url(),
    );
    std::fs::write(&file, toml).unwrap();
    let out = doctor(&["--config", &file.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(&out, "[ok]   desktop: ", &["Ollama 0.33.0 reachable"]);
    assert_line(&out, "[fail] mini: ", &["refused the connection"]);
    assert_line(&out, "[info] mini: ", &["always on: never woken"]);
    let own = dir.path().join("cache.desktop.json").display().to_string();
    assert_line(&out, "[ok]   desktop: ", &["cache file", &own, "writable"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("doctor: 2 machines checked: 1 failure, 0 warnings")
    );
}
