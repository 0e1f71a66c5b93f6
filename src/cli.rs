//! Command-line interface: flags, their environment variables and defaults (values checked in `config`).

use clap::{Args, Parser, Subcommand};

/// Wake-on-LAN gateway for an Ollama server that sleeps.
#[derive(Debug, Parser)]
#[command(
    name = "ollama-proxy",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// The command given, if any (none means `serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The options of `serve` given without a command.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The commands: `serve`, `wake` and `health`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the proxy (the default when no command is given).
    Serve(ServeArgs),
    /// Send one wake with the configured methods; optionally wait for Ollama to answer.
    Wake(WakeCmdArgs),
    /// Ask a running proxy's /health endpoint; exit 0 when it is healthy.
    Health(HealthArgs),
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where Ollama is and how long to wait for it.
    #[command(flatten)]
    pub ollama: OllamaArgs,
    /// Listening address.
    #[arg(long, env = "BIND", default_value = "0.0.0.0")]
    pub bind: String,
    /// Listening port.
    #[arg(long, env = "PORT", default_value = "11434")]
    pub port: String,
    /// Simple requests: longest wait for Ollama's response headers (seconds, or 10s, 1m).
    #[arg(long, env = "TIMEOUT_SECONDS", default_value = "10")]
    pub timeout: String,
    /// Inference and transfers: longest silence from Ollama (seconds, or 30s, 5m).
    #[arg(long, env = "MODEL_TIMEOUT_SECONDS", default_value = "30")]
    pub model_timeout: String,
    /// After this long without hearing from Ollama, wake it with the next request (minutes, or 90s).
    #[arg(long, env = "WAKE_INTERVAL", default_value = "10")]
    pub wake_interval: String,
    /// How long a cached model list is fresh (minutes, or 90s).
    #[arg(long, env = "CACHE_DURATION", default_value = "30")]
    pub cache_duration: String,
    /// How to wake the host.
    #[command(flatten)]
    pub wake: WakeArgs,
    /// Most requests held at once while Ollama wakes.
    #[arg(long, env = "MAX_QUEUE", default_value = "512")]
    pub max_queue: String,
    /// Largest request body buffered for replay (bytes, or 16MiB).
    #[arg(long, env = "MAX_HELD_BODY", default_value = "16MiB")]
    pub max_held_body: String,
    /// Most client connections served at once; more wait in the listen backlog [default: derived
    /// from the open-file limit, leaving room for connections to Ollama].
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Memory for all request bodies buffered at once (bytes, or 256MiB).
    #[arg(long, env = "BODY_BUDGET", default_value = "256MiB")]
    pub body_budget: String,
    /// A client must send a request's headers within this (seconds, or 60s, 1m).
    #[arg(long, env = "CLIENT_HEADER_TIMEOUT", default_value = "60")]
    pub client_header_timeout: String,
    /// An idle keep-alive client connection is closed after this (seconds, or 75s).
    #[arg(long, env = "CLIENT_IDLE_TIMEOUT", default_value = "75")]
    pub client_idle_timeout: String,
    /// Persist the metadata cache in this file.
    #[arg(long, env = "CACHE_FILE")]
    pub cache_file: Option<String>,
}

/// Where Ollama is and how long to wait for it.
#[derive(Debug, Clone, Args)]
pub struct OllamaArgs {
    /// The Ollama server (path prefix allowed).
    #[arg(long, env = "OLLAMA_URL", default_value = "http://localhost:11434")]
    pub ollama_url: String,
    /// A TCP connect slower than this means "asleep" (seconds, or 500ms).
    #[arg(long, env = "CONNECT_TIMEOUT", default_value = "2s")]
    pub connect_timeout: String,
    /// A wake gives up this long after it started (seconds, or 2m).
    #[arg(long, env = "WAKE_TIMEOUT", default_value = "120s")]
    pub wake_timeout: String,
}

/// How to wake the host: magic packets and/or an HTTP wake URL.
#[derive(Debug, Clone, Args)]
pub struct WakeArgs {
    /// Target MAC address; set = magic-packet waking on.
    #[arg(long, env = "WOL_MAC")]
    pub mac: Option<String>,
    /// Comma-separated magic packet destinations (broadcast or unicast IPv4 addresses).
    #[arg(long, env = "WOL_BROADCAST", default_value = "255.255.255.255")]
    pub broadcast: String,
    /// UDP port of the magic packet.
    #[arg(long, env = "WOL_PORT", default_value = "9")]
    pub wol_port: String,
    /// Send magic packets out of this interface (needs CAP_NET_RAW).
    #[arg(long, env = "WOL_INTERFACE")]
    pub interface: Option<String>,
    /// SecureOn password (6 bytes, written like a MAC).
    #[arg(long, env = "WOL_SECUREON", hide_env_values = true)]
    pub secureon: Option<String>,
    /// HTTP wake endpoint, e.g. WolGoWeb's http://pi:9090/wol?mac=..
    #[arg(long, env = "WAKE_URL")]
    pub wake_url: Option<String>,
    /// WolGoWeb key: sign WAKE_URL calls with time and token.
    #[arg(long, env = "WAKE_KEY", hide_env_values = true)]
    pub wake_key: Option<String>,
}

/// Options of `wake`.
#[derive(Debug, Clone, Args)]
pub struct WakeCmdArgs {
    /// How to wake the host.
    #[command(flatten)]
    pub wake: WakeArgs,
    /// Where Ollama is and how long to wait for it.
    #[command(flatten)]
    pub ollama: OllamaArgs,
    /// After waking, poll Ollama until it answers (up to the wake timeout).
    #[arg(long)]
    pub wait: bool,
}

/// Options of `health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Full URL of the proxy's /health [default: http://127.0.0.1:$PORT/health]
    #[arg(long)]
    pub url: Option<String>,
    /// Port of the proxy, used for the default URL.
    #[arg(long, env = "PORT", default_value = "11434")]
    pub port: String,
}
