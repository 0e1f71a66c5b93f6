//! A second host in a network namespace joined to this one by a veth pair, on a /24 of our own.
//!
//! Guard against leaks: the subnet is first made `unreachable` (metric 4000) in the root namespace,
//! so that if the veth vanishes nothing is routed off the machine. Everything is removed on drop, and
//! leftovers of killed runs (their process gone) are removed before a new namespace is made.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

static NEXT: AtomicU8 = AtomicU8::new(0);
const PREFIX: &str = "opx-";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn subnet_of(pid: u32, n: u8) -> (u8, u8) {
    (100 + n % 100, (pid % 250 + 1) as u8)
}

/// Removes namespaces (and their routes) left by test processes that no longer exist.
fn remove_leftovers() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let mut parts = rest.split('-');
        let (Some(Ok(pid)), Some(Ok(n))) = (
            parts.next().map(str::parse::<u32>),
            parts.next().map(str::parse::<u8>),
        ) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = ip(&["netns", "del", name]);
        let (a, b) = subnet_of(pid, n);
        let _ = ip(&[
            "route",
            "del",
            "unreachable",
            &format!("10.{a}.{b}.0/24"),
            "metric",
            "4000",
        ]);
    }
}

/// The namespace, the veth pair and the addresses.
pub struct Net {
    pub ns: String,
    pub host_if: String,
    pub peer_if: String,
    pub subnet: String,
    pub host_ip: Ipv4Addr,
    pub peer_ip: Ipv4Addr,
    pub broadcast: Ipv4Addr,
}

impl Net {
    /// Makes the namespace, or says why it cannot (then the caller skips), unless
    /// `OLLAMA_PROXY_REQUIRE_NETNS=1` demands it (CI), in which case it panics.
    pub fn create() -> Option<Net> {
        match Self::try_create() {
            Ok(n) => Some(n),
            Err(why) => {
                if std::env::var("OLLAMA_PROXY_REQUIRE_NETNS").as_deref() == Ok("1") {
                    panic!("network namespace required but cannot be made: {why}");
                }
                eprintln!("SKIPPED: cannot make a network namespace here ({why})");
                None
            }
        }
    }

    fn try_create() -> Result<Net, String> {
        remove_leftovers();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let (a, b) = subnet_of(pid, n);
        let net = Net {
            ns: format!("{PREFIX}{pid}-{n}"),
            host_if: format!("ox{n}h{}", pid % 100_000),
            peer_if: format!("ox{n}p{}", pid % 100_000),
            subnet: format!("10.{a}.{b}.0/24"),
            host_ip: Ipv4Addr::new(10, a, b, 1),
            peer_ip: Ipv4Addr::new(10, a, b, 2),
            broadcast: Ipv4Addr::new(10, a, b, 255),
        };
        ip(&["route", "add", "unreachable", &net.subnet, "metric", "4000"])?;
        // From here on, Drop cleans up whatever was made.
        let host_cidr = format!("{}/24", net.host_ip);
        let peer_cidr = format!("{}/24", net.peer_ip);
        ip(&["netns", "add", &net.ns])?;
        ip(&[
            "link",
            "add",
            "name",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.peer_if,
            "netns",
            &net.ns,
        ])?;
        ip(&["addr", "add", &host_cidr, "brd", "+", "dev", &net.host_if])?;
        ip(&["link", "set", "dev", &net.host_if, "up"])?;
        ip(&[
            "-n",
            &net.ns,
            "addr",
            "add",
            &peer_cidr,
            "brd",
            "+",
            "dev",
            &net.peer_if,
        ])?;
        ip(&["-n", &net.ns, "link", "set", "dev", &net.peer_if, "up"])?;
        ip(&["-n", &net.ns, "link", "set", "dev", "lo", "up"])?;
        Ok(net)
    }

    /// Runs `f` on a thread inside the namespace: sockets it makes live there.
    pub fn run_inside<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.ns);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap();
                // SAFETY: setns on a valid namespace fd affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
        })
    }

    /// A host that sleeps answers nothing, not even ARP; a magic packet (broadcast) still arrives.
    pub fn set_silent(&self, silent: bool) {
        let arp = if silent { "off" } else { "on" };
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            "dev",
            &self.peer_if,
            "arp",
            arp,
        ])
        .unwrap();
        let _ = ip(&["neigh", "flush", "dev", &self.host_if]);
    }
}

impl Net {
    /// Raises the minimum retransmission timeout of connections to the namespace (the route's
    /// `rto_min`): as a kernel does after it measured a long round trip, TCP_USER_TIMEOUT then fires
    /// only when the first retransmission is due, this late.
    pub fn set_rto_min(&self, rto: std::time::Duration) {
        let rto = format!("{}ms", rto.as_millis());
        let src = self.host_ip.to_string();
        ip(&[
            "route",
            "replace",
            &self.subnet,
            "dev",
            &self.host_if,
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            &src,
            "rto_min",
            &rto,
        ])
        .unwrap();
    }

    /// An address on the subnet that no host owns, whose frames still reach the namespace's link
    /// (a static neighbour entry with the peer's MAC): a host that never answers, whose SYNs can be
    /// counted inside the namespace.
    pub fn phantom(&self) -> Ipv4Addr {
        let mac = self.peer_mac();
        let o = self.host_ip.octets();
        let phantom = Ipv4Addr::new(o[0], o[1], o[2], 3);
        ip(&[
            "neigh",
            "replace",
            &phantom.to_string(),
            "lladdr",
            &mac,
            "dev",
            &self.host_if,
            "nud",
            "permanent",
        ])
        .unwrap();
        phantom
    }
}

impl Net {
    /// The MAC of the namespace's end of the veth pair: what the neighbour table shows for
    /// `peer_ip`.
    pub fn peer_mac(&self) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-o", "link", "show", "dev", &self.peer_if])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("link/ether ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns]);
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&[
            "route",
            "del",
            "unreachable",
            &self.subnet,
            "metric",
            "4000",
        ]);
    }
}
