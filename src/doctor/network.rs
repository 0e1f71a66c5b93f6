//! The judgements of `doctor` about the network path to a machine: the route to it, its MAC
//! (configured, learned, seen now) and where the magic packets would leave (see "Doctor" in
//! docs/behaviour.md). Pure functions of [`Net`].

use std::net::Ipv4Addr;
use std::time::Duration;

use wol::MacAddr;

use super::checks::human;
use super::facts::Magic;
use super::finding::Finding;
use crate::config::BackendConfig;

pub use crate::learn::Learned;
pub use crate::netinfo::Route;

/// What the kernel says about the way to a machine whose Ollama is at `ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub ip: Ipv4Addr,
    pub route: Result<Route, String>,
    /// The neighbour entry of `ip`, read just after Ollama was asked (fresh if it answered).
    pub neighbour: Result<Option<MacAddr>, String>,
    /// The record learned for `ip` while the machine was awake (kept with its cache file), and how
    /// long ago it was learned.
    pub learned: Option<(Learned, Duration)>,
    /// Where each magic-packet destination would leave (empty without magic packets, configured
    /// or learned).
    pub destinations: Vec<(Ipv4Addr, Result<Route, String>)>,
}

impl Net {
    /// Whether `ip` is on a directly connected network (`None`: the route is unknown).
    pub fn direct(&self) -> Option<bool> {
        self.route.as_ref().ok().map(Route::is_direct)
    }
}

/// Every network finding about `cfg`'s machine, `magic` the packets the proxy would send;
/// `answered`: Ollama answered just now.
pub fn findings(
    cfg: &BackendConfig,
    net: &Net,
    magic: Option<&Magic>,
    answered: bool,
) -> Vec<Finding> {
    let mut out = vec![route(net, magic.is_some())];
    out.extend(macs(cfg, net, answered));
    if let (Ok(r), Some(m)) = (&net.route, magic) {
        if r.is_direct() {
            out.extend(destinations(m, net.ip, r, &net.destinations));
        }
    }
    out
}

/// The route to the machine: which interface, directly connected or via a router, and up;
/// `magic`: magic packets are sent (configured or learned).
fn route(net: &Net, magic: bool) -> Finding {
    let ip = net.ip;
    let r = match &net.route {
        Ok(r) => r,
        Err(e) => return Finding::warn(format!("cannot tell the route to {ip}: {e}")),
    };
    let iface = &r.interface;
    if !r.is_up {
        return Finding::fail(format!(
            "the route to {ip} leaves by {iface}, which is down"
        ))
        .advice(format!(
            "bring {iface} up (ip link set {iface} up) or check its cable"
        ));
    }
    if !r.has_carrier {
        return Finding::warn(format!(
            "the route to {ip} leaves by {iface}, which is up but has no carrier"
        ))
        .advice(format!(
            "check {iface}'s cable and the switch port (or the Wi-Fi association): nothing \
             leaves by it, magic packets neither"
        ));
    }
    let here = r
        .local_addr
        .map(|a| format!(" (this host is {a}/{})", r.prefix_len))
        .unwrap_or_default();
    match r.gateway {
        None => Finding::ok(format!("route to {ip}: {iface}, directly connected{here}")),
        Some(gw) if magic => Finding::warn(format!(
            "route to {ip}: via the router {gw} on {iface}: magic packets are broadcasts and do \
             not cross a router"
        ))
        .advice(
            "run the proxy in the desktop's network, or wake it with a wake URL (WolGoWeb) \
             served from a box in that network",
        ),
        Some(gw) => Finding::info(format!("route to {ip}: via the router {gw} on {iface}")),
    }
}

