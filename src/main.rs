//! The `ollama-proxy` binary: parse arguments, set up logging, run the command.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use ollama_proxy::cli::{Cli, Command};
use ollama_proxy::{commands, logging};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Kept to the end: dropping it writes the log lines still queued.
    let _logs = match logging::init() {
        Ok(guard) => guard,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ollama-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => commands::serve(args).await,
        Command::Wake(args) => commands::wake(args).await,
        Command::Sleep(args) => commands::sleep(args).await,
        Command::Health(args) => commands::health(args).await,
        Command::Doctor(args) => commands::doctor(args).await,
    }
}
