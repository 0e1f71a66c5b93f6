//! What the kernel knows about a host on the network: its MAC in the IPv4 neighbour table, the
//! route to it, and the address and directed broadcast of the interface that route leaves by (see
//! "Learning the MAC" in docs/behaviour.md). Each call reads `/proc` or asks for the interfaces'
//! addresses: for background tasks and commands, never a request's path.
//!
//! The tables are read through `/proc/self/net`, not `/proc/net`: under systemd's
//! `ProcSubset=pid` (the shipped unit's sandbox) only the process directories of `/proc` are
//! there, and `/proc/net` is missing while `/proc/self/net` still shows this process's network
//! namespace.

mod arp;
mod iface;
mod route;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use wol::MacAddr;

pub use arp::{mac_of, parse_arp, ArpEntry};
pub use iface::{local_addresses, own_interface_of, IfaceAddr};
pub use route::{best_route, parse_routes, RouteEntry};

const ARP: &str = "/proc/self/net/arp";
const ROUTE: &str = "/proc/self/net/route";

/// Why the kernel's tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NetInfoError {
    /// A file of `/proc` could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// getifaddrs failed.
    #[error("cannot list the network interfaces: {0}")]
    Interfaces(String),
    /// No route (not even a default one) leads to the address.
    #[error("no route to {0}")]
    NoRoute(Ipv4Addr),
}

/// The way to an address, as the kernel's main routing table has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface packets leave by.
    pub interface: String,
    /// The next hop: `Some` means the host is not on a directly connected subnet.
    pub gateway: Option<Ipv4Addr>,
    /// This machine's address on `interface` (the one in the host's subnet, else the first).
    pub local_addr: Option<Ipv4Addr>,
    /// The prefix length of the route that matched.
    pub prefix_len: u8,
    /// The directed broadcast address of `local_addr`'s subnet, when the interface has one.
    pub broadcast: Option<Ipv4Addr>,
    /// The interface is up.
    pub is_up: bool,
    /// It has a carrier (see [`IfaceAddr::has_carrier`]).
    pub has_carrier: bool,
}

impl Route {
    /// Directly connected: the host is on the interface's own link (no router in between).
    pub fn is_direct(&self) -> bool {
        self.gateway.is_none()
    }
}

