//! Tests of the config file: globals under flags, backends, and errors that point into the file.

use super::*;
use crate::cli::Cli;
use clap::{CommandFactory, Parser};
use std::io::Write;

/// `serve` with `toml` as the config file (in its own temp dir) and `args`.
fn with_file(toml: &str, args: &[&str]) -> (Result<Config, ConfigError>, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::File::create(&path)
        .unwrap()
        .write_all(toml.as_bytes())
        .unwrap();
    let path_text = path.to_str().unwrap().to_string();
    let mut argv = vec!["ollama-proxy", "--config", &path_text];
    argv.extend_from_slice(args);
    let config = Config::from_args(&Cli::try_parse_from(argv).unwrap().serve);
    (config, path)
}

fn error(toml: &str) -> String {
    let (result, path) = with_file(toml, &[]);
    let line = result.unwrap_err().to_string();
    assert!(line.contains(path.to_str().unwrap()), "{line}");
    line
}

const TWO: &str = r#"
connect_timeout = "3s"
timeout = 20
cache_duration = "5m"
max_held_body = "1MiB"

[[backend]]
name = "desktop"
url = "http://192.168.1.50:11434"
mac = "aa:bb:cc:dd:ee:ff"
broadcast = ["192.168.1.255", "10.0.0.255"]
wol_port = 7
priority = 2
wake_timeout = "3m"

[[backend]]
name = "minipc"
url = "http://192.168.1.20:11434/ollama"
always_on = true
connect_timeout = "500ms"
"#;

#[test]
fn backends_come_from_the_file_preferred_first() {
    let c = with_file(TWO, &[]).0.unwrap();
    let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
    // minipc has no priority: its place in the file, 2; desktop says 2 too and comes first in the
    // file.
    assert_eq!(names, ["desktop", "minipc"]);
    let (desktop, minipc) = (&c.backends[0], &c.backends[1]);
    assert_eq!((desktop.priority, minipc.priority), (2, 2));
    assert_eq!(desktop.ollama.connect_timeout, Duration::from_secs(3));
    assert_eq!(desktop.ollama.wake_timeout, Duration::from_secs(180));
    assert_eq!(minipc.ollama.connect_timeout, Duration::from_millis(500));
    assert_eq!(minipc.ollama.wake_timeout, Duration::from_secs(120));
    let magic = desktop.wake.magic.as_ref().unwrap();
    assert_eq!(magic.sender.port, 7);
    assert_eq!(magic.sender.destinations.len(), 2);
    assert!(minipc.always_on && !minipc.wake.is_enabled());
    assert_eq!(minipc.ollama.upstream.prefix, "/ollama");
    // `ollama` and `wake` are the preferred backend's.
    assert_eq!(c.ollama.upstream, desktop.ollama.upstream);
    assert!(c.wake.magic.is_some());
    let c = with_file(&TWO.replace("priority = 2", "priority = 3"), &[])
        .0
        .unwrap();
    assert_eq!(c.backends[0].name, "minipc");
    assert_eq!(c.ollama.upstream.host, "192.168.1.20");
    assert!(!c.wake.is_enabled());
}

#[test]
fn flags_and_environment_beat_the_files_globals() {
    let c = with_file(TWO, &[]).0.unwrap();
    assert_eq!(c.timeout, Duration::from_secs(20));
    assert_eq!(c.cache_duration, Duration::from_secs(300));
    assert_eq!(c.max_held_body, 1 << 20);
    assert_eq!(c.model_timeout, Duration::from_secs(30), "default");
    let c = with_file(TWO, &["--timeout", "7", "--connect-timeout", "1s"])
        .0
        .unwrap();
    assert_eq!(c.timeout, Duration::from_secs(7));
    // The global connect timeout is the flag's; a backend's own still wins for that backend.
    assert_eq!(c.backends[0].ollama.connect_timeout, Duration::from_secs(1));
    assert_eq!(
        c.backends[1].ollama.connect_timeout,
        Duration::from_millis(500)
    );
}

#[test]
fn without_backends_the_flags_make_one_default_backend() {
    let toml = "timeout = \"15s\"\nport = 8080\ncache_file = \"/tmp/x.json\"\n";
    let args = [
        "--ollama-url",
        "http://10.0.0.5:11434",
        "--mac",
        "aa:bb:cc:dd:ee:ff",
    ];
    let c = with_file(toml, &args).0.unwrap();
    assert_eq!(c.backends.len(), 1);
    let b = &c.backends[0];
    assert_eq!(
        (b.name.as_str(), b.priority, b.always_on),
        ("default", 1, false)
    );
    assert_eq!(b.ollama.upstream, c.ollama.upstream);
    assert_eq!(c.ollama.upstream.host, "10.0.0.5");
    assert!(b.wake.magic.is_some() && c.wake.magic.is_some());
    assert_eq!(c.timeout, Duration::from_secs(15));
    assert_eq!(c.bind.port(), 8080);
    assert_eq!(
        c.cache_file.path(),
        Some(std::path::Path::new("/tmp/x.json"))
    );
    // An empty CACHE_FILE still means none, even over the file's.
    let c = with_file(
        toml,
        &["--ollama-url", "http://10.0.0.5:11434", "--cache-file", ""],
    );
    assert_eq!(c.0.unwrap().cache_file, super::CacheFile::Off);
}

