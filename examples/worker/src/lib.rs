//! The demo worker's library: the deploy job ([`run_deploy_job`]), its Redis queue ([`JobQueue`]
//! to push, [`run_worker`] to take and run), the settings the worker reads ([`WorkerConfig`]),
//! and the start-up every demo binary shares ([`run_main`], [`cancel_on_signal`]). It depends on
//! `stream-core` and `stream-pubsub` only (plus tokio, redis and tracing); the demo apps
//! (`demo-service`) use it to queue jobs, or to run them in-process in memory mode.

mod config;
mod job;
mod queue;
mod startup;

pub use config::{ConfigError, Vars, WorkerConfig};
pub use job::{DeployJob, DeployRequest, InvalidJob, SERVERS, run_deploy_job};
pub use queue::{JobQueue, QUEUE_RESPONSE_TIMEOUT, QueueError, WorkerOptions, processing_list, queue_key, run_worker};
pub use startup::{cancel_on_signal, init_tracing, run_main, shutdown_signal};
