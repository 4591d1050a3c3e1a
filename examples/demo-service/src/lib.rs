//! The demo apps' shared logic, written once for `axum-app` and `actix-app`: configuration from
//! the environment ([`Config`]), the backends ([`app_backends`]), the deploy job
//! ([`run_deploy_job`]) and its queue ([`JobQueue`], [`run_worker`]), the fake LLM
//! ([`chat_events`]), identity, ownership and the API's behaviour ([`DemoService`]), the page
//! ([`INDEX_HTML`]), and the binaries' start-up ([`run_main`], [`DemoService::from_env`],
//! [`cancel_on_signal`], [`announce_listening`]). The apps only route and convert types; the
//! HTTP API is in `docs/http-api.md`.

mod backends;
mod chat;
mod config;
mod error;
mod job;
mod queue;
mod service;
mod startup;

pub use backends::{StartError, app_backends, worker_publisher};
pub use chat::{ChatRequest, chat_events, reply_tokens};
pub use config::{Config, ConfigError};
pub use error::ApiError;
pub use job::{DeployJob, DeployRequest, InvalidJob, SERVERS, run_deploy_job};
pub use queue::{JobQueue, QUEUE_RESPONSE_TIMEOUT, QueueError, WorkerOptions, processing_list, run_worker};
pub use service::{
    Backends, DemoService, DeploymentCreated, MAX_EVENTS_LIMIT, Mode, PreparedDeployment, STREAM_TOKEN_TTL,
    TOKEN_QUERY, USER_HEADER, header_user, query_param, require_user,
};
pub use startup::{announce_listening, cancel_on_signal, init_tracing, run_main, shutdown_signal};
pub use stream_core::CancellationToken;

/// The page served at `GET /`.
pub const INDEX_HTML: &str = include_str!("../static/index.html");
