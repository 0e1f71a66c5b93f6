//! What to do with what was observed about a backend's card: keep it, wake with it, and what to
//! say, each thing once (see "Learning the MAC" in docs/behaviour.md). Pure: no I/O, no clock.

use std::net::{IpAddr, Ipv4Addr};

use wol::MacAddr;

pub use super::why::{Level, Why};
use super::Learned;

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

/// What the learner knows of the backend's configuration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Setup {
    /// WOL_MAC (or the table's `mac`): kept, and compared.
    pub mac: Option<MacAddr>,
    /// A wake method is configured (a MAC or a wake URL).
    pub wakes: bool,
    /// Ollama's host, when the URL names it by address: a record for another address is not this
    /// backend's card.
    pub host: Option<IpAddr>,
}

/// What the learner must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Keep this record in the cache file.
    Store(Learned),
    /// Wake with this MAC, on this broadcast address (no MAC is configured).
    Use(Learned),
    /// Drop the record from the cache file: it is not this backend's card any more.
    Forget,
    /// Stop waking with the learned MAC (back to the configured methods).
    StopUsing,
    /// Say this.
    Log(Level, String),
}

/// What was already said and done, so that each thing is said once.
#[derive(Debug, Default)]
pub struct Memory {
    /// The last reason given for not learning (said again only when it changes).
    last_why: Option<Why>,
    /// The configured and learned MACs last warned about.
    warned: Option<(MacAddr, MacAddr)>,
    /// Magic packets go to the learned MAC now.
    in_use: bool,
    /// Look-ups in a row that ruled learning out (see [`FORGET_AFTER`]).
    ruled_out: u32,
}

/// Look-ups in a row that must rule learning out before a record is forgotten: one look-up can
/// fall in a passing state of this host's network (an interface between two addresses, a route
/// through another interface while Wi-Fi reconnects).
pub const FORGET_AFTER: u32 = 2;

/// A look-up ruled learning out for a record not yet forgotten: the next one should come soon.
pub fn to_confirm(mem: &Memory) -> bool {
    (1..FORGET_AFTER).contains(&mem.ruled_out)
}

/// Setting up the learned MAC's packets failed (a socket, an interface not there yet): the next
/// look-up that finds the same card tries again.
pub fn use_failed(mem: &mut Memory) {
    mem.in_use = false;
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

/// Wakes with `l` from now on, unless a MAC is configured.
fn use_it(mem: &mut Memory, setup: &Setup, l: &Learned, steps: &mut Vec<Step>) {
    if setup.mac.is_none() {
        steps.push(Step::Use(l.clone()));
        mem.in_use = true;
    }
}

/// At start: the record in the cache file, if any, is used at once (no MAC configured), unless
/// it is for another address than the one Ollama's URL names: then it is forgotten.
pub fn loaded(mem: &mut Memory, setup: &Setup, known: Option<&Learned>) -> Vec<Step> {
    let Some(l) = known else { return Vec::new() };
    if let Some(host) = setup.host.filter(|h| !l.is_for(*h)) {
        let line = format!(
            "forgot the learned MAC {} of {} on {} from the cache file: Ollama is at {host}",
            l.mac, l.ip, l.interface
        );
        return vec![Step::Forget, Step::Log(Level::Info, line)];
    }
    let mut steps = Vec::new();
    use_it(mem, setup, l, &mut steps);
    if setup.mac.is_none() {
        steps.push(Step::Log(
            Level::Info,
            learned_line(l, ", from the cache file"),
        ));
    }
    steps.extend(check_configured(mem, setup.mac, l));
    steps
}

/// After a look-up of `peer`, the address Ollama was last connected to, at `now` (Unix seconds):
/// what changes and what is said.
pub fn observed(
    mem: &mut Memory,
    setup: &Setup,
    known: Option<&Learned>,
    peer: IpAddr,
    seen: Observation,
    now: u64,
) -> Vec<Step> {
    let found = match seen {
        Ok(found) => found,
        Err(why) => return not_learned(mem, setup, known, peer, why),
    };
    mem.last_why = None;
    mem.ruled_out = 0;
    let l = Learned {
        ip: found.ip,
        mac: found.mac,
        interface: found.interface,
        broadcast: found.broadcast,
        learned_at: now,
    };
    let mut steps = Vec::new();
    match known.filter(|k| k.same_as(&l)) {
        // The same card: nothing to say; used again if it was not (a record for another address
        // at start).
        Some(k) if !mem.in_use => use_it(mem, setup, k, &mut steps),
        Some(_) => {}
        None => {
            let before = known
                .map(|k| format!(", was {} of {} on {}", k.mac, k.ip, k.interface))
                .unwrap_or_default();
            // Said once done: whoever reads the line finds the record kept and in use.
            steps.push(Step::Store(l.clone()));
            use_it(mem, setup, &l, &mut steps);
            steps.push(Step::Log(Level::Info, learned_line(&l, &before)));
        }
    }
    steps.extend(check_configured(mem, setup.mac, &l));
    steps
}

/// No card this time (`why`): a record for another address, or one where learning is ruled out
/// now, is forgotten; the reason is said once until it changes.
fn not_learned(
    mem: &mut Memory,
    setup: &Setup,
    known: Option<&Learned>,
    peer: IpAddr,
    why: Why,
) -> Vec<Step> {
    let mut steps = Vec::new();
    // An IPv6 peer says nothing of the IPv4 card learned (a host name with both kinds of address).
    let moved = peer.is_ipv4() && known.is_some_and(|k| !k.is_for(peer));
    mem.ruled_out = match why.rules_out_learning() {
        true => mem.ruled_out.saturating_add(1),
        false => 0,
    };
    let forget = moved || mem.ruled_out >= FORGET_AFTER;
    if let Some(k) = known.filter(|_| forget) {
        steps.push(Step::Forget);
        if std::mem::take(&mut mem.in_use) {
            steps.push(Step::StopUsing);
        }
        let (level, cause) = match moved {
            true => (Level::Info, format!("Ollama is at {peer} now")),
            false => {
                let (level, line) = why.said(setup.wakes);
                mem.last_why = Some(why.clone());
                (level.max(Level::Info), line)
            }
        };
        let line = format!(
            "forgot the learned MAC {} of {} on {}, magic packets no longer go to it: {cause}",
            k.mac, k.ip, k.interface
        );
        steps.push(Step::Log(level, line));
    }
    if mem.last_why.as_ref() != Some(&why) {
        let (level, line) = why.said(setup.wakes);
        steps.push(Step::Log(level, line));
        mem.last_why = Some(why);
    }
    steps
}

#[cfg(test)]
mod tests;
