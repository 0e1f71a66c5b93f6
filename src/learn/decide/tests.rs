use super::*;

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

fn found(m: &str, iface: &str) -> Found {
    Found {
        ip: Ipv4Addr::new(192, 168, 1, 50),
        mac: mac(m),
        interface: iface.into(),
        broadcast: Ipv4Addr::new(192, 168, 1, 255),
    }
}

fn record(f: &Found, at: u64) -> Learned {
    Learned {
        ip: f.ip,
        mac: f.mac,
        interface: f.interface.clone(),
        broadcast: f.broadcast,
        learned_at: at,
    }
}

fn logs(steps: &[Step]) -> Vec<(Level, String)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Log(l, m) => Some((*l, m.clone())),
            _ => None,
        })
        .collect()
}

const A: &str = "02:00:5e:10:20:30";
const B: &str = "02:00:5e:aa:bb:cc";

/// The desktop's address in [`found`].
fn desk() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 168, 1, 50))
}

/// Nothing configured but OLLAMA_URL with a host name.
fn bare() -> Setup {
    Setup::default()
}

/// WOL_MAC set to `m`.
fn with_mac(m: &str) -> Setup {
    Setup {
        mac: Some(mac(m)),
        wakes: true,
        host: None,
    }
}

#[test]
fn first_sight_is_stored_used_and_said_once() {
    let mut mem = Memory::default();
    let f = found(A, "eth0");
    let steps = observed(&mut mem, &bare(), None, desk(), Ok(f.clone()), 100);
    let l = record(&f, 100);
    assert_eq!(steps[..2], [Step::Store(l.clone()), Step::Use(l.clone())]);
    let said = logs(&steps);
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].0, Level::Info);
    assert!(
        said[0]
            .1
            .starts_with("learned MAC 02:00:5e:10:20:30 of 192.168.1.50 on eth0"),
        "{said:?}"
    );
    // Seen again: nothing to do or say, the first time stays.
    assert!(observed(&mut mem, &bare(), Some(&l), desk(), Ok(f), 400).is_empty());
}

#[test]
fn a_changed_card_is_said_with_the_old_one() {
    let mut mem = Memory::default();
    let old = record(&found(A, "eth0"), 100);
    let steps = observed(
        &mut mem,
        &bare(),
        Some(&old),
        desk(),
        Ok(found(B, "eth0")),
        200,
    );
    let said = logs(&steps);
    assert!(
        said[0]
            .1
            .contains("was 02:00:5e:10:20:30 of 192.168.1.50 on eth0"),
        "{said:?}"
    );
    assert!(steps.contains(&Step::Use(record(&found(B, "eth0"), 200))));
}

#[test]
fn a_configured_mac_is_kept_and_a_different_one_warned_once() {
    let mut mem = Memory::default();
    let f = found(A, "eth0");
    let steps = observed(&mut mem, &with_mac(B), None, desk(), Ok(f.clone()), 100);
    assert!(!steps.iter().any(|s| matches!(s, Step::Use(_))));
    assert!(steps.contains(&Step::Store(record(&f, 100))));
    let warned: Vec<_> = logs(&steps)
        .into_iter()
        .filter(|(l, _)| *l == Level::Warn)
        .collect();
    assert_eq!(warned.len(), 1);
    assert!(
        warned[0].1.contains(B) && warned[0].1.contains(A),
        "{warned:?}"
    );
    let l = record(&f, 100);
    assert!(observed(&mut mem, &with_mac(B), Some(&l), desk(), Ok(f.clone()), 200).is_empty());
    // The same configured MAC: nothing to warn about.
    let mut quiet = Memory::default();
    let steps = observed(&mut quiet, &with_mac(A), None, desk(), Ok(f), 100);
    assert!(logs(&steps).iter().all(|(l, _)| *l != Level::Warn));
}

#[test]
fn reasons_are_said_once_until_they_change() {
    let mut mem = Memory::default();
    let far = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    let routed = Why::Routed {
        ip: Ipv4Addr::new(10, 1, 2, 3),
        gateway: Ipv4Addr::new(192, 168, 1, 1),
        interface: "eth0".into(),
    };
    let steps = observed(&mut mem, &bare(), None, far, Err(routed.clone()), 1);
    let said = logs(&steps);
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].0, Level::Warn);
    assert!(said[0].1.contains("not on a directly connected subnet"));
    assert!(said[0].1.contains("192.168.1.1"));
    assert!(said[0].1.contains("set WOL_MAC and WOL_BROADCAST"));
    assert!(observed(&mut mem, &bare(), None, far, Err(routed.clone()), 2).is_empty());
    let local = Why::Local("127.0.0.1".parse().unwrap());
    let home = "127.0.0.1".parse().unwrap();
    assert_eq!(
        logs(&observed(&mut mem, &bare(), None, home, Err(local), 3))[0].0,
        Level::Debug
    );
    // After a success, the same reason is news again.
    observed(&mut mem, &bare(), None, desk(), Ok(found(A, "eth0")), 4);
    assert_eq!(
        observed(&mut mem, &bare(), None, far, Err(routed.clone()), 5).len(),
        1
    );
    // With a wake method configured, not learning costs nothing: information, no advice.
    let url_only = Setup {
        wakes: true,
        ..bare()
    };
    let said = logs(&observed(
        &mut Memory::default(),
        &url_only,
        None,
        far,
        Err(routed),
        6,
    ));
    assert_eq!(said[0].0, Level::Info);
    assert!(!said[0].1.contains("set WOL_MAC"), "{said:?}");
}

