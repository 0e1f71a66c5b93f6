//! Putting a machine to sleep: the sleep-on-lan packet (via the `wol` crate), the sleep URL and the
//! sleep command, with a report of each (see "Sleep" in docs/behaviour.md).

use std::fmt;
use std::net::SocketAddrV4;
use std::process::Stdio;
use std::time::Duration;

use reqwest::Url;
use wol::{MagicPacket, Sender};

use crate::config::SleepConfig;
use crate::wake::display_url;

/// Longest a sleep URL may take to answer.
const URL_LIMIT: Duration = Duration::from_secs(10);
/// Longest a sleep command may run; it is killed after that.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(30);
/// Most bytes of a command's output kept for the log.
const OUTPUT_LIMIT: usize = 4096;

/// What one sleep method did: the method, and its answer or why it failed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub method: &'static str,
    pub result: Result<String, String>,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.result.is_ok()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(answer) => write!(f, "{}: {answer}", self.method),
            Err(why) => write!(f, "{} failed: {why}", self.method),
        }
    }
}

/// Why the sleep methods could not be prepared at start.
#[derive(Debug, thiserror::Error)]
pub enum SleeperError {
    #[error("cannot open the sleep packet socket: {0}")]
    Packet(#[from] wol::SendError),
    #[error("cannot build the HTTP client for the sleep URL: {0}")]
    Http(#[source] reqwest::Error),
}

/// Sends every configured sleep method.
pub struct Sleeper {
    packet: Option<(Sender, MagicPacket)>,
    url: Option<(reqwest::Client, Url)>,
    command: Option<Vec<String>>,
}

impl Sleeper {
    /// Opens the UDP socket (when the packet is configured). Must run inside a Tokio runtime.
    pub fn new(cfg: &SleepConfig) -> Result<Self, SleeperError> {
        let packet = match &cfg.packet {
            Some(p) => Some((
                Sender::new(p.sender.clone())?,
                MagicPacket::sleep_on_lan(p.mac),
            )),
            None => None,
        };
        let url = match &cfg.url {
            Some(u) => Some((
                reqwest::Client::builder()
                    .no_proxy()
                    .timeout(URL_LIMIT)
                    .build()
                    .map_err(SleeperError::Http)?,
                u.clone(),
            )),
            None => None,
        };
        Ok(Sleeper {
            packet,
            url,
            command: cfg.command.clone(),
        })
    }

    /// Every configured method, concurrently.
    pub async fn sleep_all(&self) -> Vec<Outcome> {
        let (packet, url, command) =
            tokio::join!(self.send_packet(), self.call_url(), self.run_command());
        packet.into_iter().chain(url).chain(command).collect()
    }

    async fn send_packet(&self) -> Option<Outcome> {
        let (sender, packet) = self.packet.as_ref()?;
        let result = sender.send(packet).await.map_err(|e| e.to_string());
        Some(Outcome {
            method: "sleep packet",
            result: result.map(|dests| format!("sent to {}", list(&dests))),
        })
    }

    async fn call_url(&self) -> Option<Outcome> {
        let (client, url) = self.url.as_ref()?;
        let result = async {
            let resp = client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| crate::error::chain(&e))?;
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let body = body.trim().chars().take(200).collect::<String>();
            if status.is_success() {
                Ok(format!("{} answered {status} {body}", display_url(url)))
            } else {
                Err(format!("{} answered {status} {body}", display_url(url)))
            }
        }
        .await;
        Some(Outcome {
            method: "sleep URL",
            result,
        })
    }

    async fn run_command(&self) -> Option<Outcome> {
        let argv = self.command.as_ref()?;
        Some(Outcome {
            method: "sleep command",
            result: run(argv).await,
        })
    }
}

fn list(dests: &[SocketAddrV4]) -> String {
    let all: Vec<String> = dests.iter().map(|d| d.to_string()).collect();
    all.join(", ")
}

/// Runs `argv` without a shell, stdin closed, for at most [`COMMAND_LIMIT`]; its output goes to
/// the log. Success is exit status 0.
async fn run(argv: &[String]) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".into());
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // A group of its own: on timeout what it started goes too (`sh -c '... &'`).
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let group = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
    // Output is read as it comes (a full pipe would block the command) but only its start is kept.
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = async { tokio::join!(head_of(stdout), head_of(stderr), child.wait()) };
    let (stdout, stderr, status) = match tokio::time::timeout(COMMAND_LIMIT, finished).await {
        Ok((out, err, Ok(status))) => (out, err, status),
        Ok((_, _, Err(e))) => return Err(format!("{program}: {e}")),
        Err(_) => {
            if let Some(group) = group {
                // SAFETY: killpg only sends a signal; `group` is the group this child leads.
                unsafe { libc::killpg(group, libc::SIGKILL) };
            }
            return Err(format!(
                "{program} still ran after {}s and was killed",
                COMMAND_LIMIT.as_secs()
            ));
        }
    };
    for (stream, bytes) in [("stdout", &stdout), ("stderr", &stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        if !text.is_empty() {
            tracing::info!(program = %program, stream, output = %text, "sleep command output");
        }
    }
    match status.code() {
        Some(0) => Ok(format!("{program} exited 0")),
        Some(code) => Err(format!("{program} exited {code}")),
        None => Err(format!("{program} was killed by a signal")),
    }
}

/// The first [`OUTPUT_LIMIT`] bytes of a child's output; the rest is read and dropped.
async fn head_of(pipe: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 8192];
    while let Ok(n @ 1..) = pipe.read(&mut buf).await {
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(buf.get(..n.min(room)).unwrap_or_default());
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_succeeds_on_exit_0_only() {
        let ok = run(&["true".into()]).await;
        assert_eq!(ok, Ok("true exited 0".into()));
        let bad = run(&["sh".into(), "-c".into(), "exit 3".into()]).await;
        assert_eq!(bad, Err("sh exited 3".into()));
        let missing = run(&["/nonexistent/sleep-helper".into()])
            .await
            .unwrap_err();
        assert!(
            missing.contains("cannot run /nonexistent/sleep-helper"),
            "{missing}"
        );
    }

    #[tokio::test]
    async fn a_chatty_command_keeps_only_the_start_of_its_output() {
        let chatty = "head -c 67108864 /dev/zero; echo end >&2";
        let ok = run(&["sh".into(), "-c".into(), chatty.into()]).await;
        assert_eq!(ok, Ok("sh exited 0".into()));
        let big = vec![b'x'; 1 << 20];
        assert_eq!(head_of(Some(&big[..])).await.len(), OUTPUT_LIMIT);
        assert_eq!(head_of(Some(&b"short"[..])).await, b"short");
        assert!(head_of(None::<&[u8]>).await.is_empty());
    }
}
