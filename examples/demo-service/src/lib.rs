//! The demo apps' shared logic, written once for `axum-app` and `actix-app`: configuration from
//! the environment ([`Config`]), the backends ([`app_backends`]), the fake LLM ([`chat_events`]),
//! identity, ownership, the archive and the API's behaviour ([`DemoService`]), the page
//! ([`INDEX_HTML`]), and the apps' start-up ([`DemoService::from_env`], [`announce_listening`]).
//! The deploy job ([`run_deploy_job`]), its queue ([`JobQueue`], [`run_worker`]) and the start-up
//! every demo binary shares ([`run_main`], [`cancel_on_signal`]) live in the `worker` crate,
//! which the worker process is built from too, and are re-exported here. The apps only route and
//! convert types; the HTTP API is in `docs/http-api.md`.

mod backends;
mod channels;
mod chat;
mod config;
mod error;
pub mod metrics;
mod service;
mod startup;

pub use backends::{StartError, app_backends};
pub use channels::ChannelCap;
pub use chat::{ChatRequest, chat_events, reply_tokens};
pub use config::{Config, MIN_TOKEN_SECRET_BYTES};
pub use error::ApiError;
pub use service::{
    AiChatStream, Backends, ChatEvents, ChatStarted, DemoService, DeploymentCreated, MAX_EVENTS_LIMIT, Mode,
    PreparedDeployment, STREAM_CHANNEL_HEADER, STREAM_TOKEN_TTL, STREAM_URL_HEADER, StreamRefusal, TOKEN_QUERY,
    USER_HEADER, header_user, query_param, require_user,
};
pub use startup::announce_listening;
pub use stream_core::CancellationToken;
pub use worker::{
    ConfigError, DeployJob, DeployRequest, InvalidJob, JobQueue, QUEUE_RESPONSE_TIMEOUT, QueueError, SERVERS,
    WorkerConfig, WorkerOptions, cancel_on_signal, init_tracing, processing_list, run_deploy_job, run_main, run_worker,
    shutdown_signal,
};

/// The page served at `GET /`.
pub const INDEX_HTML: &str = include_str!("../static/index.html");
