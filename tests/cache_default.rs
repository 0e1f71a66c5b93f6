//! Where the cache lives when CACHE_FILE is not set (see "Cache file" in docs/behaviour.md):
//! `$STATE_DIRECTORY/cache.json` under systemd, else `$XDG_STATE_HOME/ollama-proxy/cache.json`,
//! else under `~/.local/state`; `CACHE_FILE=` keeps it in memory only.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{client, output_text, run_bin, Child, Fake};

/// Starts the binary with `env`, lists the models once through it, and stops it (the cache is
/// written at the latest on the way out).
async fn one_listing(env: &[(&str, &str)]) -> String {
    let fake = Fake::bind().await;
    let mut proxy = Child::start(&["--ollama-url", &fake.url()], env).await;
    let resp = client().get(proxy.url("/api/tags")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(proxy.terminate().await.success());
    let log = proxy.stderr.lock().unwrap().clone();
    log
}

fn holds_the_models(file: &Path) -> bool {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.contains("llama3.2:latest")
}

#[tokio::test]
async fn under_xdg_state_home_by_default_made_if_missing() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().join("state");
    let log = one_listing(&[("XDG_STATE_HOME", xdg.to_str().unwrap())]).await;
    let file = xdg.join("ollama-proxy/cache.json");
    assert!(holds_the_models(&file), "{log}");
    assert!(
        log.contains(&format!("cache_file={}", file.display())),
        "{log}"
    );
    // The directories it made are private (whatever the umask lets through of 0700).
    use std::os::unix::fs::PermissionsExt;
    for made in [xdg.clone(), xdg.join("ollama-proxy")] {
        let mode = std::fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", made.display());
    }
}

#[tokio::test]
async fn the_systemd_state_directory_wins() {
    let dir = tempfile::tempdir().unwrap();
    let (xdg, state) = (dir.path().join("xdg"), dir.path().join("service"));
    std::fs::create_dir(&state).unwrap();
    one_listing(&[
        ("XDG_STATE_HOME", xdg.to_str().unwrap()),
        ("STATE_DIRECTORY", state.to_str().unwrap()),
    ])
    .await;
    assert!(holds_the_models(&state.join("cache.json")));
    assert!(!xdg.join("ollama-proxy").exists());
}

#[tokio::test]
async fn home_without_xdg_state_home() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().to_str().unwrap();
    // The helper sets XDG_STATE_HOME; an empty one is no directory (not absolute).
    one_listing(&[("XDG_STATE_HOME", ""), ("HOME", home)]).await;
    assert!(holds_the_models(
        &dir.path().join(".local/state/ollama-proxy/cache.json")
    ));
}

#[tokio::test]
async fn an_empty_cache_file_keeps_it_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let xdg = dir.path().to_str().unwrap();
    let log = one_listing(&[("XDG_STATE_HOME", xdg), ("CACHE_FILE", "")]).await;
    assert!(log.contains("cache_file=none"), "{log}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn no_place_for_the_cache_is_a_clear_start_up_error() {
    // A clean environment; an empty XDG_STATE_HOME is no directory (not absolute).
    let args = ["--port", "0", "--ollama-url", "http://127.0.0.1:9"];
    let out = run_bin(&args, &[("XDG_STATE_HOME", "")]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("CACHE_FILE"), "{text}");
    assert!(text.contains("CACHE_FILE= (empty)"), "{text}");
}
