//! Running `ollama-proxy doctor` and reading what it printed; a desktop for it in a namespace.

use std::sync::Arc;

use super::netns::Net;
use super::nshost::Host;
use super::{output_text as text, run_bin};

/// `ollama-proxy doctor ARGS`.
pub async fn doctor(args: &[&str]) -> std::process::Output {
    let mut argv = vec!["doctor"];
    argv.extend_from_slice(args);
    run_bin(&argv, &[]).await
}

/// The line of stdout that starts with `verdict` and contains every one of `parts`.
pub fn line_with<'a>(stdout: &'a str, verdict: &str, parts: &[&str]) -> Option<&'a str> {
    stdout
        .lines()
        .find(|l| l.starts_with(verdict) && parts.iter().all(|p| l.contains(p)))
}

pub fn assert_line(out: &std::process::Output, verdict: &str, parts: &[&str]) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        line_with(&stdout, verdict, parts).is_some(),
        "no {verdict} line with {parts:?}: {}",
        text(out)
    );
}

/// Datagrams waiting on `sock` now (loopback delivers during the sender's `sendto`).
pub fn queued(sock: &tokio::net::UdpSocket) -> usize {
    let mut buf = [0u8; 512];
    let mut n = 0;
    while sock.try_recv(&mut buf).is_ok() {
        n += 1;
    }
    n
}

/// A desktop in a namespace whose Ollama answers, with the MAC its card really has.
pub fn awake_desktop(net: Net) -> Arc<Host> {
    let mac = net.peer_mac();
    Arc::new(Host::machine(net, true, &mac, &["llama3.2:latest"]))
}

/// A cache file in `dir` holding the record of `host`'s card as learned two hours ago: its path.
pub fn learned_2h_ago(host: &Host, dir: &tempfile::TempDir) -> String {
    let learned_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 7200;
    let record = serde_json::json!({
        "ip": host.net.peer_ip.to_string(), "mac": host.mac, "interface": host.net.host_if,
        "broadcast": host.net.broadcast.to_string(), "learned_at": learned_at,
    });
    super::cache_with_record(dir.path(), record)
}
