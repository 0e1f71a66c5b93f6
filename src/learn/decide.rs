//! What to do with what was observed about a backend's card: keep it, wake with it, and what to
//! say, each thing once (see "Learning the MAC" in docs/behaviour.md). Pure: no I/O, no clock.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use wol::MacAddr;

use super::Learned;

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
    /// The neighbour table has no complete entry for it (yet).
    NoNeighbour(Ipv4Addr),
    /// The MAC found is one of this machine's own cards.
    OwnCard { ip: Ipv4Addr, interface: String },
    /// The kernel's tables could not be read.
    Failed(String),
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Local(ip) => write!(f, "{ip} is this machine itself: no MAC to learn"),
            Why::Ipv6(ip) => write!(
                f,
                "{ip} is an IPv6 address: its MAC is not learned (only the IPv4 neighbour table \
                 is read); set WOL_MAC to wake it with magic packets"
            ),
            Why::Routed {
                ip,
                gateway,
                interface,
            } => write!(
                f,
                "{ip} is not on a directly connected subnet (reached through the router \
                 {gateway} on {interface}): its MAC is never learned, as the neighbour table holds \
                 the router's and a directed broadcast does not cross it; set WOL_MAC and \
                 WOL_BROADCAST, or WAKE_URL to a wake service on its subnet"
            ),
            Why::NoBroadcast { ip, interface } => write!(
                f,
                "{ip} is reached on {interface}, which has no broadcast address: its MAC is not \
                 learned; set WOL_MAC and WOL_BROADCAST"
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

/// How loud a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
}

impl Why {
    fn level(&self) -> Level {
        match self {
            Why::Local(_) | Why::NoNeighbour(_) => Level::Debug,
            Why::Ipv6(_) => Level::Info,
            _ => Level::Warn,
        }
    }
}

/// What was seen: a card, or why none.
pub type Observation = Result<Found, Why>;

/// A card found in the neighbour table, with the way to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub interface: String,
    pub broadcast: Ipv4Addr,
}

/// What the learner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep this record in the cache file.
    Store(Learned),
    /// Wake with this MAC, on this broadcast address (no MAC is configured).
    Use(Learned),
    /// Say this.
    Log(Level, String),
}

/// What was already said, so that each thing is said once.
#[derive(Debug, Default)]
pub struct Memory {
    /// The last reason given for not learning (said again only when it changes).
    last_why: Option<Why>,
    /// The configured and learned MACs last warned about.
    warned: Option<(MacAddr, MacAddr)>,
}

fn learned_line(l: &Learned, from: &str) -> String {
    format!(
        "learned MAC {} of {} on {} (directed broadcast {}){from}",
        l.mac, l.ip, l.interface, l.broadcast
    )
}

/// A configured MAC that differs from the learned one: warned once per pair.
fn check_configured(mem: &mut Memory, configured: Option<MacAddr>, l: &Learned) -> Option<Step> {
    let c = configured.filter(|c| *c != l.mac)?;
    if mem.warned == Some((c, l.mac)) {
        return None;
    }
    mem.warned = Some((c, l.mac));
    Some(Step::Log(
        Level::Warn,
        format!(
            "the configured MAC {c} (WOL_MAC) differs from the MAC {} learned for {} on {}: \
             keeping the configured one; is it the card of another machine, or another card of \
             this one?",
            l.mac, l.ip, l.interface
        ),
    ))
}

/// At start: the record in the cache file, if any, is used at once (no MAC configured).
pub fn loaded(mem: &mut Memory, configured: Option<MacAddr>, known: Option<&Learned>) -> Vec<Step> {
    let Some(l) = known else { return Vec::new() };
    let mut steps = Vec::new();
    if configured.is_none() {
        steps.push(Step::Use(l.clone()));
        steps.push(Step::Log(
            Level::Info,
            learned_line(l, ", from the cache file"),
        ));
    }
    steps.extend(check_configured(mem, configured, l));
    steps
}

/// After an observation at `now` (Unix seconds): what changes and what is said.
pub fn observed(
    mem: &mut Memory,
    configured: Option<MacAddr>,
    known: Option<&Learned>,
    seen: Observation,
    now: u64,
) -> Vec<Step> {
    let found = match seen {
        Ok(found) => found,
        Err(why) => {
            if mem.last_why.as_ref() == Some(&why) {
                return Vec::new();
            }
            let step = Step::Log(why.level(), why.to_string());
            mem.last_why = Some(why);
            return vec![step];
        }
    };
    mem.last_why = None;
    let l = Learned {
        ip: found.ip,
        mac: found.mac,
        interface: found.interface,
        broadcast: found.broadcast,
        learned_at: now,
    };
    let mut steps = Vec::new();
    if !known.is_some_and(|k| k.same_as(&l)) {
        let before = known
            .map(|k| format!(", was {} on {}", k.mac, k.interface))
            .unwrap_or_default();
        // Said once done: whoever reads the line finds the record kept and in use.
        steps.push(Step::Store(l.clone()));
        if configured.is_none() {
            steps.push(Step::Use(l.clone()));
        }
        steps.push(Step::Log(Level::Info, learned_line(&l, &before)));
    }
    steps.extend(check_configured(mem, configured, &l));
    steps
}

#[cfg(test)]
mod tests;
