//! Table tests of the network checks: routes, MACs and destinations in, findings out.

use super::*;
use crate::doctor::checks::tests::machine;
use crate::doctor::facts::Magic;
use crate::doctor::finding::Verdict;

const IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
const BCAST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 255);
const WIRED: &str = "aa:bb:cc:dd:ee:ff";
const WIFI: &str = "11:22:33:44:55:66";

fn eth0() -> Route {
    Route {
        interface: "eth0".into(),
        gateway: None,
        local_addr: Some(Ipv4Addr::new(192, 168, 1, 2)),
        prefix_len: 24,
        broadcast: Some(BCAST),
        is_up: true,
        has_carrier: true,
    }
}

fn wlan0_default() -> Route {
    Route {
        interface: "wlan0".into(),
        gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
        local_addr: Some(Ipv4Addr::new(10, 0, 0, 7)),
        prefix_len: 0,
        broadcast: Some(Ipv4Addr::new(10, 0, 0, 255)),
        is_up: true,
        has_carrier: true,
    }
}

/// The network facts of a desktop at [`IP`] on eth0, its card's MAC seen as `seen`.
fn net(seen: Option<&str>, dests: Vec<(Ipv4Addr, Route)>) -> Net {
    Net {
        ip: IP,
        route: Ok(eth0()),
        neighbour: Ok(seen.map(|m| m.parse().unwrap())),
        learned: None,
        destinations: dests.into_iter().map(|(d, r)| (d, Ok(r))).collect(),
    }
}

/// The findings as `doctor` makes them: the packets are the configured MAC's, else the learned
/// one's.
fn all(cfg: &BackendConfig, net: &Net, answered: bool) -> Vec<Finding> {
    let magic = Magic::of(cfg, net.learned.as_ref().map(|(l, _)| l));
    findings(cfg, net, magic.as_ref(), answered)
}

fn lines(found: &[Finding]) -> Vec<(Verdict, String)> {
    found
        .iter()
        .map(|f| (f.verdict, f.line("desk").to_string()))
        .collect()
}

/// The one finding whose line contains `text`, with its verdict.
fn one(found: &[Finding], text: &str) -> Verdict {
    let all = lines(found);
    let hits: Vec<_> = all.iter().filter(|(_, l)| l.contains(text)).collect();
    assert_eq!(hits.len(), 1, "{text:?} in {all:#?}");
    hits[0].0
}

#[test]
fn the_route_directly_connected_via_a_router_or_down() {
    let magic = machine(&["--mac", WIRED]);
    let url_only = machine(&["--wake-url", "http://pi:9090/wol?mac=x"]);
    let direct = net(None, vec![]);
    let f = all(&magic, &direct, true);
    let text = "route to 192.168.1.20: eth0, directly connected (this host is 192.168.1.2/24)";
    assert_eq!(one(&f, text), Verdict::Ok);
    let routed = Net {
        route: Ok(wlan0_default()),
        ..direct.clone()
    };
    let text = "via the router 10.0.0.1 on wlan0: magic packets are broadcasts";
    assert_eq!(one(&all(&magic, &routed, true), text), Verdict::Warn);
    assert_eq!(
        one(&all(&url_only, &routed, true), "via the router"),
        Verdict::Info
    );
    let down = Net {
        route: Ok(Route {
            is_up: false,
            ..eth0()
        }),
        ..direct.clone()
    };
    assert_eq!(
        one(&all(&magic, &down, true), "which is down"),
        Verdict::Fail
    );
    let unplugged = Net {
        route: Ok(Route {
            has_carrier: false,
            ..eth0()
        }),
        ..direct.clone()
    };
    let f = all(&magic, &unplugged, true);
    assert_eq!(
        one(&f, "eth0, which is up but has no carrier"),
        Verdict::Warn
    );
    assert!(!lines(&f)
        .iter()
        .any(|(_, l)| l.contains("directly connected")));
    let unknown = Net {
        route: Err("no route to 192.168.1.20".into()),
        ..direct
    };
    assert_eq!(
        one(&all(&magic, &unknown, true), "cannot tell the route"),
        Verdict::Warn
    );
    assert_eq!(unknown.direct(), None);
    assert_eq!(routed.direct(), Some(false));
}

#[test]
fn the_configured_mac_against_the_one_seen_and_the_one_learned() {
    let wifi = machine(&["--mac", WIFI]);
    let wired = machine(&["--mac", WIRED]);
    let f = all(&wifi, &net(Some(WIRED), vec![]), true);
    let text = format!(
        "configured MAC {WIFI} differs from the MAC seen for 192.168.1.20 ({WIRED}): is WOL_MAC \
         the Wi-Fi card's? magic packets must carry"
    );
    assert_eq!(one(&f, &text), Verdict::Warn);
    let f = all(&wired, &net(Some(WIRED), vec![]), true);
    assert_eq!(
        one(&f, &format!("configured MAC {WIRED} is the one seen")),
        Verdict::Ok
    );
    // Not answered now: the entry may be old, and says so.
    let f = all(&wired, &net(Some(WIRED), vec![]), false);
    assert_eq!(one(&f, "is the one last seen for"), Verdict::Ok);
    let none = machine(&["--wake-url", "http://pi:9090/wol?mac=x"]);
    let f = all(&none, &net(Some(WIRED), vec![]), true);
    assert_eq!(
        one(&f, &format!("the MAC seen for 192.168.1.20 is {WIRED}")),
        Verdict::Info
    );
    // Both the record and the entry are reported when both exist.
    let learned = Net {
        learned: Some((
            Learned {
                ip: IP,
                mac: WIRED.parse().unwrap(),
                interface: "eth0".into(),
                broadcast: BCAST,
                learned_at: 1_700_000_000,
            },
            Duration::from_secs(7200),
        )),
        ..net(Some(WIRED), vec![])
    };
    let f = all(&wifi, &learned, true);
    let text = format!(
        "configured MAC {WIFI} differs from the learned MAC {WIRED} (for 192.168.1.20, 2h ago, on \
         eth0, broadcast 192.168.1.255)"
    );
    assert_eq!(one(&f, &text), Verdict::Warn);
    assert_eq!(one(&f, "differs from the MAC seen"), Verdict::Warn);
    let f = all(&wired, &learned, true);
    assert_eq!(one(&f, "learned MAC"), Verdict::Info);
    let unreadable = Net {
        neighbour: Err("cannot read /proc/net/arp".into()),
        ..net(None, vec![])
    };
    let f = all(&wired, &unreadable, true);
    assert_eq!(one(&f, "cannot read the neighbour entry"), Verdict::Warn);
}

