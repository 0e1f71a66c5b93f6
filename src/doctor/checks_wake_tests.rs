//! Table tests of the wake methods finding: configured, learned, none (and why none can be
//! learned).

use super::tests::{machine, seen, MAC};
use super::*;
use crate::doctor::finding::Verdict;

#[test]
fn wake_methods_are_named_and_secrets_never_shown() {
    let url = "http://pi:9090/wol?mac=aa-bb-cc-dd-ee-ff&token=old";
    let both = [
        MAC,
        &["--interface", "eth0", "--secureon", "01:02:03:04:05:06"],
        &["--wake-url", url, "--wake-key", "s3cret-key"],
    ]
    .concat();
    let both = machine(&both);
    let (v, line) = seen(&wake_methods(&both, Magic::of(&both, None).as_ref(), None));
    assert_eq!(v, Verdict::Ok);
    assert!(
        line.contains("magic packets for aa:bb:cc:dd:ee:ff to 192.168.1.255 port 9 out of eth0")
            && line.contains("the wake URL http://pi:9090/wol?mac=aa-bb-cc-dd-ee-ff&token=***"),
        "{line}"
    );
    for secret in ["01:02:03:04:05:06", "s3cret-key", "old"] {
        assert!(!line.contains(secret), "{secret} shown: {line}");
    }
    let (v, line) = seen(&wake_methods(&machine(&[]), None, None));
    assert_eq!(v, Verdict::Warn);
    assert!(line.contains("nothing can wake it"), "{line}");
}

#[test]
fn a_learned_mac_wakes_a_machine_with_no_method_configured() {
    let learned = crate::learn::Learned {
        ip: "192.168.1.20".parse().unwrap(),
        mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
        interface: "eth0".into(),
        broadcast: "192.168.1.255".parse().unwrap(),
        learned_at: 1_700_000_000,
    };
    let none = machine(&[]);
    let by_learned = Magic::of(&none, Some(&learned));
    let (v, line) = seen(&wake_methods(&none, by_learned.as_ref(), None));
    assert_eq!(v, Verdict::Ok, "{line}");
    assert!(
        line.contains("learned MAC aa:bb:cc:dd:ee:01 to 192.168.1.255"),
        "{line}"
    );
    // Silent, and only the learned MAC can wake it: asleep is expected, not a failure.
    let silent = Probe::Silent("no connection within 2.0 s".into());
    assert_eq!(seen(&ollama(&none, &silent, None, true)).0, Verdict::Warn);
    assert_eq!(seen(&ollama(&none, &silent, None, false)).0, Verdict::Fail);
    // A configured MAC is named, never the learned one.
    let configured = machine(MAC);
    let magic = Magic::of(&configured, Some(&learned));
    let (_, line) = seen(&wake_methods(&configured, magic.as_ref(), None));
    assert!(!line.contains("ee:01"), "{line}");
    // Without a MAC, WOL_BROADCAST, WOL_INTERFACE and WOL_PORT go with the learned MAC.
    let given = machine(&[
        "--broadcast",
        "192.168.1.127",
        "--interface",
        "eth1",
        "--wol-port",
        "7",
    ]);
    let magic = Magic::of(&given, Some(&learned));
    let (_, line) = seen(&wake_methods(&given, magic.as_ref(), None));
    assert!(
        line.contains(
            "magic packets for the learned MAC aa:bb:cc:dd:ee:01 to 192.168.1.127 port 7 out of \
             eth1 (no MAC configured)"
        ),
        "{line}"
    );
    // Binding to WOL_INTERFACE matters for the learned MAC's packets too.
    let denied = Bind::Denied { cap_net_raw: None };
    let (v, line) = seen(&interface(magic.as_ref(), Some(&denied)).unwrap());
    assert_eq!(v, Verdict::Fail);
    assert!(
        line.contains("cannot send the learned MAC's packets"),
        "{line}"
    );
}

#[test]
fn with_nothing_to_wake_it_the_advice_says_whether_the_mac_can_be_learned() {
    let none = machine(&[]);
    let (v, line) = seen(&wake_methods(&none, None, None));
    assert_eq!(v, Verdict::Warn);
    assert!(
        line.contains("let the proxy see the desktop awake once"),
        "{line}"
    );
    let routed: crate::learn::decide::Observation = Err(crate::learn::decide::Why::Routed {
        ip: "10.1.2.3".parse().unwrap(),
        gateway: "192.168.1.1".parse().unwrap(),
        interface: "eth0".into(),
    });
    let (v, line) = seen(&wake_methods(&none, None, Some(&routed)));
    assert_eq!(v, Verdict::Warn);
    assert!(!line.contains("awake once"), "{line}");
    assert!(
        line.contains("WOL_MAC and WOL_BROADCAST") && line.contains("cannot be learned"),
        "{line}"
    );
}
