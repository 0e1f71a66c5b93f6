//! Table tests of the checks: facts in, findings out, no I/O.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use super::*;
use crate::cli::Cli;
use crate::doctor::finding::Verdict;

/// The one machine the flags describe, as `serve` would read them.
pub(crate) fn machine(flags: &[&str]) -> BackendConfig {
    let mut argv = vec!["ollama-proxy", "--ollama-url", "http://192.168.1.20:11434"];
    argv.extend_from_slice(flags);
    let cli = Cli::try_parse_from(argv).unwrap();
    let mut config = crate::Config::from_args(&cli.serve).unwrap();
    config.backends.remove(0)
}

/// The verdict and the finding's line, for `contains` checks.
pub(crate) fn seen(f: &Finding) -> (Verdict, String) {
    (f.verdict, f.line("desk").to_string())
}

pub(crate) const MAC: &[&str] = &["--mac", "aa:bb:cc:dd:ee:ff", "--broadcast", "192.168.1.255"];
const MS: Duration = Duration::from_millis(12);

#[test]
fn ollama_answers_and_silences() {
    let answered = Probe::Answered {
        version: Some("0.12.6".into()),
        took: MS,
    };
    let silent = Probe::Silent("no connection within 2.0 s".into());
    let woke = WakeSent {
        outcomes: vec![(true, "magic packet sent to 192.168.1.255:9".into())],
        waited: Some(Ok(Duration::from_secs(14))),
    };
    let gave_up = WakeSent {
        waited: Some(Err(Duration::from_secs(120))),
        ..woke.clone()
    };
    /// Flags, the probe, what `--wake` did: the verdict and a part of the line.
    type Case<'a> = (&'a [&'a str], Probe, Option<&'a WakeSent>, Verdict, &'a str);
    let cases: Vec<Case> = vec![
        (
            MAC,
            answered.clone(),
            None,
            Verdict::Ok,
            "[ok]   desk: Ollama 0.12.6 reachable at http://192.168.1.20:11434 (12 ms)",
        ),
        (
            MAC,
            answered.clone(),
            Some(&woke),
            Verdict::Ok,
            "(12 ms); it answered 14.0 s after the wake",
        ),
        (
            MAC,
            Probe::Answered {
                version: None,
                took: MS,
            },
            None,
            Verdict::Ok,
            "version not given",
        ),
        (
            MAC,
            silent.clone(),
            None,
            Verdict::Warn,
            "does not answer (no connection within 2.0 s): if the desktop is asleep",
        ),
        (
            MAC,
            silent.clone(),
            Some(&gave_up),
            Verdict::Fail,
            "did not answer within 2m after the wake",
        ),
        (
            &[],
            silent.clone(),
            None,
            Verdict::Fail,
            "nothing can wake it",
        ),
        (
            MAC,
            Probe::Refused,
            None,
            Verdict::Fail,
            "refused the connection: the machine is up",
        ),
        (
            MAC,
            Probe::Status {
                status: 404,
                took: MS,
            },
            None,
            Verdict::Fail,
            "answered HTTP 404: is this Ollama?",
        ),
        (
            MAC,
            Probe::Resolve("no such host".into()),
            None,
            Verdict::Fail,
            "cannot resolve",
        ),
        (
            MAC,
            Probe::Other("boom".into()),
            None,
            Verdict::Fail,
            "cannot ask Ollama at http://192.168.1.20:11434: boom",
        ),
    ];
    for (flags, probe, wake, verdict, text) in cases {
        let (v, line) = seen(&ollama(&machine(flags), &probe, wake, false));
        assert_eq!(v, verdict, "{line}");
        assert!(line.contains(text), "{line}\nshould contain: {text}");
    }
}

#[test]
fn an_always_on_machine_that_is_silent_fails_without_wake_advice() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    let toml =
        "[[backend]]\nname = \"mini\"\nurl = \"http://192.168.1.30:11434\"\nalways_on = true\n";
    std::fs::write(&file, toml).unwrap();
    let path = file.display().to_string();
    let cli = Cli::try_parse_from(["ollama-proxy", "--config", &path]).unwrap();
    let cfg = crate::Config::from_args(&cli.serve)
        .unwrap()
        .backends
        .remove(0);
    let (v, line) = seen(&ollama(&cfg, &Probe::Silent("x".into()), None, false));
    assert_eq!(v, Verdict::Fail);
    assert!(
        line.contains("always_on") && !line.contains("--wake"),
        "{line}"
    );
    let (v, line) = seen(&wake_methods(&cfg, None, None));
    assert_eq!(
        (v, line.as_str()),
        (Verdict::Info, "[info] desk: always on: never woken")
    );
    // Never woken: a record in its cache file gives it no magic packets.
    let record = crate::learn::Learned {
        ip: "192.168.1.30".parse().unwrap(),
        mac: "aa:bb:cc:dd:ee:01".parse().unwrap(),
        interface: "eth0".into(),
        broadcast: "192.168.1.255".parse().unwrap(),
        learned_at: 1_700_000_000,
    };
    assert_eq!(Magic::of(&cfg, Some(&record)), None);
}

