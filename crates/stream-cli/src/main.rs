//! `stream-cli`: on-call commands for a stream-rs deployment, built on the same crates as the apps
//! and the worker, and configured by the same environment variables.
//!
//! - `tail <channel>` follows a channel live (`--from-start` replays its history first,
//!   `--last-event-id <id>` resumes after an id) until its `done` event or Ctrl-C;
//! - `leases <user>` lists a user's stream leases with their expiry, and
//!   `leases --release <user> <lease-id>` releases one;
//! - `events <channel>` queries the OpenSearch archive (`--types`, `--since`, `--text`);
//! - `publish <channel> <type> <json>` publishes a test event.
//!
//! Output is a table for people by default, JSON lines with `--json`. Exit codes: 0 done, 1 a
//! service failed, 2 bad input or settings. See the crate's README for examples.

mod cli;
mod error;
mod events;
mod leases;
mod output;
mod publish;
mod settings;
mod since;
mod tail;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::error::CliError;
use crate::output::Out;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return CliError::Failed(format!("cannot start the async runtime: {e}")).report(),
    };
    let out = Out::new(cli.json);
    match runtime.block_on(run(cli.command, out)) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

/// Runs one command.
async fn run(command: Command, mut out: Out) -> Result<ExitCode, CliError> {
    match command {
        Command::Tail(args) => tail::run(args, &mut out).await,
        Command::Leases(args) => leases::run(args, &mut out).await,
        Command::Events(args) => events::run(args, &mut out).await,
        Command::Publish(args) => publish::run(args, &mut out).await,
    }
}

/// Library warnings go to stderr; `RUST_LOG` filters (default `warn`), so that stdout holds only
/// the command's output.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