#[test]
fn machine_flags_with_backends_in_the_file_are_refused() {
    for (flag, value) in [
        ("--ollama-url", "http://10.0.0.5:11434"),
        ("--mac", "aa:bb:cc:dd:ee:ff"),
        ("--broadcast", "10.0.0.255"),
        ("--wol-port", "9"),
        ("--wake-url", "http://pi:9090/wol?mac=aa"),
        ("--wake-key", "s3cret"),
        ("--secureon", "01:02:03:04:05:06"),
    ] {
        let (result, path) = with_file(TWO, &[flag, value]);
        let err = result.unwrap_err();
        assert_eq!(err.flag, flag);
        let line = err.to_string();
        assert!(
            line.contains(path.to_str().unwrap()) && line.contains("[[backend]]"),
            "{line}"
        );
        assert!(
            !line.contains("s3cret") && !line.contains("01:02:03"),
            "{line}"
        );
    }
}

#[test]
fn errors_name_the_file_line_column_and_key() {
    let desktop = "[[backend]]\nname = \"desktop\"\nurl = \"http://10.0.0.1:11434\"\n";
    for (toml, place, key) in [
        (format!("{desktop}macc = 1\n"), ":4:1:", "backend[0].macc"),
        (
            format!("{desktop}mac = \"zz\"\n"),
            ":4:7:",
            "backend[0].mac",
        ),
        (
            format!("{desktop}wol_port = 0\n"),
            ":4:12:",
            "backend[0].wol_port",
        ),
        (format!("{desktop}{desktop}"), ":5:8:", "backend[1].name"),
        (
            format!(
                "{desktop}{}",
                desktop
                    .replace("name = \"desktop\"", "name = \"again\"")
                    .replace("11434\"", "11434/\"")
            ),
            ":6:7:",
            "backend[1].url",
        ),
        (
            desktop.replace("desktop", "Desk top"),
            ":2:8:",
            "backend[0].name",
        ),
        (
            desktop.replace("http:", "https:"),
            ":3:7:",
            "backend[0].url",
        ),
        (
            desktop.replace("10.0.0.1", "127.0.0.1"),
            ":3:7:",
            "backend[0].url",
        ),
        (
            "[[backend]]\nname = \"a\"\nurl = 5\n".into(),
            ":3:7:",
            "backend[0].url",
        ),
        ("[[backend]]\nname = \"a\"\n".into(), ":1:1:", "backend[0]"),
        (
            format!("{desktop}priority = \"x\"\n"),
            ":4:12:",
            "backend[0].priority",
        ),
        (
            format!("{desktop}always_on = true\nmac = \"aa:bb:cc:dd:ee:ff\"\n"),
            ":4:13:",
            "backend[0].always_on",
        ),
        (
            format!("{desktop}connect_timeout = \"0s\"\n"),
            ":4:19:",
            "backend[0].connect_timeout",
        ),
        (
            format!("{desktop}wake_url = \"http://pi/wol\"\nwake_key = \"k\"\n"),
            ":4:12:",
            "backend[0].wake_url",
        ),
        (
            format!("{}{desktop}", "timeout = true\n"),
            ":1:11:",
            "timeout",
        ),
        (
            format!("{}{desktop}", "\n\nwake_interval = \"5 parsecs\"\n"),
            ":3:17:",
            "wake_interval",
        ),
        (
            format!("{}{desktop}", "max_queue = 0\n"),
            ":1:13:",
            "max_queue",
        ),
        ("timeout = \n".into(), ":1:11:", "TOML syntax"),
        (
            format!("{}{desktop}", "colour = \"blue\"\n"),
            ":1:1:",
            "colour",
        ),
    ] {
        let line = error(&toml);
        assert!(
            line.contains(&format!("{place} {key}: ")),
            "{place} {key}: {line}"
        );
        let reason = line.split(key).nth(1).unwrap_or_default();
        assert!(
            !reason.contains("--"),
            "the file's words, not the flags': {line}"
        );
    }
}