#[test]
fn a_record_from_the_file_is_used_unless_a_mac_is_configured() {
    let mut mem = Memory::default();
    assert!(loaded(&mut mem, &bare(), None).is_empty());
    let l = record(&found(A, "eth0"), 100);
    let steps = loaded(&mut mem, &bare(), Some(&l));
    assert!(steps.contains(&Step::Use(l.clone())));
    assert!(logs(&steps)[0]
        .1
        .contains("learned MAC 02:00:5e:10:20:30 of 192.168.1.50 on eth0"));
    let steps = loaded(&mut mem, &with_mac(B), Some(&l));
    assert_eq!(steps.len(), 1);
    assert_eq!(logs(&steps)[0].0, Level::Warn);
    assert!(loaded(&mut Memory::default(), &with_mac(A), Some(&l)).is_empty());
    // OLLAMA_URL names this very address: used.
    let same = Setup {
        host: Some(desk()),
        ..bare()
    };
    assert!(loaded(&mut Memory::default(), &same, Some(&l)).contains(&Step::Use(l.clone())));
}

#[test]
fn a_record_for_another_address_than_the_urls_is_forgotten() {
    let mut mem = Memory::default();
    let l = record(&found(A, "eth0"), 100);
    let other = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 60));
    let moved = Setup {
        host: Some(other),
        ..bare()
    };
    let steps = loaded(&mut mem, &moved, Some(&l));
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Use(_))),
        "{steps:?}"
    );
    assert_eq!(steps[0], Step::Forget);
    let said = logs(&steps);
    assert_eq!(said.len(), 1);
    assert!(
        said[0]
            .1
            .contains("forgot the learned MAC 02:00:5e:10:20:30 of 192.168.1.50")
            && said[0].1.contains("Ollama is at 192.168.1.60"),
        "{said:?}"
    );
    // Its own card, once seen, replaces the record and is used.
    let own = Found {
        ip: Ipv4Addr::new(192, 168, 1, 60),
        ..found(B, "eth0")
    };
    let steps = observed(&mut mem, &moved, Some(&l), other, Ok(own.clone()), 200);
    assert!(steps.contains(&Step::Store(record(&own, 200))));
    assert!(steps.contains(&Step::Use(record(&own, 200))));
}

#[test]
fn a_host_name_that_now_leads_elsewhere_forgets_the_record() {
    let mut mem = Memory::default();
    let l = record(&found(A, "eth0"), 100);
    // A host name: the record is used at start, then Ollama answers from another address whose
    // neighbour entry is not there (yet).
    assert!(loaded(&mut mem, &bare(), Some(&l)).contains(&Step::Use(l.clone())));
    let other = Ipv4Addr::new(192, 168, 1, 60);
    let steps = observed(
        &mut mem,
        &bare(),
        Some(&l),
        IpAddr::V4(other),
        Err(Why::NoNeighbour(other)),
        200,
    );
    assert_eq!(steps[..2], [Step::Forget, Step::StopUsing]);
    let said = logs(&steps);
    assert_eq!(said[0].0, Level::Info);
    assert!(
        said[0]
            .1
            .contains("forgot the learned MAC 02:00:5e:10:20:30 of 192.168.1.50")
            && said[0].1.contains("Ollama is at 192.168.1.60 now"),
        "{said:?}"
    );
    // The same address without an entry keeps the record: it is not there yet, not gone.
    let mut kept = Memory::default();
    loaded(&mut kept, &bare(), Some(&l));
    let steps = observed(
        &mut kept,
        &bare(),
        Some(&l),
        desk(),
        Err(Why::NoNeighbour(l.ip)),
        200,
    );
    assert!(!steps.contains(&Step::Forget), "{steps:?}");
}

