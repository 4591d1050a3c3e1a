//! The demo apps' shared logic, written once for `axum-app` and `actix-app`: configuration from
//! the environment ([`Config`]), the backends ([`app_backends`]), the deploy job
//! ([`run_deploy_job`]) and its queue ([`JobQueue`], [`run_worker`]), the fake LLM
//! ([`chat_events`]), identity, ownership and the API's behaviour ([`DemoService`]), and the page
//! ([`INDEX_HTML`]). The apps only route and convert types; the HTTP API is in
//! `docs/http-api.md`.

mod backends;
mod chat;
mod config;
mod error;
mod job;
mod queue;
mod service;

pub use backends::{StartError, app_backends, worker_publisher};
pub use chat::{ChatRequest, chat_events, reply_tokens};
pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use job::{DeployJob, DeployRequest, InvalidJob, SERVERS, run_deploy_job};
pub use queue::{JobQueue, QueueError, run_worker};
pub use service::{
    Backends, DemoService, DeploymentCreated, MAX_EVENTS_LIMIT, Mode, PreparedDeployment, STREAM_TOKEN_TTL,
    TOKEN_QUERY, USER_HEADER, header_user, query_param, require_user,
};
pub use stream_core::CancellationToken;

/// The page served at `GET /`.
pub const INDEX_HTML: &str = include_str!("../static/index.html");

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
