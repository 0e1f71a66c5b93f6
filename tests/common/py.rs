//! The Python venv with the pinned clients and tools (tests/py/requirements.txt).

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
