//! The `ollama-proxy` binary: parse arguments, bind, run.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ollama_proxy::cli::{Cli, Command, ServeArgs};
use ollama_proxy::{commands, Config};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => serve(args).await,
        Command::Wake(args) => commands::wake(args).await,
        Command::Health(args) => commands::health(args).await,
    }
}

async fn serve(args: ServeArgs) -> ExitCode {
    let config = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => return commands::usage_error(&e),
    };
    let listener = match tokio::net::TcpListener::bind(config.bind).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ollama-proxy: cannot listen on {}: {e}", config.bind);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(ollama_proxy::server::signals(shutdown.clone()));
    match ollama_proxy::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ollama-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}
