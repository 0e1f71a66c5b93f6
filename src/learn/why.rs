//! Why a backend's MAC was not learned, how loud to say it and what to advise, as the log and
//! `doctor` say it (see "Learning the MAC" in docs/behaviour.md). Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Why a backend's MAC was not learned this time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The backend is this machine (loopback or one of its own addresses).
    Local(IpAddr),
    /// An IPv6 address: only the IPv4 neighbour table is read.
    Ipv6(IpAddr),
    /// Not on a directly connected subnet: the neighbour entry would be the router's.
    Routed {
        ip: Ipv4Addr,
        gateway: Ipv4Addr,
        interface: String,
    },
    /// The interface towards it has no broadcast address (point-to-point, a tunnel).
    NoBroadcast { ip: Ipv4Addr, interface: String },
    /// The neighbour table has no complete entry for it on the route's interface (yet).
    NoNeighbour(Ipv4Addr),
    /// The MAC found is one of this machine's own cards.
    OwnCard { ip: Ipv4Addr, interface: String },
    /// The kernel's tables could not be read.
    Failed(String),
}

/// How loud a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Local(ip) => write!(f, "{ip} is this machine itself: no MAC to learn"),
            Why::Ipv6(ip) => write!(
                f,
                "{ip} is an IPv6 address: its MAC is not learned (only the IPv4 neighbour table \
                 is read)"
            ),
            Why::Routed {
                ip,
                gateway,
                interface,
            } => write!(
                f,
                "{ip} is not on a directly connected subnet (reached through the router \
                 {gateway} on {interface}): its MAC is never learned, as the neighbour table holds \
                 the router's and a directed broadcast does not cross it"
            ),
            Why::NoBroadcast { ip, interface } => write!(
                f,
                "{ip} is reached on {interface}, which has no broadcast address: its MAC is not \
                 learned"
            ),
            Why::NoNeighbour(ip) => write!(
                f,
                "no complete entry for {ip} in the neighbour table: its MAC is not learned yet"
            ),
            Why::OwnCard { ip, interface } => write!(
                f,
                "the neighbour entry of {ip} has the MAC of this machine's own {interface}: not learned"
            ),
            Why::Failed(e) => write!(f, "cannot learn the MAC: {e}"),
        }
    }
}

impl Why {
    /// The backend's MAC cannot be learned where it is now (unlike a missing neighbour entry or
    /// tables that could not be read, which the next look-up may change): a record learned earlier
    /// is not its card's any more. Not an IPv6 address: the same card may have both kinds.
    pub fn rules_out_learning(&self) -> bool {
        matches!(
            self,
            Why::Local(_) | Why::Routed { .. } | Why::NoBroadcast { .. }
        )
    }

    /// How loud to say it; `wakes`: a wake method is configured (WOL_MAC or WAKE_URL), so a MAC
    /// that cannot be learned costs nothing.
    pub fn level(&self, wakes: bool) -> Level {
        match self {
            Why::Local(_) | Why::NoNeighbour(_) => Level::Debug,
            Why::Ipv6(_) | Why::Routed { .. } | Why::NoBroadcast { .. } if wakes => Level::Info,
            _ => Level::Warn,
        }
    }

    /// What to set instead, when nothing is configured to wake the backend.
    pub fn advice(&self) -> Option<&'static str> {
        match self {
            Why::Ipv6(_) => Some("set WOL_MAC to wake it with magic packets, or WAKE_URL"),
            Why::Routed { .. } => {
                Some("set WOL_MAC and WOL_BROADCAST, or WAKE_URL to a wake service on its subnet")
            }
            Why::NoBroadcast { .. } => Some("set WOL_MAC and WOL_BROADCAST, or WAKE_URL"),
            _ => None,
        }
    }

    /// The level, the reason and what to do about it; `wakes` as for [`Why::level`].
    pub fn judged(&self, wakes: bool) -> (Level, String, Option<&'static str>) {
        let text = match (wakes, self.advice()) {
            (true, Some(_)) => format!("{self}; the configured wake method is used"),
            _ => self.to_string(),
        };
        (self.level(wakes), text, self.advice().filter(|_| !wakes))
    }

    /// The log line and its level; `wakes` as for [`Why::level`].
    pub fn said(&self, wakes: bool) -> (Level, String) {
        match self.judged(wakes) {
            (level, text, Some(advice)) => (level, format!("{text}; {advice}")),
            (level, text, None) => (level, text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed() -> Why {
        Why::Routed {
            ip: Ipv4Addr::new(10, 1, 2, 3),
            gateway: Ipv4Addr::new(192, 168, 1, 1),
            interface: "eth0".into(),
        }
    }

    #[test]
    fn advice_only_when_nothing_else_wakes_the_backend() {
        let (level, text) = routed().said(false);
        assert_eq!(level, Level::Warn);
        assert!(
            text.contains("through the router 192.168.1.1 on eth0"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "set WOL_MAC and WOL_BROADCAST, or WAKE_URL to a wake service on its subnet"
            ),
            "{text}"
        );
        let (level, text) = routed().said(true);
        assert_eq!(level, Level::Info);
        assert!(!text.contains("set WOL_MAC"), "{text}");
        assert!(
            text.ends_with("the configured wake method is used"),
            "{text}"
        );
        let tunnel = Why::NoBroadcast {
            ip: Ipv4Addr::new(10, 8, 0, 5),
            interface: "tun0".into(),
        };
        assert_eq!(tunnel.said(false).0, Level::Warn);
        assert_eq!(tunnel.said(true).0, Level::Info);
        let v6 = Why::Ipv6("2001:db8::5".parse().unwrap());
        assert_eq!(v6.said(false).0, Level::Warn);
        assert_eq!(v6.said(true).0, Level::Info);
        // Not yet, or this machine: quiet either way; a failure is loud either way.
        assert_eq!(
            Why::NoNeighbour(Ipv4Addr::LOCALHOST).said(false).0,
            Level::Debug
        );
        assert_eq!(
            Why::Local(IpAddr::V4(Ipv4Addr::LOCALHOST)).said(false).0,
            Level::Debug
        );
        assert_eq!(Why::Failed("x".into()).said(true).0, Level::Warn);
    }

    #[test]
    fn what_rules_learning_out() {
        assert!(routed().rules_out_learning());
        // A host name with both kinds of address may be reached over IPv6 and still be the card.
        assert!(!Why::Ipv6("::1".parse().unwrap()).rules_out_learning());
        assert!(Why::Local(IpAddr::V4(Ipv4Addr::LOCALHOST)).rules_out_learning());
        assert!(!Why::NoNeighbour(Ipv4Addr::LOCALHOST).rules_out_learning());
        assert!(!Why::Failed("x".into()).rules_out_learning());
        let own = Why::OwnCard {
            ip: Ipv4Addr::LOCALHOST,
            interface: "br0".into(),
        };
        assert!(!own.rules_out_learning());
    }
}
