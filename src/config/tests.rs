//! Tests of the configuration: defaults, refusals and the one-line errors.

use super::*;
use crate::cli::Cli;
use clap::Parser;
use std::net::Ipv4Addr;

fn serve(args: &[&str]) -> Result<Config, ConfigError> {
    let mut argv = vec!["ollama-proxy"];
    if !args.contains(&"--ollama-url") {
        argv.extend(["--ollama-url", "http://10.0.0.5:11434"]);
    }
    argv.extend_from_slice(args);
    Config::from_args(&Cli::try_parse_from(argv).unwrap().serve)
}

#[test]
fn defaults_follow_the_original_python_proxy() {
    let c = serve(&[]).unwrap();
    assert_eq!(c.timeout, Duration::from_secs(10));
    assert_eq!(c.model_timeout, Duration::from_secs(30));
    assert_eq!(c.wake_interval, Duration::from_secs(600));
    assert_eq!(c.cache_duration, Duration::from_secs(1800));
    assert_eq!(c.ollama.connect_timeout, Duration::from_secs(2));
    assert_eq!(c.ollama.wake_timeout, Duration::from_secs(120));
    assert_eq!(c.max_queue, 512);
    assert_eq!(c.max_held_body, 16 << 20);
    assert_eq!(c.bind, "0.0.0.0:11434".parse().unwrap());
    assert!(!c.wake.is_enabled());
}

#[test]
fn self_loop_is_refused() {
    let cli = Cli::try_parse_from(["ollama-proxy"]).unwrap();
    let err = Config::from_args(&cli.serve).unwrap_err();
    assert_eq!(err.flag, "--ollama-url");
    assert!(err.reason.contains("points back"), "{err}");
    assert!(serve(&["--port", "8080", "--ollama-url", "http://127.0.0.1:8080/"]).is_err());
    assert!(serve(&[
        "--bind",
        "192.168.1.2",
        "--ollama-url",
        "http://192.168.1.2:11434"
    ])
    .is_err());
    assert!(serve(&["--port", "8080", "--ollama-url", "http://localhost:11434"]).is_ok());
}

#[test]
fn upstream_prefix_and_authority() {
    let c = serve(&["--ollama-url", "http://desk.lan:8000/ollama/"]).unwrap();
    assert_eq!(c.ollama.upstream.authority, "desk.lan:8000");
    assert_eq!(
        c.ollama.upstream.url("/api/tags?x=1"),
        "http://desk.lan:8000/ollama/api/tags?x=1"
    );
    let c = serve(&["--ollama-url", "http://desk.lan"]).unwrap();
    assert_eq!(
        (c.ollama.upstream.port, c.ollama.upstream.authority.as_str()),
        (80, "desk.lan")
    );
}

#[test]
fn errors_name_flag_and_variable() {
    let err = serve(&["--mac", "zz:00:00:00:00:00"]).unwrap_err();
    let line = err.to_string();
    assert!(
        line.contains("--mac") && line.contains("WOL_MAC") && line.contains("zz:00"),
        "{line}"
    );
    for (flag, value) in [
        ("--timeout", "ten"),
        ("--wake-interval", "5 parsecs"),
        ("--broadcast", "10.0.0.255,nope"),
        ("--wol-port", "70000"),
        ("--bind", "localhost"),
        ("--max-held-body", "lots"),
        ("--ollama-url", "ftp://x"),
        ("--wake-url", "not a url"),
    ] {
        let err = serve(&[flag, value]).unwrap_err();
        assert_eq!(err.flag, flag, "{err}");
    }
}

#[test]
fn secrets_are_never_shown() {
    let err = serve(&["--mac", "aa:bb:cc:dd:ee:ff", "--secureon", "hunter2"]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let err = serve(&["--wake-key", "s3cret"]).unwrap_err();
    assert!(!err.to_string().contains("s3cret") && err.to_string().contains("--wake-url"));
    let err = serve(&["--wake-key", "s3cret", "--wake-url", "http://pi:9090/wol"]).unwrap_err();
    assert!(
        !err.to_string().contains("s3cret") && err.to_string().contains("mac"),
        "{err}"
    );
    let c = serve(&[
        "--mac",
        "aa:bb:cc:dd:ee:ff",
        "--secureon",
        "01:02:03:04:05:06",
        "--wake-key",
        "s3cret",
        "--wake-url",
        "http://pi:9090/wol?mac=aa-bb-cc-dd-ee-ff",
    ])
    .unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("01:02:03"),
        "{debug}"
    );
}

