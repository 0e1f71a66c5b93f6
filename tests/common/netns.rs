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
    /// Reached through this router (a namespace of [`Net::behind_router`]), not directly.
    pub router: Option<Ipv4Addr>,
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

    /// The next namespace's names and addresses (nothing made yet).
    fn next() -> Net {
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let (a, b) = subnet_of(pid, n);
        Net {
            ns: format!("{PREFIX}{pid}-{n}"),
            host_if: format!("ox{n}h{}", pid % 100_000),
            peer_if: format!("ox{n}p{}", pid % 100_000),
            subnet: format!("10.{a}.{b}.0/24"),
            host_ip: Ipv4Addr::new(10, a, b, 1),
            peer_ip: Ipv4Addr::new(10, a, b, 2),
            broadcast: Ipv4Addr::new(10, a, b, 255),
            router: None,
        }
    }

    fn try_create() -> Result<Net, String> {
        remove_leftovers();
        let net = Self::next();
        ip(&["route", "add", "unreachable", &net.subnet, "metric", "4000"])?;
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &net.ns])?;
        net.link(&[])?;
        Ok(net)
    }

    /// The veth pair from `host` (`ip -n NS` arguments, or none for this namespace) to the
    /// namespace, addressed and up.
    fn link(&self, host: &[&str]) -> Result<(), String> {
        let host_cidr = format!("{}/24", self.host_ip);
        let peer_cidr = format!("{}/24", self.peer_ip);
        let on_host = |args: &[&str]| ip(&[host, args].concat());
        on_host(&[
            "link",
            "add",
            "name",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.peer_if,
            "netns",
            &self.ns,
        ])?;
        on_host(&["addr", "add", &host_cidr, "brd", "+", "dev", &self.host_if])?;
        on_host(&["link", "set", "dev", &self.host_if, "up"])?;
        let net = self;
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
        Ok(())
    }

    /// A second namespace behind this one, which becomes a router (forwarding on): this machine
    /// reaches the new host on its own subnet through the router's address `peer_ip`, never
    /// directly. Skips (or panics under `OLLAMA_PROXY_REQUIRE_NETNS=1`) as [`Net::create`].
    pub fn behind_router(&self) -> Option<Net> {
        match self.try_behind_router() {
            Ok(n) => Some(n),
            Err(why) => {
                if std::env::var("OLLAMA_PROXY_REQUIRE_NETNS").as_deref() == Ok("1") {
                    panic!("routed network namespace required but cannot be made: {why}");
                }
                eprintln!("SKIPPED: cannot make a routed network namespace here ({why})");
                None
            }
        }
    }

    fn try_behind_router(&self) -> Result<Net, String> {
        let mut far = Self::next();
        far.router = Some(self.peer_ip);
        ip(&["route", "add", "unreachable", &far.subnet, "metric", "4000"])?;
        ip(&["netns", "add", &far.ns])?;
        far.link(&["-n", &self.ns])?;
        self.run_inside(|| std::fs::write("/proc/sys/net/ipv4/ip_forward", "1"))
            .map_err(|e| format!("ip_forward: {e}"))?;
        let router = self.peer_ip.to_string();
        ip(&[
            "route",
            "add",
            &far.subnet,
            "via",
            &router,
            "dev",
            &self.host_if,
        ])?;
        let back = far.host_ip.to_string();
        ip(&["-n", &far.ns, "route", "add", "default", "via", &back])?;
        Ok(far)
    }

    /// Gives this machine's end of the link its address again, without `brd` (as a plain
    /// `ip addr add 10.a.b.1/24 dev …` leaves it): the kernel then keeps no broadcast address.
    pub fn readdress_without_brd(&self) {
        let cidr = format!("{}/24", self.host_ip);
        ip(&["addr", "del", &cidr, "dev", &self.host_if]).unwrap();
        ip(&["addr", "add", &cidr, "dev", &self.host_if]).unwrap();
    }

    /// Takes the namespace's end of the link down: this machine's end stays up without a carrier
    /// (`NO-CARRIER`), as with a cable pulled out.
    pub fn unplug(&self) {
        self.set_peer_link(&["down"]);
    }

    /// Gives the namespace's end of the link this hardware address (the host's own card).
    pub fn set_peer_mac(&self, mac: &str) {
        self.set_peer_link(&["address", mac]);
    }

    /// `ip link set` on the namespace's end of the link.
    fn set_peer_link(&self, settings: &[&str]) {
        let mut args = vec!["-n", &self.ns, "link", "set", "dev", &self.peer_if];
        args.extend_from_slice(settings);
        ip(&args).unwrap();
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
        self.set_peer_link(&["arp", arp]);
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
        if self.router.is_some() {
            let _ = ip(&["route", "del", &self.subnet]);
        }
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
