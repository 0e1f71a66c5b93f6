//! The kernel's IPv4 neighbour table as `/proc/net/arp` shows it: a pure parser.

use std::net::Ipv4Addr;

use wol::MacAddr;

/// `ATF_COM`: the entry is complete (the neighbour answered).
const ATF_COM: u32 = 0x2;

/// One line of `/proc/net/arp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArpEntry {
    /// The neighbour's address.
    pub ip: Ipv4Addr,
    /// The hardware address, `None` for an incomplete or failed entry (or all zeros).
    pub mac: Option<MacAddr>,
    /// The interface the neighbour is on.
    pub device: String,
}

/// The entries of `/proc/net/arp` (`text`): the header line and lines that are not six
/// well-formed fields are skipped, never a panic.
pub fn parse_arp(text: &str) -> Vec<ArpEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<ArpEntry> {
    let mut fields = line.split_whitespace();
    let ip: Ipv4Addr = fields.next()?.parse().ok()?;
    let _hw_type = hex(fields.next()?)?;
    let flags = hex(fields.next()?)?;
    let mac: MacAddr = fields.next()?.parse().ok()?;
    let _mask = fields.next()?;
    let device = fields.next()?.to_string();
    if fields.next().is_some() {
        return None;
    }
    let complete = flags & ATF_COM != 0 && mac.octets() != [0; 6];
    Some(ArpEntry {
        ip,
        mac: complete.then_some(mac),
        device,
    })
}

/// A `0x`-prefixed hexadecimal number, as the kernel writes the type and flags.
fn hex(field: &str) -> Option<u32> {
    let digits = field.strip_prefix("0x")?;
    u32::from_str_radix(digits, 16).ok()
}

/// The MAC of `ip` in `entries`: the first complete entry, on `device` only when it is given (an
/// entry on another interface is another link's neighbour, not the one the route leads to).
pub fn mac_of(entries: &[ArpEntry], ip: Ipv4Addr, device: Option<&str>) -> Option<MacAddr> {
    entries
        .iter()
        .filter(|e| e.ip == ip && device.is_none_or(|d| e.device == d))
        .find_map(|e| e.mac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
192.168.1.1      0x1         0x2         a0:b1:c2:d3:e4:f5     *        eth0
192.168.1.50     0x1         0x2         02:00:5e:10:20:30     *        eth0
192.168.1.77     0x1         0x0         00:00:00:00:00:00     *        eth0
10.0.0.9         0x1         0x6         11:22:33:44:55:66     *        wlan0
192.168.1.50     0x1         0x2         02:00:5e:aa:bb:cc     *        br0
";

    #[test]
    fn reads_a_real_looking_table() {
        let e = parse_arp(TABLE);
        assert_eq!(e.len(), 5);
        assert_eq!(e[0].ip, Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(e[0].device, "eth0");
        let mac = |s: &str| Some(s.parse::<MacAddr>().unwrap());
        assert_eq!(e[1].mac, mac("02:00:5e:10:20:30"));
        // Incomplete (flags 0x0, all zeros): no MAC.
        assert_eq!(e[2].mac, None);
        // Permanent and complete (0x6).
        assert_eq!(e[3].mac, mac("11:22:33:44:55:66"));
        let ip = Ipv4Addr::new(192, 168, 1, 50);
        assert_eq!(mac_of(&e, ip, None), mac("02:00:5e:10:20:30"));
        assert_eq!(mac_of(&e, ip, Some("br0")), mac("02:00:5e:aa:bb:cc"));
        // Only on the interface asked for: none there is none.
        assert_eq!(mac_of(&e, ip, Some("nope0")), None);
        assert_eq!(mac_of(&e, Ipv4Addr::new(10, 0, 0, 9), Some("eth0")), None);
        assert_eq!(mac_of(&e, Ipv4Addr::new(192, 168, 1, 77), None), None);
        assert_eq!(mac_of(&e, Ipv4Addr::new(192, 168, 1, 99), None), None);
    }

    #[test]
    fn complete_flag_with_zero_mac_and_hostile_lines_are_not_entries() {
        let text = "\
192.168.1.2 0x1 0x2 00:00:00:00:00:00 * eth0
192.168.1.3 0x1 0x2 02:00:00:00:00:03 * eth0 extra
192.168.1.4 0x1 2 02:00:00:00:00:04 * eth0
300.1.1.1 0x1 0x2 02:00:00:00:00:05 * eth0
192.168.1.6 0x1 0x2 02:00:00:00:00 * eth0
192.168.1.7 0x1 0x2 02:00:00:00:00:07 *
192.168.1.8 0x1 0xzz 02:00:00:00:00:08 * eth0

\u{0}\u{ff}garbage
";
        let e = parse_arp(text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].mac, None);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_arp(&text);
        }

        #[test]
        fn never_panics_on_near_valid_lines(
            ip in "[0-9.]{0,18}", t in "(0x)?[0-9a-fA-Fx]{0,9}", f in "(0x)?[0-9a-fA-Fx]{0,9}",
            mac in "[0-9a-f:.-]{0,20}", dev in "\\PC{0,20}",
        ) {
            let line = format!("{ip} {t} {f} {mac} * {dev}");
            let _ = parse_arp(&line);
        }
    }
}