#[test]
fn wake_settings() {
    let c = serve(&[
        "--mac",
        "AA-BB-CC-DD-EE-FF",
        "--broadcast",
        "10.0.0.255, 255.255.255.255",
        "--wol-port",
        "7",
    ])
    .unwrap();
    let m = c.wake.magic.unwrap();
    assert_eq!(
        m.sender.destinations,
        vec![Ipv4Addr::new(10, 0, 0, 255), Ipv4Addr::BROADCAST]
    );
    assert_eq!(m.sender.port, 7);
}

#[test]
fn without_a_mac_the_wake_settings_go_to_a_learned_mac() {
    let learned = Ipv4Addr::new(192, 168, 1, 255);
    // Nothing given: the learned broadcast address, the default port, any interface.
    let plain = serve(&[]).unwrap().wake.for_learned.sender(learned);
    assert_eq!(plain.destinations, vec![learned]);
    assert_eq!((plain.port, plain.interface), (9, None));
    let c = serve(&[
        "--broadcast",
        "192.168.1.127",
        "--interface",
        "eth1",
        "--wol-port",
        "7",
    ])
    .unwrap();
    assert!(c.wake.magic.is_none() && !c.wake.is_enabled());
    let given = c.wake.for_learned.sender(learned);
    assert_eq!(given.destinations, vec![Ipv4Addr::new(192, 168, 1, 127)]);
    assert_eq!(given.port, 7);
    assert_eq!(given.interface.as_deref(), Some("eth1"));
}

#[test]
fn settings_that_cannot_work_are_refused() {
    for (flag, env, value) in [
        ("--timeout", "TIMEOUT_SECONDS", "0"),
        ("--model-timeout", "MODEL_TIMEOUT_SECONDS", "0s"),
        ("--max-queue", "MAX_QUEUE", "0"),
        ("--wake-timeout", "WAKE_TIMEOUT", "0"),
        ("--connect-timeout", "CONNECT_TIMEOUT", "0ms"),
        ("--wol-port", "WOL_PORT", "0"),
        ("--max-connections", "MAX_CONNECTIONS", "0"),
        ("--wake-timeout", "WAKE_TIMEOUT", "18446744073709551615"),
        ("--timeout", "TIMEOUT_SECONDS", "18446744073709551615"),
        ("--model-timeout", "MODEL_TIMEOUT_SECONDS", "2y"),
        ("--wake-interval", "WAKE_INTERVAL", "999999999"),
        ("--cache-duration", "CACHE_DURATION", "18446744073709551615"),
        ("--client-idle-timeout", "CLIENT_IDLE_TIMEOUT", "366days"),
    ] {
        let err = serve(&[flag, value]).unwrap_err();
        assert_eq!((err.flag, err.env), (flag, env), "{err}");
        let line = err.to_string();
        assert!(line.contains(flag) && line.contains(env), "{line}");
    }
    // The boundaries themselves are fine.
    let c = serve(&[
        "--wake-timeout",
        "1y",
        "--timeout",
        "1ms",
        "--wol-port",
        "1",
    ])
    .unwrap();
    assert_eq!(c.ollama.wake_timeout, crate::units::MAX_DURATION);
    assert_eq!(c.timeout, Duration::from_millis(1));
    // A zero wake interval (always wake alongside the connect) and cache duration still work.
    assert!(serve(&["--wake-interval", "0", "--cache-duration", "0"]).is_ok());
}

#[test]
fn the_wake_command_checks_its_settings_too() {
    use crate::cli::{Command, WakeCmdArgs};
    let parse = |args: &[&str]| -> WakeCmdArgs {
        let mut argv = vec!["ollama-proxy", "wake"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Wake(w)) => w,
            other => panic!("{other:?}"),
        }
    };
    let w = parse(&["--wol-port", "0", "--mac", "aa:bb:cc:dd:ee:ff"]);
    assert_eq!(
        WakeConfig::from_args(&w.serve.wake).unwrap_err().flag,
        "--wol-port"
    );
    let w = parse(&["--wake-timeout", "0"]);
    assert_eq!(
        OllamaConfig::from_args(&w.serve.ollama).unwrap_err().flag,
        "--wake-timeout"
    );
}

