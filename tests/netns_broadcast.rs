//! Magic packets crossing a real (virtual) link: a host in a network namespace receives the
//! broadcast sent by `ollama-proxy wake`, to the subnet's directed broadcast and via `--interface`.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::netns::Net;

const MAC: &str = "02:00:5e:aa:bb:cc";

fn receiver(net: &Net) -> UdpSocket {
    let sock = net.run_inside(|| UdpSocket::bind("0.0.0.0:9").unwrap());
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock
}

fn wake(args: &[&str]) -> String {
    wake_as(&[], args)
}

/// Runs `wake` from a copy of the binary that anyone may execute, prefixed by `wrapper` (e.g.
/// setpriv to drop privileges).
fn wake_as(wrapper: &[&str], args: &[&str]) -> String {
    use std::os::unix::fs::PermissionsExt;
    // Each call its own directory: a shared path let one test exec the copy while another was still
    // writing it (ETXTBSY) or deleting it.
    let dir = tempfile::Builder::new()
        .prefix("opx-bin-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("ollama-proxy");
    // Copied by a child process: a file this (multi-threaded) process had open for writing could be
    // inherited by a sibling test's fork and make the exec below fail with ETXTBSY.
    let copied = std::process::Command::new("cp")
        .arg(common::bin())
        .arg(&exe)
        .status()
        .unwrap();
    assert!(copied.success());
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = std::process::Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let out = cmd
        .arg("wake")
        .args(["--mac", MAC, "--wol-port", "9"])
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    drop(dir);
    let text = common::output_text(&out);
    assert!(out.status.success(), "{text}");
    text
}

fn expect_packet(sock: &UdpSocket) {
    let mut buf = [0u8; 1500];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("no magic packet arrived in the namespace");
    assert_eq!(
        &buf[..n],
        wol::MagicPacket::new(MAC.parse().unwrap(), None).as_bytes()
    );
    assert_eq!(n, 102);
    eprintln!("received {n} bytes from {from}");
}

#[test]
fn directed_broadcast_reaches_the_subnet() {
    let Some(net) = Net::create() else { return };
    let sock = receiver(&net);
    let text = wake(&["--broadcast", &net.broadcast.to_string()]);
    assert!(text.contains(&format!("{}:9", net.broadcast)), "{text}");
    expect_packet(&sock);
}

#[test]
fn limited_broadcast_out_of_a_chosen_interface() {
    let Some(net) = Net::create() else { return };
    let sock = receiver(&net);
    let text = wake(&[
        "--broadcast",
        "255.255.255.255",
        "--interface",
        &net.host_if,
    ]);
    assert!(text.contains(&net.host_if), "{text}");
    expect_packet(&sock);
}

#[test]
fn an_unprivileged_user_can_pick_the_interface() {
    // The systemd unit grants no capabilities: SO_BINDTODEVICE on a not-yet-bound socket needs none
    // on Linux >= 5.7. Run as nobody with every capability dropped.
    let Some(net) = Net::create() else { return };
    let sock = receiver(&net);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ];
    wake_as(
        &nobody,
        &[
            "--broadcast",
            "255.255.255.255",
            "--interface",
            &net.host_if,
        ],
    );
    expect_packet(&sock);
}
