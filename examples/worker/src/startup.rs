//! What every demo binary (this worker and the apps) does around its work: logging, the exit
//! code, and the stop signal.

use std::error::Error;
use std::future::Future;
use std::process::ExitCode;

use stream_core::CancellationToken;

/// A demo binary's `main`: sets up logging ([`init_tracing`]), awaits `run`, and turns its outcome
/// into the exit code. An error is logged and printed on stderr as `{name}: {error}`; a clean end
/// is logged as `{name} stopped`.
pub async fn run_main<F>(name: &str, run: F) -> ExitCode
where
    F: Future<Output = Result<(), Box<dyn Error>>>,
{
    init_tracing();
    match run.await {
        Ok(()) => {
            tracing::info!("{name} stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cancels `token` on SIGINT or SIGTERM ([`shutdown_signal`]), from a task of its own. Call it
/// inside a tokio runtime (actix's is one).
pub fn cancel_on_signal(token: &CancellationToken) {
    let token = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
    });
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}