/// The configured MAC against the one learned and the one seen now for the machine's address.
fn macs(cfg: &BackendConfig, net: &Net, answered: bool) -> Vec<Finding> {
    let ip = net.ip;
    let configured = cfg.wake.magic.as_ref().map(|m| m.mac);
    let seen = match &net.neighbour {
        Ok(Some(mac)) => Some(*mac),
        Ok(None) => None,
        Err(e) => {
            return vec![Finding::warn(format!(
                "cannot read the neighbour entry of {ip}: {e}"
            ))]
        }
    };
    let when = if answered { "seen" } else { "last seen" };
    let mut out = Vec::new();
    if let Some((l, age)) = &net.learned {
        let text = format!(
            "learned MAC {} (for {}, {} ago, on {}, broadcast {})",
            l.mac,
            l.ip,
            human(*age),
            l.interface,
            l.broadcast
        );
        out.push(match configured {
            Some(c) if c != l.mac => Finding::warn(format!(
                "configured MAC {c} differs from the {text}: is WOL_MAC the Wi-Fi card's?"
            ))
            .advice(wired_advice(ip, l.mac)),
            _ => Finding::info(text),
        });
    }
    if let Some(s) = seen {
        out.push(match configured {
            Some(c) if c != s => Finding::warn(format!(
                "configured MAC {c} differs from the MAC {when} for {ip} ({s}): is WOL_MAC the \
                 Wi-Fi card's?"
            ))
            .advice(wired_advice(ip, s)),
            Some(c) => Finding::ok(format!("configured MAC {c} is the one {when} for {ip}")),
            None => Finding::info(format!("the MAC {when} for {ip} is {s}")),
        });
    }
    out
}

fn wired_advice(ip: Ipv4Addr, mac: MacAddr) -> String {
    format!(
        "magic packets must carry the MAC of the card that wakes the desktop (the wired one); if \
         {ip} is that card's address, set WOL_MAC / mac to {mac}"
    )
}

/// Where each of `magic`'s destinations leaves, against the machine's interface and network.
fn destinations(
    magic: &Magic,
    ip: Ipv4Addr,
    to_ollama: &Route,
    dests: &[(Ipv4Addr, Result<Route, String>)],
) -> Vec<Finding> {
    let iface = &to_ollama.interface;
    let Some(broadcast) = to_ollama.broadcast else {
        return vec![Finding::warn(format!(
            "{iface}, the interface of {ip}'s network, has no broadcast address"
        ))
        .advice("magic packets need a network that broadcasts (Ethernet or Wi-Fi, not a tunnel)")];
    };
    let fix = format!(
        "set WOL_BROADCAST / broadcast to {broadcast} (the broadcast address of {iface}'s network) \
         or WOL_INTERFACE / interface to {iface}"
    );
    if let Some(bound) = magic.sender.interface.as_ref().filter(|b| *b != iface) {
        return vec![Finding::warn(format!(
            "magic packets leave by {bound} (the configured interface), but {ip} is reached by {iface}"
        ))
        .advice(fix)];
    }
    dests
        .iter()
        .map(|(dest, route)| {
            let out_of = match (&magic.sender.interface, route) {
                (Some(bound), _) => bound.clone(),
                (None, Ok(r)) => r.interface.clone(),
                (None, Err(e)) => {
                    return Finding::warn(format!("cannot tell where packets to {dest} leave: {e}"))
                }
            };
            if out_of != *iface {
                return Finding::warn(format!(
                    "packets to {dest} leave by {out_of}, but {ip} is on {iface}"
                ))
                .advice(fix.clone());
            }
            if *dest == ip {
                return Finding::warn(format!(
                    "packets to {dest} go to the desktop's own address: once it sleeps it answers \
                     no ARP, and they stop arriving"
                ))
                .advice(fix.clone());
            }
            if *dest == broadcast || dest.is_broadcast() {
                return Finding::ok(format!(
                    "packets to {dest} leave by {iface}, the interface of {ip}'s network"
                ));
            }
            Finding::warn(format!(
                "{dest} is not the broadcast address of {ip}'s network ({broadcast})"
            ))
            .advice(fix.clone())
        })
        .collect()
}

#[cfg(test)]
#[path = "network_tests.rs"]
mod tests;