#[test]
fn the_files_secrets_are_never_shown() {
    let desktop = "[[backend]]\nname = \"desktop\"\nurl = \"http://10.0.0.1:11434\"\n";
    let line = error(&format!(
        "{desktop}secureon = \"hunter2\"\nmac = \"aa:bb:cc:dd:ee:ff\"\n"
    ));
    assert!(
        line.contains("backend[0].secureon") && !line.contains("hunter2"),
        "{line}"
    );
    let line = error(&format!("{desktop}wake_key = \"s3cret\"\n"));
    assert!(
        line.contains("needs `wake_url`") && !line.contains("s3cret"),
        "{line}"
    );
    let toml = format!(
        "{desktop}mac = \"aa:bb:cc:dd:ee:ff\"\nsecureon = \"01:02:03:04:05:06\"\n\
         wake_url = \"http://pi:9090/wol?mac=aa\"\nwake_key = \"s3cret\"\n"
    );
    let debug = format!("{:?}", with_file(&toml, &[]).0.unwrap());
    assert!(
        !debug.contains("s3cret") && !debug.contains("01:02:03"),
        "{debug}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let cli = Cli::try_parse_from(["ollama-proxy", "--config", "/nonexistent/config.toml"]);
    let err = Config::from_args(&cli.unwrap().serve).unwrap_err();
    assert_eq!(err.flag, "--config");
    assert!(
        err.to_string().contains("/nonexistent/config.toml"),
        "{err}"
    );
}

#[test]
fn help_shows_the_defaults_config_applies() {
    let help = Cli::command().render_long_help().to_string();
    for d in [
        layer::default::OLLAMA_URL,
        layer::default::CONNECT_TIMEOUT,
        layer::default::WAKE_TIMEOUT,
        layer::default::BROADCAST,
        layer::default::BIND,
        layer::default::MAX_HELD_BODY,
        layer::default::BODY_BUDGET,
    ] {
        assert!(help.contains(&format!("[default: {d}]")), "{d}");
    }
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for (flag, d) in [
        ("--port", layer::default::PORT),
        ("--timeout", layer::default::TIMEOUT),
        ("--model-timeout", layer::default::MODEL_TIMEOUT),
        ("--wake-interval", layer::default::WAKE_INTERVAL),
        ("--cache-duration", layer::default::CACHE_DURATION),
        ("--max-queue", layer::default::MAX_QUEUE),
        ("--wol-port", layer::default::WOL_PORT),
        (
            "--client-header-timeout",
            layer::default::CLIENT_HEADER_TIMEOUT,
        ),
        ("--client-idle-timeout", layer::default::CLIENT_IDLE_TIMEOUT),
    ] {
        let after = flat.split(&format!("{flag} <")).nth(1).unwrap();
        let section = after.split(" --").next().unwrap();
        assert!(
            section.contains(&format!("[default: {d}]")),
            "{flag}: {section}"
        );
    }
}

#[test]
fn the_readme_example_is_a_valid_file() {
    let readme = include_str!("../../README.md");
    let example = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let c = with_file(example, &[]).0.unwrap();
    let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["desktop", "minipc"]);
    assert!(c.backends[1].always_on);
}

#[test]
fn sleep_settings_in_the_file() {
    let toml = r#"
sleep_after = "10m"
min_awake = "1m"

[[backend]]
name = "desktop"
url = "http://10.0.0.5:11434"
mac = "aa:bb:cc:dd:ee:ff"
sleep_packet = true
sleep_url = "http://10.0.0.5:8009/sleep"

[[backend]]
name = "laptop"
url = "http://10.0.0.6:11434"
wake_url = "http://pi:9090/wol?mac=x"
sleep_command = "ssh me@laptop sudo systemctl suspend"
sleep_after = "30m"
sleep_ignore_ps = true

[[backend]]
name = "minipc"
url = "http://10.0.0.7:11434"
always_on = true
"#;
    let c = with_file(toml, &[]).0.unwrap();
    let [desktop, laptop, minipc] = &c.backends[..] else {
        panic!("three backends")
    };
    assert!(desktop.sleep.packet.is_some() && desktop.sleep.url.is_some());
    assert_eq!(desktop.sleep.after, Some(Duration::from_secs(600)));
    assert_eq!(desktop.sleep.min_awake, Duration::from_secs(60));
    assert!(!desktop.sleep.ignore_ps);
    assert_eq!(laptop.sleep.after, Some(Duration::from_secs(1800)));
    assert!(laptop.sleep.ignore_ps);
    assert_eq!(
        minipc.sleep.after, None,
        "no sleep method: the global does not apply"
    );
    // The flags beat the file's globals.
    let c = with_file(toml, &["--sleep-after", "1h"]).0.unwrap();
    assert_eq!(c.backends[0].sleep.after, Some(Duration::from_secs(3600)));
    assert_eq!(c.backends[1].sleep.after, Some(Duration::from_secs(1800)));

    let line =
        error("[[backend]]\nname = \"d\"\nurl = \"http://10.0.0.5:11434\"\nsleep_packet = true\n");
    assert!(line.contains(":4:16: backend[0].sleep_packet"), "{line}");
    assert!(line.contains("needs `mac`"), "{line}");
    let line = error("[[backend]]\nname = \"d\"\nurl = \"http://10.0.0.5:11434\"\nalways_on = true\nsleep_url = \"http://d/sleep\"\n");
    assert!(line.contains("always-on"), "{line}");
    let line =
        error("[[backend]]\nname = \"d\"\nurl = \"http://10.0.0.5:11434\"\nsleep_command = \"\"\n");
    assert!(
        line.contains("backend[0].sleep_command") && line.contains("empty"),
        "{line}"
    );
    // A machine's sleep methods go in its table.
    let (result, _) = with_file(toml, &["--sleep-url", "http://x/sleep"]);
    assert_eq!(result.unwrap_err().flag, "--sleep-url");
}
