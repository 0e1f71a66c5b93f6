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
}

impl IfaceAddr {
    /// `ip` is in this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len.min(32)))
            .unwrap_or(0);
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
            let broadcasts = i.flags.contains(InterfaceFlags::IFF_BROADCAST);
            Some(IfaceAddr {
                addr,
                prefix_len: mask.leading_ones() as u8,
                broadcast: v4(i.broadcast.as_ref()).filter(|_| broadcasts),
                is_up: i.flags.contains(InterfaceFlags::IFF_UP),
                interface: i.interface_name,
            })
        })
        .collect())
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
        };
        assert!(a.contains(Ipv4Addr::new(192, 168, 1, 50)));
        assert!(!a.contains(Ipv4Addr::new(192, 168, 2, 50)));
        let all = IfaceAddr { prefix_len: 0, ..a };
        assert!(all.contains(Ipv4Addr::new(8, 8, 8, 8)));
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