#[test]
fn a_look_up_that_rules_learning_out_stops_using_the_record() {
    let l = record(&found(A, "eth0"), 100);
    let routed = Why::Routed {
        ip: l.ip,
        gateway: Ipv4Addr::new(192, 168, 1, 1),
        interface: "eth0".into(),
    };
    let mut mem = Memory::default();
    loaded(&mut mem, &bare(), Some(&l));
    // One look-up may fall in a passing state of this host's network: kept, the reason said.
    let first = observed(
        &mut mem,
        &bare(),
        Some(&l),
        desk(),
        Err(routed.clone()),
        150,
    );
    assert!(!first.contains(&Step::Forget), "{first:?}");
    assert_eq!(logs(&first).len(), 1, "{first:?}");
    let steps = observed(
        &mut mem,
        &bare(),
        Some(&l),
        desk(),
        Err(routed.clone()),
        200,
    );
    assert_eq!(steps[..2], [Step::Forget, Step::StopUsing]);
    let said = logs(&steps);
    assert_eq!(
        said.len(),
        1,
        "the reason is said once more, with the record: {said:?}"
    );
    assert_eq!(said[0].0, Level::Warn);
    assert!(
        said[0].1.contains("forgot the learned MAC") && said[0].1.contains("router 192.168.1.1"),
        "{said:?}"
    );
    // Forgotten: the next look-up has no record and nothing new to say.
    assert!(observed(&mut mem, &bare(), None, desk(), Err(routed.clone()), 300).is_empty());
    // With WOL_MAC set the record was never used: forgotten only.
    let mut configured = Memory::default();
    loaded(&mut configured, &with_mac(A), Some(&l));
    observed(
        &mut configured,
        &with_mac(A),
        Some(&l),
        desk(),
        Err(routed.clone()),
        150,
    );
    let steps = observed(
        &mut configured,
        &with_mac(A),
        Some(&l),
        desk(),
        Err(routed.clone()),
        200,
    );
    assert!(steps.contains(&Step::Forget) && !steps.contains(&Step::StopUsing));
    for why in [
        Why::Local(desk()),
        Why::NoBroadcast {
            ip: l.ip,
            interface: "tun0".into(),
        },
    ] {
        let mut mem = Memory::default();
        loaded(&mut mem, &bare(), Some(&l));
        observed(&mut mem, &bare(), Some(&l), desk(), Err(why.clone()), 150);
        let steps = observed(&mut mem, &bare(), Some(&l), desk(), Err(why.clone()), 200);
        assert_eq!(steps[..2], [Step::Forget, Step::StopUsing], "{why:?}");
    }
    // Ruled out, then the card found again, then ruled out once: kept (look-ups in a row).
    let mut mem = Memory::default();
    loaded(&mut mem, &bare(), Some(&l));
    observed(
        &mut mem,
        &bare(),
        Some(&l),
        desk(),
        Err(routed.clone()),
        150,
    );
    observed(
        &mut mem,
        &bare(),
        Some(&l),
        desk(),
        Ok(found(A, "eth0")),
        160,
    );
    let steps = observed(&mut mem, &bare(), Some(&l), desk(), Err(routed), 170);
    assert!(!steps.contains(&Step::Forget), "{steps:?}");
    // Reached over IPv6 (a host name with both kinds of address): the IPv4 card is kept.
    let v6: IpAddr = "2001:db8::5".parse().unwrap();
    for at in [200, 300] {
        let why = Why::Ipv6(v6);
        let steps = observed(&mut mem, &bare(), Some(&l), v6, Err(why), at);
        assert!(!steps.contains(&Step::Forget), "{steps:?}");
    }
    // Tables that could not be read say nothing about the card: kept.
    let mut mem = Memory::default();
    loaded(&mut mem, &bare(), Some(&l));
    let failed = Why::Failed("cannot read /proc/self/net/route".into());
    let steps = observed(&mut mem, &bare(), Some(&l), desk(), Err(failed), 200);
    assert!(!steps.contains(&Step::Forget), "{steps:?}");
}

#[test]
fn a_learned_mac_that_could_not_be_set_up_is_tried_again() {
    let l = record(&found(A, "eth0"), 100);
    let mut mem = Memory::default();
    let steps = loaded(&mut mem, &bare(), Some(&l));
    assert!(steps.contains(&Step::Use(l.clone())), "{steps:?}");
    // The socket could not be made (WOL_INTERFACE not there yet): the same card found again is
    // used again; once set up, not again.
    use_failed(&mut mem);
    let steps = observed(
        &mut mem,
        &bare(),
        Some(&l),
        desk(),
        Ok(found(A, "eth0")),
        200,
    );
    assert!(steps.contains(&Step::Use(l.clone())), "{steps:?}");
    let steps = observed(
        &mut mem,
        &bare(),
        Some(&l),
        desk(),
        Ok(found(A, "eth0")),
        300,
    );
    assert!(
        !steps.iter().any(|s| matches!(s, Step::Use(_))),
        "{steps:?}"
    );
}
