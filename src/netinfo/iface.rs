//! This machine's interfaces: their IPv4 addresses, subnets and broadcast addresses (getifaddrs,
//! through `nix`), and which of them owns a MAC (through `mac_address`).

use std::net::{IpAddr, Ipv4Addr};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrLike;
use wol::MacAddr;

use super::NetInfoError;

/// One IPv4 address of a local interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceAddr {
    /// The interface's name.
    pub interface: String,
    /// The address.
    pub addr: Ipv4Addr,
    /// Its subnet's prefix length (from the netmask).
    pub prefix_len: u8,
    /// The subnet's directed broadcast address (interfaces that broadcast only).
    pub broadcast: Option<Ipv4Addr>,
    /// The interface is up.
    pub is_up: bool,
    /// It has a carrier and is operational (`IFF_LOWER_UP` and `IFF_RUNNING`; `ip link` says
    /// `NO-CARRIER` otherwise): a cable, an associated Wi-Fi, a veth whose other end is up.
    pub has_carrier: bool,
}

impl IfaceAddr {
    /// `ip` is in this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = super::route::mask_of(self.prefix_len);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

fn v4(addr: Option<&nix::sys::socket::SockaddrStorage>) -> Option<Ipv4Addr> {
    addr.and_then(|a| a.as_sockaddr_in()).map(|s| s.ip())
}

/// Every IPv4 address of every interface.
pub fn local_addresses() -> Result<Vec<IfaceAddr>, NetInfoError> {
    let all = getifaddrs().map_err(|e| NetInfoError::Interfaces(e.to_string()))?;
    Ok(all
        .filter_map(|i| {
            let addr = v4(i.address.as_ref())?;
            let mask = v4(i.netmask.as_ref()).map_or(0, u32::from);
            let prefix_len = mask.leading_ones() as u8;
            let broadcast = match i.flags.contains(InterfaceFlags::IFF_BROADCAST) {
                true => broadcast_of(addr, prefix_len, v4(i.broadcast.as_ref())),
                false => None,
            };
            Some(IfaceAddr {
                addr,
                prefix_len,
                broadcast,
                is_up: i.flags.contains(InterfaceFlags::IFF_UP),
                has_carrier: i
                    .flags
                    .contains(InterfaceFlags::IFF_LOWER_UP | InterfaceFlags::IFF_RUNNING),
                interface: i.interface_name,
            })
        })
        .collect())
}

/// The directed broadcast address of `addr`/`prefix_len` on an interface that broadcasts, given
/// the one getifaddrs `reported`. For an address added without `brd`, glibc reports the address
/// itself; a value that is missing, the address itself or outside its subnet is replaced by the
/// subnet's last address. A /31 or /32 has no broadcast address.
fn broadcast_of(addr: Ipv4Addr, prefix_len: u8, reported: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
    if prefix_len > 30 {
        return None;
    }
    let mask = super::route::mask_of(prefix_len);
    let in_subnet = |b: &Ipv4Addr| u32::from(*b) & mask == u32::from(addr) & mask;
    let usable = reported.filter(|b| *b != addr && in_subnet(b));
    Some(usable.unwrap_or(Ipv4Addr::from(u32::from(addr) | !mask)))
}

/// Every address (IPv4 and IPv6) of every interface.
pub(super) fn local_ips() -> Result<Vec<IpAddr>, NetInfoError> {
    let all = getifaddrs().map_err(|e| NetInfoError::Interfaces(e.to_string()))?;
    Ok(all
        .filter_map(|i| {
            let a = i.address?;
            match a.family() {
                Some(nix::sys::socket::AddressFamily::Inet) => {
                    a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()))
                }
                Some(nix::sys::socket::AddressFamily::Inet6) => {
                    a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip()))
                }
                _ => None,
            }
        })
        .collect())
}

/// The name of this machine's interface whose hardware address is `mac`, if one has it.
pub fn own_interface_of(mac: MacAddr) -> Result<Option<String>, NetInfoError> {
    mac_address::name_by_mac_address(&mac_address::MacAddress::new(mac.octets()))
        .map_err(|e| NetInfoError::Interfaces(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_membership() {
        let a = IfaceAddr {
            interface: "eth0".into(),
            addr: Ipv4Addr::new(192, 168, 1, 10),
            prefix_len: 24,
            broadcast: Some(Ipv4Addr::new(192, 168, 1, 255)),
            is_up: true,
            has_carrier: true,
        };
        assert!(a.contains(Ipv4Addr::new(192, 168, 1, 50)));
        assert!(!a.contains(Ipv4Addr::new(192, 168, 2, 50)));
        let all = IfaceAddr { prefix_len: 0, ..a };
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
    }

    #[test]
    fn a_broadcast_that_is_not_one_is_computed() {
        let addr = Ipv4Addr::new(192, 168, 1, 10);
        let subnet_broadcast = Some(Ipv4Addr::new(192, 168, 1, 255));
        // As getifaddrs reports it for `ip addr add 192.168.1.10/24` (no `brd`).
        assert_eq!(broadcast_of(addr, 24, Some(addr)), subnet_broadcast);
        assert_eq!(broadcast_of(addr, 24, None), subnet_broadcast);
        let elsewhere = Some(Ipv4Addr::new(10, 0, 0, 255));
        assert_eq!(broadcast_of(addr, 24, elsewhere), subnet_broadcast);
        // A broadcast address set on purpose inside the subnet is kept.
        let chosen = Some(Ipv4Addr::new(192, 168, 1, 127));
        assert_eq!(broadcast_of(addr, 24, chosen), chosen);
        assert_eq!(broadcast_of(addr, 24, subnet_broadcast), subnet_broadcast);
        assert_eq!(
            broadcast_of(Ipv4Addr::new(10, 1, 2, 3), 8, None),
            Some(Ipv4Addr::new(10, 255, 255, 255))
        );
        assert_eq!(
            broadcast_of(addr, 30, Some(addr)),
            Some(Ipv4Addr::new(192, 168, 1, 11))
        );
        // Point-to-point sized: none.
        assert_eq!(broadcast_of(addr, 31, Some(addr)), None);
        assert_eq!(broadcast_of(addr, 32, subnet_broadcast), None);
    }

    #[test]
    fn loopback_is_listed() {
        let addrs = local_addresses().unwrap();
        assert!(
            addrs.iter().any(|a| a.addr == Ipv4Addr::LOCALHOST),
            "{addrs:?}"
        );
        assert!(local_ips()
            .unwrap()
            .contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
    }
}