#[test]
fn what_wake_sent_is_one_finding_per_method() {
    let sent = WakeSent {
        outcomes: vec![
            (true, "magic packet sent to 192.168.1.255:9".into()),
            (false, "wake URL http://pi:9090/wol failed: refused".into()),
        ],
        waited: None,
    };
    let found: Vec<_> = wake_sent(&sent).iter().map(seen).collect();
    assert_eq!(found[0].0, Verdict::Ok);
    assert!(found[0]
        .1
        .contains("--wake: magic packet sent to 192.168.1.255:9"));
    assert_eq!(found[1].0, Verdict::Fail);
    let none = wake_sent(&WakeSent {
        outcomes: vec![],
        waited: None,
    });
    assert_eq!(none[0].verdict, Verdict::Info);
}

#[test]
fn the_interface_as_the_proxy_would_bind_it() {
    let with = machine(&[MAC, &["--interface", "eth1"]].concat());
    let cases = [
        (Bind::Works, Verdict::Ok, "leave by eth1"),
        (
            Bind::NoSuchDevice {
                existing: vec!["eth0".into(), "lo".into()],
            },
            Verdict::Fail,
            "interface eth1 does not exist (there are: eth0, lo): the proxy refuses to start",
        ),
        (
            Bind::Denied {
                cap_net_raw: Some(false),
            },
            Verdict::Fail,
            "not allowed (CAP_NET_RAW is not in the effective capabilities): the proxy refuses",
        ),
        (
            Bind::Other("odd".into()),
            Verdict::Fail,
            "cannot bind to interface eth1: odd",
        ),
    ];
    for (bind, verdict, text) in cases {
        let (v, line) = seen(&interface(Magic::of(&with, None).as_ref(), Some(&bind)).unwrap());
        assert_eq!(v, verdict, "{line}");
        assert!(line.contains(text), "{line}\nshould contain: {text}");
    }
    assert!(interface(Magic::of(&machine(MAC), None).as_ref(), None).is_none());
}

#[test]
fn a_container_matters_only_for_magic_packets_off_its_network() {
    let docker = |physical_nic| Host {
        container: Some("/.dockerenv".into()),
        physical_nic,
    };
    let cases = [
        (docker(false), Some(true), Some(Verdict::Info)),
        (docker(false), Some(false), Some(Verdict::Fail)),
        (docker(true), None, Some(Verdict::Info)),
        (docker(false), None, Some(Verdict::Warn)),
        (Host::default(), Some(false), None),
    ];
    for (host, direct, verdict) in cases {
        let found = container(true, &host, direct);
        assert_eq!(found.as_ref().map(|f| f.verdict), verdict, "{found:?}");
        if let Some(f) = found.filter(|f| f.verdict.is_problem()) {
            assert!(f.line("d").to_string().contains("--network host"), "{f:?}");
        }
    }
    // No magic packets (a wake URL only, or nothing learned yet): nothing to say.
    assert!(container(false, &docker(false), Some(false)).is_none());
}

#[test]
fn the_cache_file_where_writable_and_how_old() {
    let path = PathBuf::from("/var/lib/ollama-proxy/cache.json");
    let set = |writable: Result<(), String>, contents| CacheFile::Set {
        path: path.clone(),
        writable,
        contents,
    };
    let hour = Duration::from_secs(3600);
    let fresh_for = Duration::from_secs(1800);
    let cases = [
        (
            CacheFile::Off,
            Verdict::Info,
            "no cache file (CACHE_FILE= empty)",
        ),
        (
            CacheFile::Unchecked("no place for it".into()),
            Verdict::Warn,
            "cannot check the cache file: no place for it",
        ),
        (
            CacheFile::Unresolvable {
                path: path.clone(),
                error: "dangling".into(),
            },
            Verdict::Fail,
            "refuses to start",
        ),
        (
            set(Ok(()), Contents::Missing),
            Verdict::Ok,
            "cache.json: writable; not written yet",
        ),
        (
            set(
                Ok(()),
                Contents::ModelList(Some((Duration::from_secs(125), false))),
            ),
            Verdict::Ok,
            "model list 2m old (fresh)",
        ),
        (
            set(Ok(()), Contents::ModelList(Some((hour * 3, false)))),
            Verdict::Ok,
            "model list 3h old (older than CACHE_DURATION 30m)",
        ),
        (
            set(Ok(()), Contents::ModelList(Some((MS, true)))),
            Verdict::Ok,
            "marked stale by a pull or delete",
        ),
        (
            set(Ok(()), Contents::ModelList(None)),
            Verdict::Ok,
            "no model list yet",
        ),
        (
            set(Ok(()), Contents::Unusable("corrupt".into())),
            Verdict::Warn,
            "writable; corrupt: the proxy starts with an empty cache",
        ),
        (
            set(
                Err("cannot create a file in /var/lib/ollama-proxy: Permission denied".into()),
                Contents::Missing,
            ),
            Verdict::Warn,
            "Permission denied; not written yet: make its directory writable",
        ),
    ];
    for (file, verdict, text) in cases {
        let (v, line) = seen(&cache(&file, fresh_for));
        assert_eq!(v, verdict, "{line}");
        assert!(line.contains(text), "{line}\nshould contain: {text}");
    }
}

#[test]
fn durations_for_people() {
    assert_eq!(human(MS), "12 ms");
    assert_eq!(human(Duration::from_millis(3400)), "3.4 s");
    assert_eq!(human(Duration::from_secs(7530)), "2h 5m");
}
