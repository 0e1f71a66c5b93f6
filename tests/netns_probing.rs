//! Quiet probing, counted on the wire: a wake cycle for a host that never wakes sends few SYNs and
//! keeps few probes in flight (see "Wake cycle" in docs/behaviour.md).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use common::netns::Net;
use common::{client, Proxy};

/// How long the SYNs are counted.
const WATCH: Duration = Duration::from_secs(10);

/// One SYN seen: when, and from which source port.
type Syn = (Instant, u16);

/// Counts TCP SYNs to `target:port` on every link of the namespace for `watch` (a packet socket:
/// sees frames even for an address no host there owns).
fn count_syns(net: &Net, target: Ipv4Addr, port: u16, watch: Duration) -> Vec<Syn> {
    net.run_inside(|| {
        let proto = (libc::ETH_P_IP as u16).to_be() as i32;
        // SAFETY: plain socket calls on a descriptor owned by this function.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, proto) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 100_000,
        };
        // SAFETY: `tv` lives across the call; the length is its size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        let end = Instant::now() + watch;
        while Instant::now() < end {
            // SAFETY: `buf` is valid for its length.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            if let Some(src_port) = syn_to(&buf[..n as usize], target, port) {
                seen.push((Instant::now(), src_port));
            }
        }
        // SAFETY: closing the descriptor opened above.
        unsafe { libc::close(fd) };
        seen
    })
}

/// The source port of an IPv4 TCP SYN (without ACK) to `target:port`.
fn syn_to(p: &[u8], target: Ipv4Addr, port: u16) -> Option<u16> {
    let ihl = usize::from(*p.first()? & 0x0f) * 4;
    if *p.get(9)? != 6 || p.get(16..20)? != target.octets() {
        return None;
    }
    let tcp = p.get(ihl..)?;
    let dst = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
    let flags = *tcp.get(13)?;
    (dst == port && flags & 0x02 != 0 && flags & 0x10 == 0)
        .then(|| u16::from_be_bytes([tcp[0], tcp[1]]))
}

/// Most distinct connections with a SYN in any window of `span`: attempts in flight.
fn most_in_flight(syns: &[Syn], span: Duration) -> usize {
    syns.iter()
        .map(|(t, _)| {
            let mut ports: Vec<u16> = syns
                .iter()
                .filter(|(u, _)| *u >= *t && *u < *t + span)
                .map(|(_, p)| *p)
                .collect();
            ports.sort_unstable();
            ports.dedup();
            ports.len()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test]
async fn a_host_that_never_wakes_gets_few_syns() {
    let Some(net) = Net::create() else { return };
    let net = Arc::new(net);
    let phantom = net.phantom();
    let url = format!("http://{phantom}:11434");
    let broadcast = net.broadcast.to_string();
    let proxy = Proxy::start(&[
        "--ollama-url",
        &url,
        "--mac",
        "02:00:5e:00:00:03",
        "--broadcast",
        &broadcast,
        "--wake-timeout",
        "30s",
    ])
    .await;
    let counter = {
        let net = Arc::clone(&net);
        tokio::task::spawn_blocking(move || count_syns(&net, phantom, 11434, WATCH))
    };
    let chat = tokio::spawn(
        client()
            .post(proxy.url("/api/chat"))
            .json(&json!({"model": "llama3.2", "messages": []}))
            .send(),
    );
    let syns = counter.await.unwrap();
    let per_second = syns.len() as f64 / WATCH.as_secs_f64();
    let in_flight = most_in_flight(&syns, Duration::from_secs(2));
    eprintln!(
        "host that never wakes: {} SYNs in {WATCH:?} ({per_second:.1}/s), at most {in_flight} connections in any 2 s",
        syns.len()
    );
    assert!(!syns.is_empty(), "no SYN seen: the count is broken");
    assert!(per_second <= 15.0, "{per_second:.1} SYNs/s");
    assert_eq!(proxy.health().await["backend"], "waking");
    chat.abort();
    proxy.stop().await;
}
