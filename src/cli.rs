//! Command-line interface: flags and their environment variables (defaults applied and values
//! checked in `config`, after the config file: see "Configuration" in docs/behaviour.md).

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

/// The commands: `serve`, `wake`, `sleep`, `health` and `doctor`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the proxy (the default when no command is given).
    Serve(ServeArgs),
    /// Send one wake with the configured methods; optionally wait for Ollama to answer.
    Wake(WakeCmdArgs),
    /// Send the configured sleep methods now; optionally wait until the machine is silent.
    Sleep(SleepCmdArgs),
    /// Ask a running proxy's /health endpoint; exit 0 when it is healthy.
    Health(HealthArgs),
    /// Check the configuration as the proxy would use it: one line per finding, with advice.
    Doctor(DoctorArgs),
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with global options and `[[backend]]` tables, one per machine (flags and
    /// environment beat the file's global options).
    #[arg(long, env = "CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Where Ollama is and how long to wait for it.
    #[command(flatten)]
    pub ollama: OllamaArgs,
    /// Listening address [default: 0.0.0.0]
    #[arg(long, env = "BIND")]
    pub bind: Option<String>,
    /// Listening port [default: 11434]
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
    /// Simple requests: longest wait for Ollama's response headers (seconds, or 10s, 1m)
    /// [default: 10]
    #[arg(long, env = "TIMEOUT_SECONDS")]
    pub timeout: Option<String>,
    /// Inference and transfers: longest silence from Ollama (seconds, or 30s, 5m) [default: 30]
    #[arg(long, env = "MODEL_TIMEOUT_SECONDS")]
    pub model_timeout: Option<String>,
    /// After this long without hearing from Ollama, wake it with the next request (minutes, or
    /// 90s) [default: 10]
    #[arg(long, env = "WAKE_INTERVAL")]
    pub wake_interval: Option<String>,
    /// How long a cached model list is fresh (minutes, or 90s) [default: 30]
    #[arg(long, env = "CACHE_DURATION")]
    pub cache_duration: Option<String>,
    /// How to wake the host.
    #[command(flatten)]
    pub wake: WakeArgs,
    /// How and when to put the host to sleep.
    #[command(flatten)]
    pub sleep: SleepArgs,
    /// Most requests held at once while Ollama wakes [default: 512]
    #[arg(long, env = "MAX_QUEUE")]
    pub max_queue: Option<String>,
    /// Largest request body buffered for replay (bytes, or 16MiB) [default: 16MiB]
    #[arg(long, env = "MAX_HELD_BODY")]
    pub max_held_body: Option<String>,
    /// Most client connections served at once; more wait in the listen backlog [default: derived
    /// from the open-file limit, leaving room for connections to Ollama].
    #[arg(long, env = "MAX_CONNECTIONS")]
    pub max_connections: Option<String>,
    /// Memory for all request bodies buffered at once (bytes, or 256MiB) [default: 256MiB]
    #[arg(long, env = "BODY_BUDGET")]
    pub body_budget: Option<String>,
    /// A client must send a request's headers within this (seconds, or 60s, 1m) [default: 60]
    #[arg(long, env = "CLIENT_HEADER_TIMEOUT")]
    pub client_header_timeout: Option<String>,
    /// An idle keep-alive client connection is closed after this (seconds, or 75s) [default: 75]
    #[arg(long, env = "CLIENT_IDLE_TIMEOUT")]
    pub client_idle_timeout: Option<String>,
    /// Persist the metadata cache in this file.
    #[arg(long, env = "CACHE_FILE")]
    pub cache_file: Option<String>,
    /// Who may use the proxy and wake a machine.
    #[command(flatten)]
    pub access: AccessArgs,
}

/// API keys and the wake rate limit (see "Access" in docs/behaviour.md).
#[derive(Debug, Clone, Default, Args)]
pub struct AccessArgs {
    /// File of API keys, one `name:key:rights` per line (rights: read or use); without keys
    /// anyone may use the proxy
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,
    /// API keys as `name:key:rights`, separated by commas (for containers)
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// Token for the status page's "Wake now" / "Sleep now" buttons (sent as a Bearer token);
    /// without it the buttons are hidden and their endpoints answer 403
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Send the client's Authorization header on to Ollama (with keys set it is kept back)
    #[arg(long, env = "FORWARD_AUTHORIZATION")]
    pub forward_authorization: bool,
    /// Most wake cycles per machine in any hour; past it, requests that would wake get 503
    /// [default: unlimited]
    #[arg(long, env = "MAX_WAKES_PER_HOUR")]
    pub max_wakes_per_hour: Option<String>,
}

