//! Looks a backend's address up in the kernel's tables: the route to it, its neighbour entry and
//! the broadcast address of the interface between (blocking: run it off the async threads).

use std::net::IpAddr;

use super::decide::{Found, Observation, Why};
use crate::netinfo;

/// What the kernel says about `peer`, the address Ollama was last connected to.
pub fn observe(peer: IpAddr) -> Observation {
    let failed = |e: netinfo::NetInfoError| Why::Failed(e.to_string());
    if netinfo::is_loopback_or_local(peer).map_err(failed)? {
        return Err(Why::Local(peer));
    }
    let IpAddr::V4(ip) = peer else {
        return Err(Why::Ipv6(peer));
    };
    let route = netinfo::route_to(ip).map_err(failed)?;
    if let Some(gateway) = route.gateway {
        return Err(Why::Routed {
            ip,
            gateway,
            interface: route.interface,
        });
    }
    let Some(broadcast) = route.broadcast else {
        return Err(Why::NoBroadcast {
            ip,
            interface: route.interface,
        });
    };
    let mac = netinfo::neighbour_mac_on(ip, Some(&route.interface))
        .map_err(failed)?
        .ok_or(Why::NoNeighbour(ip))?;
    // This machine answers for the address (its own proxy ARP, a bridge): the entry is not the
    // backend's card. Proxy ARP by another device is not detected (see "Learning the MAC").
    if let Ok(Some(own)) = netinfo::own_interface_of(mac) {
        return Err(Why::OwnCard { ip, interface: own });
    }
    Ok(Found {
        ip,
        mac,
        interface: route.interface,
        broadcast,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_never_learned() {
        let local = "127.0.0.1".parse().unwrap();
        assert_eq!(observe(local), Err(Why::Local(local)));
        let v6 = "::1".parse().unwrap();
        assert_eq!(observe(v6), Err(Why::Local(v6)));
        let far = "2001:db8::5".parse().unwrap();
        assert_eq!(observe(far), Err(Why::Ipv6(far)));
    }
}