#[test]
fn sleep_settings() {
    let mac = ["--mac", "aa:bb:cc:dd:ee:ff", "--broadcast", "10.0.0.255"];
    let c = serve(&[]).unwrap();
    let s = &c.backends[0].sleep;
    assert!(!s.has_method());
    assert_eq!(s.after, None, "off by default");
    assert_eq!(s.min_awake, Duration::from_secs(300));
    assert_eq!(s.confirm, Duration::from_secs(120));
    let mut args = mac.to_vec();
    args.extend([
        "--sleep-packet",
        "--sleep-url",
        "http://desktop:8009/sleep",
        "--sleep-command",
        "ssh -o BatchMode=yes 'user@desktop' sudo systemctl suspend",
        "--sleep-after",
        "15m",
        "--min-awake",
        "90",
        "--sleep-ignore-ps",
    ]);
    let c = serve(&args).unwrap();
    let s = &c.backends[0].sleep;
    let packet = s.packet.as_ref().unwrap();
    assert_eq!(packet.mac.to_string(), "aa:bb:cc:dd:ee:ff");
    assert_eq!(
        packet.sender.destinations,
        [Ipv4Addr::new(10, 0, 0, 255)],
        "the wake packets' destinations"
    );
    assert_eq!(
        s.url.as_ref().unwrap().as_str(),
        "http://desktop:8009/sleep"
    );
    assert_eq!(
        s.command.as_deref().unwrap(),
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "user@desktop",
            "sudo",
            "systemctl",
            "suspend"
        ]
    );
    assert_eq!(s.after, Some(Duration::from_secs(900)));
    assert_eq!(s.min_awake, Duration::from_secs(90));
    assert!(s.ignore_ps);
    assert_eq!(s.methods(), "sleep packet, sleep URL, sleep command");
}

#[test]
fn sleep_settings_that_cannot_work_are_refused() {
    let mac = "aa:bb:cc:dd:ee:ff";
    for (args, flag, env, says) in [
        (
            &["--sleep-packet"][..],
            "--sleep-packet",
            "SLEEP_PACKET",
            "--mac",
        ),
        (
            &["--sleep-url", "ftp://x/sleep"],
            "--sleep-url",
            "SLEEP_URL",
            "http://",
        ),
        (
            &["--sleep-url", "not a url"],
            "--sleep-url",
            "SLEEP_URL",
            "",
        ),
        (
            &["--sleep-command", " "],
            "--sleep-command",
            "SLEEP_COMMAND",
            "empty",
        ),
        (
            &["--sleep-command", "ssh 'x"],
            "--sleep-command",
            "SLEEP_COMMAND",
            "split",
        ),
        (
            &["--mac", mac, "--sleep-after", "5m"],
            "--sleep-after",
            "SLEEP_AFTER",
            "sleep method",
        ),
        (
            &["--sleep-url", "http://d:8009/sleep", "--sleep-after", "5m"],
            "--sleep-after",
            "SLEEP_AFTER",
            "wake method",
        ),
        (
            &["--mac", mac, "--sleep-packet", "--sleep-after", "0"],
            "--sleep-after",
            "SLEEP_AFTER",
            "",
        ),
        (
            &["--mac", mac, "--sleep-packet", "--sleep-confirm", "0"],
            "--sleep-confirm",
            "SLEEP_CONFIRM",
            "",
        ),
        (
            &["--mac", mac, "--sleep-packet=maybe"],
            "--sleep-packet",
            "SLEEP_PACKET",
            "true or false",
        ),
    ] {
        let err = serve(args).unwrap_err();
        assert_eq!((err.flag, err.env), (flag, env), "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    // The sleep methods without SLEEP_AFTER are fine (the `sleep` command uses them).
    assert!(serve(&["--sleep-url", "http://d:8009/sleep"]).is_ok());
    assert!(serve(&["--mac", mac, "--sleep-packet", "--sleep-after", "off"]).is_ok());
}
