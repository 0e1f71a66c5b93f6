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

#[test]
fn first_sight_is_stored_used_and_said_once() {
    let mut mem = Memory::default();
    let f = found(A, "eth0");
    let steps = observed(&mut mem, None, None, Ok(f.clone()), 100);
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
    assert!(observed(&mut mem, None, Some(&l), Ok(f), 400).is_empty());
}

#[test]
fn a_changed_card_is_said_with_the_old_one() {
    let mut mem = Memory::default();
    let old = record(&found(A, "eth0"), 100);
    let steps = observed(&mut mem, None, Some(&old), Ok(found(B, "eth0")), 200);
    let said = logs(&steps);
    assert!(
        said[0].1.contains("was 02:00:5e:10:20:30 on eth0"),
        "{said:?}"
    );
    assert!(steps.contains(&Step::Use(record(&found(B, "eth0"), 200))));
}

#[test]
fn a_configured_mac_is_kept_and_a_different_one_warned_once() {
    let mut mem = Memory::default();
    let f = found(A, "eth0");
    let steps = observed(&mut mem, Some(mac(B)), None, Ok(f.clone()), 100);
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
    assert!(observed(&mut mem, Some(mac(B)), Some(&l), Ok(f.clone()), 200).is_empty());
    // The same configured MAC: nothing to warn about.
    let mut quiet = Memory::default();
    let steps = observed(&mut quiet, Some(mac(A)), None, Ok(f), 100);
    assert!(logs(&steps).iter().all(|(l, _)| *l != Level::Warn));
}

#[test]
fn reasons_are_said_once_until_they_change() {
    let mut mem = Memory::default();
    let routed = Why::Routed {
        ip: Ipv4Addr::new(10, 1, 2, 3),
        gateway: Ipv4Addr::new(192, 168, 1, 1),
        interface: "eth0".into(),
    };
    let steps = observed(&mut mem, None, None, Err(routed.clone()), 1);
    let said = logs(&steps);
    assert_eq!(said.len(), 1);
    assert_eq!(said[0].0, Level::Warn);
    assert!(said[0].1.contains("not on a directly connected subnet"));
    assert!(said[0].1.contains("192.168.1.1"));
    assert!(observed(&mut mem, None, None, Err(routed.clone()), 2).is_empty());
    let local = Why::Local("127.0.0.1".parse().unwrap());
    assert_eq!(
        logs(&observed(&mut mem, None, None, Err(local), 3))[0].0,
        Level::Debug
    );
    // After a success, the same reason is news again.
    observed(&mut mem, None, None, Ok(found(A, "eth0")), 4);
    assert_eq!(observed(&mut mem, None, None, Err(routed), 5).len(), 1);
}

#[test]
fn a_record_from_the_file_is_used_unless_a_mac_is_configured() {
    let mut mem = Memory::default();
    assert!(loaded(&mut mem, None, None).is_empty());
    let l = record(&found(A, "eth0"), 100);
    let steps = loaded(&mut mem, None, Some(&l));
    assert!(steps.contains(&Step::Use(l.clone())));
    assert!(logs(&steps)[0]
        .1
        .contains("learned MAC 02:00:5e:10:20:30 of 192.168.1.50 on eth0"));
    let steps = loaded(&mut mem, Some(mac(B)), Some(&l));
    assert_eq!(steps.len(), 1);
    assert_eq!(logs(&steps)[0].0, Level::Warn);
    assert!(loaded(&mut Memory::default(), Some(mac(A)), Some(&l)).is_empty());
}