/// A table of `/proc` as text: bytes that are not UTF-8 (an interface may be named with any bytes)
/// are replaced, so that one odd name costs its own line only, never the whole table.
fn read(path: &Path) -> Result<String, NetInfoError> {
    let bytes = std::fs::read(path).map_err(|source| NetInfoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The MAC of `ip` in the IPv4 neighbour table; `None` when there is no complete entry.
pub fn neighbour_mac(ip: Ipv4Addr) -> Result<Option<MacAddr>, NetInfoError> {
    neighbour_mac_on(ip, None)
}

/// Like [`neighbour_mac`], with only an entry on `interface` (when given) counting.
pub fn neighbour_mac_on(
    ip: Ipv4Addr,
    interface: Option<&str>,
) -> Result<Option<MacAddr>, NetInfoError> {
    Ok(mac_of(&parse_arp(&read(Path::new(ARP))?), ip, interface))
}

/// The route the kernel takes to `ip`, with its interface's address, broadcast and state.
pub fn route_to(ip: Ipv4Addr) -> Result<Route, NetInfoError> {
    let routes = parse_routes(&read(Path::new(ROUTE))?);
    let best = best_route(&routes, ip).ok_or(NetInfoError::NoRoute(ip))?;
    let addrs = local_addresses()?;
    Ok(route_with(best, ip, &addrs))
}

/// A matched route, completed with the addresses of its interface (pure).
pub fn route_with(best: &RouteEntry, ip: Ipv4Addr, addrs: &[IfaceAddr]) -> Route {
    let on_iface: Vec<&IfaceAddr> = addrs
        .iter()
        .filter(|a| a.interface == best.interface)
        .collect();
    let chosen = on_iface
        .iter()
        .find(|a| a.contains(ip))
        .or_else(|| on_iface.first());
    Route {
        interface: best.interface.clone(),
        gateway: best.gateway,
        local_addr: chosen.map(|a| a.addr),
        prefix_len: best.prefix_len,
        broadcast: chosen.and_then(|a| a.broadcast),
        is_up: on_iface.iter().any(|a| a.is_up),
        has_carrier: on_iface.iter().any(|a| a.has_carrier),
    }
}

/// `ip` is this machine itself: a loopback or unspecified address, or one of its interfaces'.
pub fn is_loopback_or_local(ip: IpAddr) -> Result<bool, NetInfoError> {
    if ip.is_loopback() || ip.is_unspecified() {
        return Ok(true);
    }
    Ok(iface::local_ips()?.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(interface: &str, a: [u8; 4], prefix_len: u8, up: bool) -> IfaceAddr {
        let ip = Ipv4Addr::from(a);
        let host_bits = u32::MAX.checked_shr(u32::from(prefix_len)).unwrap_or(0);
        IfaceAddr {
            interface: interface.into(),
            addr: ip,
            prefix_len,
            broadcast: Some(Ipv4Addr::from(u32::from(ip) | host_bits)),
            is_up: up,
            has_carrier: up,
        }
    }

    #[test]
    fn a_route_takes_the_address_in_the_hosts_subnet() {
        let best = RouteEntry {
            interface: "eth0".into(),
            destination: Ipv4Addr::new(192, 168, 1, 0),
            gateway: None,
            prefix_len: 24,
            metric: 100,
        };
        let addrs = [
            addr("wlan0", [192, 168, 1, 9], 24, true),
            addr("eth0", [10, 0, 0, 2], 8, true),
            addr("eth0", [192, 168, 1, 10], 24, true),
        ];
        let desktop = Ipv4Addr::new(192, 168, 1, 50);
        let r = route_with(&best, desktop, &addrs);
        assert_eq!(r.local_addr, Some(Ipv4Addr::new(192, 168, 1, 10)));
        assert_eq!(r.broadcast, Some(Ipv4Addr::new(192, 168, 1, 255)));
        assert!(r.is_up && r.is_direct());
        // Outside every subnet of the interface: its first address.
        let r = route_with(&best, Ipv4Addr::new(172, 16, 0, 1), &addrs);
        assert_eq!(r.local_addr, Some(Ipv4Addr::new(10, 0, 0, 2)));
        // An interface without addresses (or down).
        let r = route_with(&best, desktop, &[addr("eth0", [1, 2, 3, 4], 8, false)]);
        assert!(!r.is_up);
        let r = route_with(&best, desktop, &[]);
        assert_eq!((r.local_addr, r.broadcast, r.is_up), (None, None, false));
        assert!(!r.has_carrier);
    }

    #[test]
    fn an_interface_name_that_is_not_utf8_costs_only_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arp");
        let mut table = b"IP address HW type Flags HW address Mask Device\n".to_vec();
        table.extend_from_slice(b"192.168.1.7 0x1 0x2 02:00:00:00:00:07 * eth\xff\xfe0\n");
        table.extend_from_slice(b"192.168.1.50 0x1 0x2 02:00:5e:10:20:30 * eth0\n");
        std::fs::write(&path, table).unwrap();
        let entries = parse_arp(&read(&path).unwrap());
        assert_eq!(entries.len(), 2, "{entries:?}");
        let ip = Ipv4Addr::new(192, 168, 1, 50);
        assert!(mac_of(&entries, ip, Some("eth0")).is_some());
        assert!(matches!(
            read(&dir.path().join("missing")),
            Err(NetInfoError::Read { .. })
        ));
    }

    #[test]
    fn this_machine_is_local() {
        assert!(is_loopback_or_local("127.0.0.1".parse().unwrap()).unwrap());
        assert!(is_loopback_or_local("::1".parse().unwrap()).unwrap());
        assert!(is_loopback_or_local("0.0.0.0".parse().unwrap()).unwrap());
        // TEST-NET-3: no interface here has it.
        assert!(!is_loopback_or_local("203.0.113.7".parse().unwrap()).unwrap());
    }
}
