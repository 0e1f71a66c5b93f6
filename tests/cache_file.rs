//! The cache file cannot be used against the filesystem (issue 9): leftover temp files, links.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::{client, Fake, Proxy};

async fn status(url: String) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn temp_files_left_by_interrupted_writes_are_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache.json");
    // An older version's name (pid), a tempfile name, and files that are not ours.
    std::fs::write(dir.path().join(".cache.json.4242.tmp"), vec![b'x'; 1 << 20]).unwrap();
    std::fs::write(dir.path().join(".cache.json.aB3dE9.tmp"), b"{").unwrap();
    std::fs::write(dir.path().join(".other.json.aB3dE9.tmp"), b"keep").unwrap();
    std::fs::write(dir.path().join("notes.tmp"), b"keep").unwrap();
    let fake = Fake::bind().await;
    let proxy = Proxy::start(&[
        "--ollama-url",
        &fake.url(),
        "--cache-file",
        file.to_str().unwrap(),
    ])
    .await;
    // Answering at all means `run` is past loading the cache.
    assert_eq!(status(proxy.url("/health")).await, 200);
    assert_eq!(names(dir.path()), [".other.json.aB3dE9.tmp", "notes.tmp"]);
    assert_eq!(status(proxy.url("/api/tags")).await, 200);
    proxy.stop().await;
    assert_eq!(
        names(dir.path()),
        [".other.json.aB3dE9.tmp", "cache.json", "notes.tmp"]
    );
}

/// CACHE_FILE is a link: the cache goes to its target, the link stays, and a link planted where
/// older versions put their temp file (`.<name>.<pid>.tmp`) is not followed.
#[tokio::test]
async fn a_linked_cache_file_is_written_through_and_planted_links_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let target = state.join("real.json");
    std::fs::write(&target, b"{}").unwrap();
    let link = dir.path().join("cache.json");
    std::os::unix::fs::symlink("state/real.json", &link).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();

    let fake = Fake::bind().await;
    let proxy = Proxy::start(&[
        "--ollama-url",
        &fake.url(),
        "--cache-file",
        link.to_str().unwrap(),
    ])
    .await;
    assert_eq!(status(proxy.url("/health")).await, 200);
    let planted = state.join(format!(".real.json.{}.tmp", std::process::id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    assert_eq!(status(proxy.url("/api/tags")).await, 200);
    assert_eq!(status(proxy.url("/api/version")).await, 200);
    proxy.stop().await;

    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("state/real.json")
    );
    let cached: Value = serde_json::from_slice(&std::fs::read(&target).unwrap()).unwrap();
    assert!(
        cached["tags"]["body"]
            .as_str()
            .unwrap()
            .contains("llama3.2"),
        "{cached}"
    );
    assert!(cached["version"].is_object(), "{cached}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read_link(&planted).unwrap(), victim);
    assert_eq!(
        names(&state),
        [planted.file_name().unwrap().to_str().unwrap(), "real.json"]
    );
}

#[tokio::test]
async fn a_dangling_linked_cache_file_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("cache.json");
    std::os::unix::fs::symlink("gone/real.json", &link).unwrap();
    let link = link.to_str().unwrap();

    // The binary: a clear message and a failure status, before it ever listens.
    let args = ["--bind", "127.0.0.1", "--port", "0", "--cache-file", link];
    let args = [&args[..], &["--ollama-url", "http://127.0.0.1:9"]].concat();
    // At the default level, so that a ready line would show.
    let out = common::run_bin(&args, &[("RUST_LOG", "info")]).await;
    let text = common::output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("cannot use the cache file"), "{text}");
    assert!(
        text.contains(link) && text.contains("gone/real.json"),
        "{text}"
    );
    assert!(!text.contains("ollama-proxy ready"), "{text}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "nothing created"
    );

    // In-process: `run` returns the error.
    let mut proxy = Proxy::start(&["--cache-file", link]).await;
    let task = proxy.task.take().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap();
    let err = format!("{:#}", result.unwrap_err());
    assert!(err.contains("symbolic link"), "{err}");
}