#[test]
fn where_each_destination_leaves() {
    let to = |dests: &str, extra: &[&str]| {
        machine(&[&["--mac", WIRED, "--broadcast", dests], extra].concat())
    };
    let limited = Ipv4Addr::BROADCAST;
    /// The machine, where its destinations leave: the verdict and a part of the line.
    type Case = (BackendConfig, Vec<(Ipv4Addr, Route)>, Verdict, &'static str);
    let cases: Vec<Case> = vec![
        (to("192.168.1.255", &[]), vec![(BCAST, eth0())], Verdict::Ok,
         "packets to 192.168.1.255 leave by eth0, the interface of 192.168.1.20's network"),
        (to("255.255.255.255", &[]), vec![(limited, eth0())], Verdict::Ok,
         "packets to 255.255.255.255 leave by eth0"),
        (to("255.255.255.255", &[]), vec![(limited, wlan0_default())], Verdict::Warn,
         "packets to 255.255.255.255 leave by wlan0, but 192.168.1.20 is on eth0: set \
          WOL_BROADCAST / broadcast to 192.168.1.255"),
        (to("255.255.255.255", &["--interface", "eth0"]), vec![(limited, wlan0_default())],
         Verdict::Ok, "packets to 255.255.255.255 leave by eth0"),
        (to("192.168.1.255", &["--interface", "wlan0"]), vec![(BCAST, eth0())], Verdict::Warn,
         "magic packets leave by wlan0 (the configured interface), but 192.168.1.20 is reached by eth0"),
        (to("192.168.1.20", &[]), vec![(IP, eth0())], Verdict::Warn,
         "go to the desktop's own address"),
        (to("192.168.1.127", &[]), vec![(Ipv4Addr::new(192, 168, 1, 127), eth0())],
         Verdict::Warn, "192.168.1.127 is not the broadcast address of 192.168.1.20's network (192.168.1.255)"),
    ];
    for (cfg, dests, verdict, text) in cases {
        let f = all(&cfg, &net(None, dests), true);
        assert_eq!(one(&f, text), verdict);
    }
    let no_broadcast = Net {
        route: Ok(Route {
            broadcast: None,
            ..eth0()
        }),
        ..net(None, vec![(BCAST, eth0())])
    };
    let f = all(&to("192.168.1.255", &[]), &no_broadcast, true);
    assert_eq!(one(&f, "has no broadcast address"), Verdict::Warn);
    // Through a router, the route's finding says it all.
    let routed = Net {
        route: Ok(wlan0_default()),
        ..net(None, vec![(BCAST, wlan0_default())])
    };
    let f = all(&to("192.168.1.255", &[]), &routed, true);
    assert!(
        lines(&f).iter().all(|(_, l)| !l.contains("packets to")),
        "{f:?}"
    );
}

#[test]
fn a_learned_mac_alone_has_its_packets_checked_too() {
    let record = |broadcast| {
        let learned = Learned {
            ip: IP,
            mac: WIRED.parse().unwrap(),
            interface: "eth0".into(),
            broadcast,
            learned_at: 1_700_000_000,
        };
        Some((learned, Duration::from_secs(60)))
    };
    let none = machine(&[]);
    let learned = Net {
        learned: record(BCAST),
        ..net(None, vec![(BCAST, eth0())])
    };
    let f = all(&none, &learned, true);
    assert_eq!(
        one(
            &f,
            "packets to 192.168.1.255 leave by eth0, the interface of 192.168.1.20's network"
        ),
        Verdict::Ok
    );
    // A learned broadcast address whose route now leaves elsewhere.
    let elsewhere = Net {
        learned: record(BCAST),
        ..net(None, vec![(BCAST, wlan0_default())])
    };
    let f = all(&none, &elsewhere, true);
    assert_eq!(
        one(&f, "packets to 192.168.1.255 leave by wlan0"),
        Verdict::Warn
    );
    // Through a router, broadcasts of the learned MAC do not cross it either.
    let routed = Net {
        route: Ok(wlan0_default()),
        ..learned.clone()
    };
    assert_eq!(
        one(&all(&none, &routed, true), "magic packets are broadcasts"),
        Verdict::Warn
    );
    // Nothing configured, nothing learned: no packets to check.
    let f = all(&none, &net(None, vec![]), true);
    assert!(
        lines(&f).iter().all(|(_, l)| !l.contains("packets to")),
        "{f:?}"
    );
}
