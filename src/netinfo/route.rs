//! The kernel's IPv4 routes as `/proc/net/route` shows them (the main table): a pure parser and
//! the longest-prefix match.

use std::net::Ipv4Addr;

const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;

/// One usable line of `/proc/net/route`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The interface the route leaves by.
    pub interface: String,
    /// The destination network.
    pub destination: Ipv4Addr,
    /// The next hop; `None` for a directly connected subnet.
    pub gateway: Option<Ipv4Addr>,
    /// The destination's prefix length.
    pub prefix_len: u8,
    /// Lower is preferred among equal prefixes.
    pub metric: u32,
}

impl RouteEntry {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = mask_of(self.prefix_len);
        u32::from(ip) & mask == u32::from(self.destination) & mask
    }
}

fn mask_of(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len.min(32)))
        .unwrap_or(0)
}

/// The routes in `/proc/net/route` (`text`) that are up and not reject routes (an `unreachable`
/// route is not a way to the host). The header and malformed lines (wrong field count, bad hex, a
/// mask that is not a prefix) are skipped, never a panic.
pub fn parse_routes(text: &str) -> Vec<RouteEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<RouteEntry> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [iface, dest, gw, flags, _refcnt, _use, metric, mask, _mtu, _window, _irtt] = f[..] else {
        return None;
    };
    let flags = u32::from_str_radix(flags, 16).ok()?;
    if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || iface == "*" {
        return None;
    }
    let mask = u32::from(addr(mask)?);
    // A prefix mask: ones, then zeros.
    if mask.leading_ones() + mask.trailing_zeros() != 32 {
        return None;
    }
    let gateway = addr(gw)?;
    let has_gateway = flags & RTF_GATEWAY != 0 && !gateway.is_unspecified();
    Some(RouteEntry {
        interface: iface.to_string(),
        destination: addr(dest)?,
        gateway: has_gateway.then_some(gateway),
        prefix_len: mask.leading_ones() as u8,
        metric: metric.parse().ok()?,
    })
}

/// An address as the kernel prints it: the 32 bits in network byte order, read as a number in the
/// machine's own order and written in hexadecimal.
fn addr(field: &str) -> Option<Ipv4Addr> {
    if field.len() != 8 || !field.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let raw = u32::from_str_radix(field, 16).ok()?;
    Some(Ipv4Addr::from(raw.to_ne_bytes()))
}

/// The route the kernel would pick for `ip` in its main table: the longest prefix that contains
/// it, then the lowest metric.
pub fn best_route(routes: &[RouteEntry], ip: Ipv4Addr) -> Option<&RouteEntry> {
    routes
        .iter()
        .filter(|r| r.contains(ip))
        .min_by_key(|r| (std::cmp::Reverse(r.prefix_len), r.metric))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Hex as the kernel writes it on this machine.
    fn hx(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    fn table() -> String {
        let z = Ipv4Addr::UNSPECIFIED;
        let gw = Ipv4Addr::new(192, 168, 1, 1);
        let lan = Ipv4Addr::new(192, 168, 1, 0);
        let m24 = Ipv4Addr::new(255, 255, 255, 0);
        let vpn = Ipv4Addr::new(10, 8, 0, 0);
        let m16 = Ipv4Addr::new(255, 255, 0, 0);
        let lab = Ipv4Addr::new(10, 8, 5, 0);
        let mut t = String::from(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n",
        );
        let mut row = |i: &str, d, g, flags: &str, metric: u32, m| {
            t.push_str(&format!(
                "{i}\t{}\t{}\t{flags}\t0\t0\t{metric}\t{}\t0\t0\t0\n",
                hx(d),
                hx(g),
                hx(m)
            ))
        };
        row("eth0", z, gw, "0003", 100, z);
        row("wlan0", z, gw, "0003", 600, z);
        row("eth0", lan, z, "0001", 100, m24);
        row("wlan0", lan, z, "0001", 600, m24);
        row("tun0", vpn, z, "0001", 0, m16);
        row("eth0", lab, gw, "0003", 0, m24);
        // An `unreachable` route as `ip route add unreachable` leaves it.
        row("*", Ipv4Addr::new(10, 9, 9, 0), z, "0201", 4000, m24);
        t
    }

    #[test]
    fn longest_prefix_then_lowest_metric() {
        let routes = parse_routes(&table());
        assert_eq!(routes.len(), 6, "{routes:?}");
        let desktop = best_route(&routes, Ipv4Addr::new(192, 168, 1, 50)).unwrap();
        assert_eq!(
            (
                desktop.interface.as_str(),
                desktop.gateway,
                desktop.prefix_len
            ),
            ("eth0", None, 24)
        );
        let vpn = best_route(&routes, Ipv4Addr::new(10, 8, 7, 7)).unwrap();
        assert_eq!((vpn.interface.as_str(), vpn.prefix_len), ("tun0", 16));
        let lab = best_route(&routes, Ipv4Addr::new(10, 8, 5, 20)).unwrap();
        assert_eq!(lab.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
        let far = best_route(&routes, Ipv4Addr::new(1, 1, 1, 1)).unwrap();
        assert_eq!(
            (far.interface.as_str(), far.prefix_len, far.gateway),
            ("eth0", 0, Some(Ipv4Addr::new(192, 168, 1, 1)))
        );
        // The reject route is no route: the default one is used.
        let rejected = best_route(&routes, Ipv4Addr::new(10, 9, 9, 2)).unwrap();
        assert_eq!(rejected.prefix_len, 0);
        assert!(best_route(&[], Ipv4Addr::LOCALHOST).is_none());
    }

    #[test]
    fn hostile_lines_are_skipped() {
        let text = "\
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FF00FF\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0
eth0\t0001A8C0\t00000000\tzz\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t0001A8C\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t0001A8C0\t00000000\t0001\t0\t0\t-1\t00FFFFFF\t0\t0\t0
eth0\t0001A8C0\t00000000\t0000\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t+001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
\u{0}\t\t\t
";
        assert_eq!(parse_routes(text), vec![]);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let routes = parse_routes(&text);
            let _ = best_route(&routes, Ipv4Addr::new(192, 168, 1, 50));
        }

        #[test]
        fn never_panics_on_near_valid_lines(
            fields in proptest::collection::vec("[0-9A-Fa-f+*-]{0,9}", 11),
            ip in any::<u32>(),
        ) {
            let routes = parse_routes(&fields.join("\t"));
            let _ = best_route(&routes, Ipv4Addr::from(ip));
        }

        #[test]
        fn a_match_contains_the_address(prefix in 0u8..=32, dest in any::<u32>(), ip in any::<u32>()) {
            let r = RouteEntry {
                interface: "eth0".into(),
                destination: Ipv4Addr::from(dest),
                gateway: None,
                prefix_len: prefix,
                metric: 0,
            };
            let routes = [r];
            let hit = best_route(&routes, Ipv4Addr::from(ip)).is_some();
            let shift = 32 - u32::from(prefix);
            let same = prefix == 0 || (dest >> shift) == (ip >> shift);
            prop_assert_eq!(hit, same);
        }
    }
}
