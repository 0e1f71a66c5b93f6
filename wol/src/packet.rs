//! The magic packet: 6 × `0xFF`, the MAC 16 times, then the optional 6-byte SecureOn password.

use crate::MacAddr;

/// A Wake-on-LAN magic packet (102 bytes, or 108 with a SecureOn password).
#[derive(Clone, PartialEq, Eq)]
pub struct MagicPacket {
    bytes: Vec<u8>,
}

impl MagicPacket {
    /// Length of a packet without SecureOn password.
    pub const LEN: usize = 102;

    /// Builds the packet for `mac`, appending `secureon` when given.
    pub fn new(mac: MacAddr, secureon: Option<MacAddr>) -> Self {
        let mut bytes = Vec::with_capacity(Self::LEN + 6);
        bytes.extend_from_slice(&[0xff; 6]);
        for _ in 0..16 {
            bytes.extend_from_slice(&mac.0);
        }
        if let Some(password) = secureon {
            bytes.extend_from_slice(&password.0);
        }
        MagicPacket { bytes }
    }

    /// The sleep-on-lan packet for `mac`: a magic packet whose MAC is written in reverse byte
    /// order (`aa:bb:cc:dd:ee:ff` becomes `ff:ee:dd:cc:bb:aa`), sent like a wake packet. The
    /// sleep-on-lan agent (Windows and Linux) suspends its machine when it receives one.
    pub fn sleep_on_lan(mac: MacAddr) -> Self {
        let mut reversed = mac.0;
        reversed.reverse();
        Self::new(MacAddr(reversed), None)
    }

    /// The bytes to put in a UDP datagram.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl std::fmt::Debug for MagicPacket {
    // The SecureOn password is a secret: show only the length.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MagicPacket({} bytes)", self.bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_bytes() {
        let mac = MacAddr([1, 2, 3, 4, 5, 6]);
        let p = MagicPacket::new(mac, None);
        let b = p.as_bytes();
        assert_eq!(b.len(), 102);
        assert_eq!(&b[..6], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&b[6 + 6 * i..12 + 6 * i], &[1, 2, 3, 4, 5, 6]);
        }
    }

    #[test]
    fn sleep_on_lan_packet_has_the_mac_reversed() {
        let p = MagicPacket::sleep_on_lan(MacAddr([1, 2, 3, 4, 5, 6]));
        let b = p.as_bytes();
        assert_eq!(b.len(), 102);
        assert_eq!(&b[..6], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&b[6 + 6 * i..12 + 6 * i], &[6, 5, 4, 3, 2, 1]);
        }
    }

    #[test]
    fn secureon_is_appended() {
        let mac = MacAddr([0xaa; 6]);
        let pw = MacAddr([0x10, 0x20, 0x30, 0x40, 0x50, 0x60]);
        let p = MagicPacket::new(mac, Some(pw));
        let b = p.as_bytes();
        assert_eq!(b.len(), 108);
        assert_eq!(&b[..102], MagicPacket::new(mac, None).as_bytes());
        assert_eq!(&b[102..], &[0x10, 0x20, 0x30, 0x40, 0x50, 0x60]);
        assert_eq!(format!("{p:?}"), "MagicPacket(108 bytes)");
    }
}