/// Where Ollama is and how long to wait for it.
#[derive(Debug, Clone, Args)]
pub struct OllamaArgs {
    /// The Ollama server (path prefix allowed) [default: http://localhost:11434]
    #[arg(long, env = "OLLAMA_URL")]
    pub ollama_url: Option<String>,
    /// A TCP connect slower than this means "asleep" (seconds, or 500ms) [default: 2s]
    #[arg(long, env = "CONNECT_TIMEOUT")]
    pub connect_timeout: Option<String>,
    /// A wake gives up this long after it started (seconds, or 2m) [default: 120s]
    #[arg(long, env = "WAKE_TIMEOUT")]
    pub wake_timeout: Option<String>,
}

/// How to wake the host: magic packets and/or an HTTP wake URL.
#[derive(Debug, Clone, Args)]
pub struct WakeArgs {
    /// Target MAC address; set = magic-packet waking on.
    #[arg(long, env = "WOL_MAC")]
    pub mac: Option<String>,
    /// Comma-separated magic packet destinations (broadcast or unicast IPv4 addresses); without
    /// --mac, when given, they replace the learned broadcast address [default: 255.255.255.255]
    #[arg(long, env = "WOL_BROADCAST")]
    pub broadcast: Option<String>,
    /// UDP port of the magic packet [default: 9]
    #[arg(long, env = "WOL_PORT")]
    pub wol_port: Option<String>,
    /// Send magic packets (a learned MAC's too) out of this interface (needs CAP_NET_RAW before
    /// Linux 5.7).
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

/// How and when to put the host back to sleep (see "Sleep" in docs/behaviour.md).
#[derive(Debug, Clone, Default, Args)]
pub struct SleepArgs {
    /// Send a sleep-on-lan packet (the magic packet with the MAC reversed, to WOL_BROADCAST and
    /// WOL_PORT); needs --mac.
    #[arg(long, env = "SLEEP_PACKET", num_args = 0..=1, default_missing_value = "true")]
    pub sleep_packet: Option<String>,
    /// HTTP GET that puts the host to sleep, e.g. sleep-on-lan's http://desktop:8009/sleep
    /// (success: 2xx).
    #[arg(long, env = "SLEEP_URL")]
    pub sleep_url: Option<String>,
    /// Command that puts the host to sleep, run without a shell (split like a shell would; 30 s
    /// limit; success: exit 0), e.g. "ssh -o BatchMode=yes user@desktop sudo systemctl suspend".
    #[arg(long, env = "SLEEP_COMMAND")]
    pub sleep_command: Option<String>,
    /// Put the host to sleep after this long without requests (seconds, or 15m) [default: off]
    #[arg(long, env = "SLEEP_AFTER")]
    pub sleep_after: Option<String>,
    /// Never put the host to sleep sooner than this after it woke (seconds, or 5m) [default: 5m]
    #[arg(long, env = "MIN_AWAKE")]
    pub min_awake: Option<String>,
    /// After the sleep methods, the host must go silent within this (seconds, or 2m)
    /// [default: 2m]
    #[arg(long, env = "SLEEP_CONFIRM")]
    pub sleep_confirm: Option<String>,
    /// Sleep even when Ollama's /api/ps lists a model that has not expired.
    #[arg(long, env = "SLEEP_IGNORE_PS", num_args = 0..=1, default_missing_value = "true")]
    pub sleep_ignore_ps: Option<String>,
}

/// Options of `sleep`.
#[derive(Debug, Clone, Args)]
pub struct SleepCmdArgs {
    /// The settings of `serve`: the sleep methods and the machine's address.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The machine to put to sleep (a `[[backend]]` name); needed with several.
    #[arg(long)]
    pub backend: Option<String>,
    /// After sending, wait until the machine is silent (up to SLEEP_CONFIRM).
    #[arg(long)]
    pub wait: bool,
}

/// Options of `doctor`.
#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// The settings of `serve`, checked as the proxy would use them.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Also send one wake with the configured methods (nothing is sent without it), then wait up
    /// to the wake timeout for a sleeping Ollama to answer.
    #[arg(long = "wake")]
    pub send_wake: bool,
}

/// Options of `wake`.
#[derive(Debug, Clone, Args)]
pub struct WakeCmdArgs {
    /// The settings of `serve`: how to wake the machine and where its Ollama is (with
    /// `--config`, the machine's `[[backend]]` table).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The machine to wake (a `[[backend]]` name of the configuration file); needed with several.
    #[arg(long)]
    pub backend: Option<String>,
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
