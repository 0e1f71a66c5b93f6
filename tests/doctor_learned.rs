//! `ollama-proxy doctor` with a learned MAC, run as the real binary: a set-up with only a learned
//! MAC is checked and woken like a configured one, with WOL_BROADCAST and WOL_PORT applied to it; a
//! record for another address is warned about; a desktop behind a router is said to be
//! unlearnable (see "Learning the MAC" and "Doctor" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::doctor::{assert_line, awake_desktop, doctor, learned_2h_ago, queued};
use common::netns::Net;
use common::{cache_with_record, output_text as text, Fake};

#[tokio::test]
async fn with_only_a_learned_mac_the_desktop_can_be_woken() {
    let Some(net) = Net::create() else { return };
    let host = awake_desktop(net);
    host.sleep();
    host.wake_on_lan(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}:11434", host.net.peer_ip);
    let cache = learned_2h_ago(&host, &dir);
    // Asleep, no MAC configured: expected, not a failure, since the learned MAC can wake it.
    let args = ["--ollama-url", &url, "--cache-file", &cache];
    let out = doctor(&args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(&out, "[warn] default: ", &[&url, "does not answer"]);
    let learned = format!("learned MAC {} to {}", host.mac, host.net.broadcast);
    assert_line(&out, "[ok]   default: ", &["wakes with", &learned]);
    // Where the learned MAC's packets leave is checked as a configured MAC's are.
    let (bcast, iface) = (host.net.broadcast.to_string(), &host.net.host_if);
    assert_line(
        &out,
        "[ok]   default: ",
        &["packets to", &bcast, "leave by", iface],
    );
    assert_eq!(host.power.count(&host.power.woken), 0);

    let out = doctor(&[&args[..], &["--wake"]].concat()).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_line(&out, "[ok]   default: ", &["reachable", "after the wake"]);
    assert_eq!(host.power.count(&host.power.woken), 1);
}

#[tokio::test]
async fn a_learned_mac_goes_by_the_configured_broadcast_and_port() {
    let fake = Fake::bind().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port().to_string();
    let dir = tempfile::tempdir().unwrap();
    // Learned for Ollama's own address; its broadcast address is not where WOL_BROADCAST says.
    let record = serde_json::json!({
        "ip": "127.0.0.1", "mac": common::TEST_MAC, "interface": "lo",
        "broadcast": "127.255.255.255", "learned_at": 1_700_000_000u64,
    });
    let cache = cache_with_record(dir.path(), record);
    let url = fake.url();
    let args = [
        "--ollama-url",
        &url,
        "--cache-file",
        &cache,
        "--broadcast",
        "127.0.0.1",
        "--wol-port",
        &port,
        "--wake",
    ];
    let out = doctor(&args).await;
    let sent = format!("--wake: magic packet sent to 127.0.0.1:{port}");
    assert_line(&out, "[ok]   default: ", &[&sent]);
    assert_eq!(queued(&sock), 3, "{}", text(&out));
}

#[tokio::test]
async fn a_desktop_behind_a_router_is_said_to_be_unlearnable() {
    let Some(router) = Net::create() else { return };
    let Some(far) = router.behind_router() else {
        return;
    };
    let host = awake_desktop(far);
    let url = format!("http://{}:11434", host.net.peer_ip);
    let out = doctor(&["--ollama-url", &url]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let gateway = router.peer_ip.to_string();
    assert_line(
        &out,
        "[warn] default: ",
        &[
            "not on a directly connected subnet",
            &gateway,
            "set WOL_MAC and WOL_BROADCAST",
        ],
    );
    assert_line(
        &out,
        "[warn] default: ",
        &["nothing can wake it", "cannot be learned"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("awake once"), "{stdout}");
    // With a wake URL, that is only information.
    let with_url = [
        "--ollama-url",
        &url,
        "--wake-url",
        "http://127.0.0.1:9/wol?mac=x",
    ];
    let out = doctor(&with_url).await;
    assert_line(
        &out,
        "[info] default: ",
        &["not on a directly connected subnet"],
    );
    drop(host);
    drop(router);
}

#[tokio::test]
async fn a_record_for_another_address_is_warned_about() {
    let fake = Fake::bind().await;
    let dir = tempfile::tempdir().unwrap();
    let record = serde_json::json!({
        "ip": "192.0.2.7", "mac": common::TEST_MAC, "interface": "eth0",
        "broadcast": "192.0.2.255", "learned_at": 1_700_000_000u64,
    });
    let cache = cache_with_record(dir.path(), record);
    let out = doctor(&["--ollama-url", &fake.url(), "--cache-file", &cache]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_line(
        &out,
        "[warn] default: ",
        &[
            "is for 192.0.2.7, but Ollama is at 127.0.0.1 now",
            "forgets it",
        ],
    );
    // Not used: nothing can wake it.
    assert_line(&out, "[warn] default: ", &["nothing can wake it"]);
}
