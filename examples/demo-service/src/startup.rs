//! What every demo binary does around its framework: logging, the exit code, the service from the
//! environment, the stop signal, and the line the tests wait for.

use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use stream_core::CancellationToken;

use crate::backends::{StartError, app_backends};
use crate::config::Config;
use crate::service::DemoService;

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

impl DemoService {
    /// The app's service as the environment configures it: [`Config::from_env`], then
    /// [`app_backends`].
    pub async fn from_env() -> Result<Self, StartError> {
        let config = Config::from_env()?;
        let backends = app_backends(&config).await?;
        Ok(Self::new(config, backends))
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

/// Announces that app `name` serves on `addr`: `listening on http://{addr}` on stdout (the tests
/// read it to find the port when `PORT=0`) and a log line with the mode.
pub fn announce_listening(name: &str, addr: SocketAddr, service: &DemoService) {
    println!("listening on http://{addr}");
    tracing::info!(%addr, mode = %service.health()["mode"], "{name} listening");
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
