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
    let out = std::process::Command::new(common::bin())
        .arg("wake")
        .args(["--mac", MAC, "--wol-port", "9"])
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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
