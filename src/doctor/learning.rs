//! The judgements of `doctor` about learning the MAC: whether the record in the cache file is for
//! Ollama's address now, and why the MAC is not (or cannot be) learned, as the learner's own
//! look-up says (see "Learning the MAC" and "Doctor" in docs/behaviour.md). Pure.

use std::net::IpAddr;
use std::time::Duration;

use super::checks::human;
use super::finding::Finding;
use super::network::Learned;
use crate::config::BackendConfig;
use crate::learn::decide::{Level, Observation};

/// The look-up `seen` says the MAC cannot be learned where the machine is (through a router, ...).
pub fn never_learned(seen: Option<&Observation>) -> bool {
    seen.and_then(|s| s.as_ref().err())
        .is_some_and(|why| why.rules_out_learning())
}

/// The findings about learning `cfg`'s MAC: `record` is the one in its cache file (with its age),
/// `ip` Ollama's address now, `seen` the learner's look-up of it.
pub fn findings(
    cfg: &BackendConfig,
    record: Option<&(Learned, Duration)>,
    ip: Option<IpAddr>,
    seen: Option<&Observation>,
) -> Vec<Finding> {
    // Never woken, never learned.
    if cfg.always_on {
        return Vec::new();
    }
    let mut out = Vec::new();
    let never = never_learned(seen);
    let current = match (record, ip) {
        (Some((l, age)), Some(ip)) if !l.is_for(ip) => {
            let advice = match never {
                true => "set WOL_MAC / mac, or WAKE_URL, to wake it (see why below)".to_string(),
                false => format!(
                    "it learns {ip}'s MAC once it sees it awake; set WOL_MAC / mac to wake it \
                     before that"
                ),
            };
            out.push(
                Finding::warn(format!(
                    "the learned MAC {} in the cache file (from {} ago) is for {}, but Ollama is \
                     at {ip} now: the proxy forgets it",
                    l.mac,
                    human(*age),
                    l.ip
                ))
                .advice(advice),
            );
            None
        }
        _ => record.map(|(l, _)| l),
    };
    let Some(Err(why)) = seen else { return out };
    let (level, mut text, advice) = why.judged(cfg.wake.is_enabled());
    if let Some(l) = current.filter(|_| why.rules_out_learning()) {
        text.push_str(&format!(
            "; the proxy forgets the learned MAC {} when its look-ups keep finding this",
            l.mac
        ));
    }
    let found = match level {
        Level::Warn => Finding::warn(text),
        Level::Info | Level::Debug => Finding::info(text),
    };
    out.push(match advice {
        Some(a) => found.advice(a),
        None => found,
    });
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::doctor::checks::tests::machine;
    use crate::doctor::finding::Verdict;
    use crate::learn::decide::Why;

    const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);

    fn record(ip: Ipv4Addr) -> (Learned, Duration) {
        let learned = Learned {
            ip,
            mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
            interface: "eth0".into(),
            broadcast: Ipv4Addr::new(192, 168, 1, 255),
            learned_at: 1_700_000_000,
        };
        (learned, Duration::from_secs(7200))
    }

    fn routed() -> Observation {
        Err(Why::Routed {
            ip: IP,
            gateway: Ipv4Addr::new(192, 168, 1, 1),
            interface: "eth0".into(),
        })
    }

    fn lines(found: &[Finding]) -> Vec<(Verdict, String)> {
        let line = |f: &Finding| (f.verdict, f.line("desk").to_string());
        found.iter().map(line).collect()
    }

    #[test]
    fn a_record_for_another_address_is_warned_about() {
        let none = machine(&[]);
        let ip = Some(IpAddr::V4(IP));
        let old = record(Ipv4Addr::new(192, 168, 1, 99));
        let f = lines(&findings(&none, Some(&old), ip, Some(&Ok(found()))));
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].0, Verdict::Warn);
        assert!(
            f[0].1.contains("aa:bb:cc:dd:ee:01 in the cache file (from 2h ago) is for 192.168.1.99, but Ollama is at 192.168.1.20 now"),
            "{f:?}"
        );
        let own = record(IP);
        assert!(findings(&none, Some(&own), ip, Some(&Ok(found()))).is_empty());
        // Not resolved: nothing to compare with.
        assert!(findings(&none, Some(&old), None, None).is_empty());
    }

    fn found() -> crate::learn::decide::Found {
        crate::learn::decide::Found {
            ip: IP,
            mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
            interface: "eth0".into(),
            broadcast: Ipv4Addr::new(192, 168, 1, 255),
        }
    }

    #[test]
    fn why_it_is_not_learned_warns_only_when_nothing_else_wakes_it() {
        let ip = Some(IpAddr::V4(IP));
        let f = lines(&findings(&machine(&[]), None, ip, Some(&routed())));
        assert_eq!(f[0].0, Verdict::Warn);
        assert!(
            f[0].1.contains("not on a directly connected subnet")
                && f[0].1.contains("its MAC is never learned")
                && f[0]
                    .1
                    .contains(": set WOL_MAC and WOL_BROADCAST, or WAKE_URL"),
            "{f:?}"
        );
        let url = machine(&["--wake-url", "http://pi:9090/wol?mac=x"]);
        let f = lines(&findings(&url, None, ip, Some(&routed())));
        assert_eq!(f[0].0, Verdict::Info);
        assert!(
            f[0].1.contains("the configured wake method is used"),
            "{f:?}"
        );
        // A record there: the proxy drops it after its next look-ups.
        let f = lines(&findings(
            &machine(&[]),
            Some(&record(IP)),
            ip,
            Some(&routed()),
        ));
        assert!(
            f[0].1.contains(
                "the proxy forgets the learned MAC aa:bb:cc:dd:ee:01 when its look-ups keep finding this"
            ),
            "{f:?}"
        );
        let v6 = "2001:db8::5".parse().unwrap();
        let f = lines(&findings(
            &machine(&[]),
            None,
            Some(v6),
            Some(&Err(Why::Ipv6(v6))),
        ));
        assert_eq!(f[0].0, Verdict::Warn);
        // Not seen yet, or this machine: information.
        let later = Err(Why::NoNeighbour(IP));
        let f = lines(&findings(&machine(&[]), None, ip, Some(&later)));
        assert_eq!(f[0].0, Verdict::Info);
        assert!(f[0].1.contains("not learned yet"), "{f:?}");
        // Tables that cannot be read: a warning, whatever is configured.
        let failed = Err(Why::Failed("cannot read /proc/self/net/route".into()));
        let f = lines(&findings(&url, None, ip, Some(&failed)));
        assert_eq!(f[0].0, Verdict::Warn);
    }
}
