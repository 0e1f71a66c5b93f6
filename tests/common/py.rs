//! The Python venv with the pinned clients and tools (tests/py/requirements.txt).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// The venv's python, made by tests/py/setup-venv.sh when missing; `None` (skip) only when it cannot
/// be made and `OLLAMA_PROXY_REQUIRE_PY` is not `1`.
pub fn python() -> Option<PathBuf> {
    venv_bin("python")
}

/// A program of the venv (made by tests/py/setup-venv.sh when missing); `None` (skip) only when the
/// venv cannot be made and `OLLAMA_PROXY_REQUIRE_PY` is not `1`.
pub fn venv_bin(name: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let py = root.join("target/py-venv/bin").join(name);
    let setup = std::process::Command::new(root.join("tests/py/setup-venv.sh")).status();
    match setup {
        Ok(s) if s.success() && py.exists() => Some(py),
        other => {
            let why = format!("cannot set up the Python venv: {other:?}");
            if std::env::var("OLLAMA_PROXY_REQUIRE_PY").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("SKIPPED: {why}");
            None
        }
    }
}

/// Runs tests/py/clients.py against `base` and returns its output, failing on a non-zero exit.
pub async fn run_clients(py: &PathBuf, base: &str, extra: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/clients.py");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(py)
            .arg(script)
            .arg(base)
            .args(extra)
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env("NO_PROXY", "*")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("python clients hung")
    .unwrap();
    let text = super::output_text(&out);
    assert!(out.status.success(), "{text}");
    text
}

/// Every sample of a scrape of `url` (`/metrics`), parsed by the real prometheus_client parser
/// (tests/py/metrics.py), keyed `name{label=value,...}` with the labels sorted; checks the
/// content type, the `ollama_proxy_` prefix and a HELP line for every metric.
pub async fn scrape(py: &PathBuf, url: String) -> HashMap<String, f64> {
    let resp = super::client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.unwrap();
    for line in text.lines().filter(|l| l.starts_with("# TYPE")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(name.starts_with("ollama_proxy_"), "{line}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}"
        );
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/metrics.py");
    let mut child = tokio::process::Command::new(py)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(out.status.success(), "the parser refused:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// How much sample `key` moved from `before` to `after` (it must exist after).
pub fn moved(before: &HashMap<String, f64>, after: &HashMap<String, f64>, key: &str) -> f64 {
    let a = after.get(key).unwrap_or_else(|| panic!("no sample {key}"));
    a - before.get(key).copied().unwrap_or(0.0)
}

/// The sum of every sample of metric `name` (all label sets) in `samples`.
pub fn total(samples: &HashMap<String, f64>, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    let all = samples.iter().filter(|(k, _)| k.starts_with(&prefix));
    all.map(|(_, v)| v).sum()
}
