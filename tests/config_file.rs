//! `--config` / `CONFIG` with the real binary: exit 2 with one line for a bad file or for machine
//! flags beside `[[backend]]` tables, and a proxy that serves through the file's preferred backend.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;

use common::{closed_url, output_text as text, run_bin as run, Child, Fake};

/// Writes `toml` to `config.toml` in a new temp dir (kept alive by the returned guard).
fn config(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

const TWO: &str = r#"
[[backend]]
name = "desktop"
url = "http://192.168.1.50:11434"
mac = "aa:bb:cc:dd:ee:ff"
priority = 1

[[backend]]
name = "minipc"
url = "http://192.168.1.20:11434"
always_on = true
priority = 2
"#;

#[tokio::test]
async fn machine_settings_beside_backends_in_the_file_exit_2_with_one_line() {
    let (_dir, path) = config(TWO);
    let file = path.to_str().unwrap();
    for (var, value) in [
        ("OLLAMA_URL", "http://10.9.9.9:11434"),
        ("WOL_MAC", "aa:bb:cc:dd:ee:01"),
        ("WAKE_URL", "http://pi:9090/wol?mac=aa"),
    ] {
        let out = run(&["serve"], &[("CONFIG", file), (var, value)]).await;
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains(var) && err.contains(file) && err.contains("[[backend]]"),
            "{err}"
        );
    }
    // The same as a flag, with the file as a flag.
    let out = run(
        &["--config", file, "--ollama-url", "http://10.9.9.9:11434"],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[tokio::test]
async fn a_bad_file_exits_2_naming_file_line_column_and_key() {
    let (_dir, path) = config(&TWO.replace("aa:bb:cc:dd:ee:ff", "aa:bb:cc:dd:ee:zz"));
    let file = path.to_str().unwrap();
    let out = run(&[], &[("CONFIG", file)]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{file}:5:7: backend[0].mac: ")),
        "{err}"
    );

    let (_dir, path) =
        config("[[backend]]\nname = \"a\"\nurl = \"http://10.0.0.1\"\nurl = \"x\"\n");
    let out = run(&[], &[("CONFIG", path.to_str().unwrap())]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("config.toml:4:1: "), "{}", text(&out));

    let out = run(&[], &[("CONFIG", "/nonexistent/ollama-proxy.toml")]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("/nonexistent/ollama-proxy.toml"));
}

#[tokio::test]
async fn serve_uses_the_files_preferred_backend() {
    let fake = Fake::bind().await;
    let toml = format!(
        "timeout = \"5s\"\n\n[[backend]]\nname = \"asleep\"\nurl = \"{}\"\npriority = 2\n\n\
         [[backend]]\nname = \"box\"\nurl = \"http://{}\"\nalways_on = true\npriority = 1\n",
        closed_url(),
        fake.addr
    );
    let (_dir, path) = config(&toml);
    let proxy = Child::start(&[], &[("CONFIG", path.to_str().unwrap())]).await;
    let resp = common::client()
        .get(proxy.url("/api/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(fake.state.log.count("/api/version"), 1);
}
