//! Where deploy jobs run: in-process (memory mode) or on a Redis list that the worker process
//! takes from (Redis mode).

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use stream_core::{CancellationToken, EventPublisher, StreamContext};

use crate::job::{DeployJob, DeployRequest, run_deploy_job};

/// A job could not be queued or taken.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis failed.
    #[error("job queue: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Where [`submit`](Self::submit) sends jobs.
#[derive(Clone)]
pub enum JobQueue {
    /// Runs each job as a tokio task of this process, emitting through `publisher`.
    InProcess {
        /// The app's publisher (with the in-memory broker and store).
        publisher: Arc<dyn EventPublisher>,
    },
    /// Pushes each job onto the Redis list `key` (`RPUSH`), for a worker's `BLPOP`.
    Redis {
        /// A multiplexed connection that reconnects by itself after Redis restarts or drops it
        /// (the push that saw the failure is an error: 503, never pushed twice).
        connection: redis::aio::ConnectionManager,
        /// The list.
        key: String,
    },
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InProcess { .. } => f.write_str("JobQueue::InProcess"),
            Self::Redis { key, .. } => write!(f, "JobQueue::Redis({key})"),
        }
    }
}

impl JobQueue {
    /// A queue on the Redis list `key`. One connection, checked now.
    pub async fn redis(url: &str, key: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(url)?;
        let mut connection = client.get_connection_manager().await?;
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(Self::Redis {
            connection,
            key: key.to_owned(),
        })
    }

    /// Starts the deploy job for `ctx`: spawns it, or pushes it onto the list (one round trip).
    pub async fn submit(&self, ctx: StreamContext, request: DeployRequest, step: Duration) -> Result<(), QueueError> {
        match self {
            Self::InProcess { publisher } => {
                let emitter = ctx.bind(publisher.clone());
                tokio::spawn(async move {
                    if let Err(e) = run_deploy_job(&emitter, &request, step).await {
                        tracing::warn!(channel = %emitter.channel_id(), error = %e, "deploy job failed");
                    }
                });
                Ok(())
            }
            Self::Redis { connection, key } => {
                let job = DeployJob::new(&ctx, request, step).to_json();
                let _: i64 = connection.clone().rpush(key, job).await?;
                Ok(())
            }
        }
    }
}

/// The worker loop: takes jobs from the Redis list `key` (`BLPOP`, one second at a time) and runs
/// each as a task that emits through `publisher`, until `shutdown` is cancelled. Jobs still
/// running then are awaited for at most `grace`.
pub async fn run_worker(
    redis_url: &str,
    key: &str,
    publisher: Arc<dyn EventPublisher>,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), QueueError> {
    let client = redis::Client::open(redis_url)?;
    // BLPOP waits up to a second, beyond the default response timeout. The connection manager
    // reconnects after Redis restarts or drops the connection; until then BLPOP fails and is
    // retried below.
    let config = redis::aio::ConnectionManagerConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut connection = client.get_connection_manager_with_config(config).await?;
    let mut running = tokio::task::JoinSet::new();
    tracing::info!(queue = key, "worker waiting for jobs");
    let mut blpop = redis::cmd("BLPOP");
    blpop.arg(key).arg(1);
    loop {
        let popped: Option<(String, String)> = tokio::select! {
            () = shutdown.cancelled() => break,
            popped = blpop.query_async(&mut connection) => match popped {
                Ok(popped) => popped,
                Err(e) => {
                    tracing::warn!(error = %e, "BLPOP failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        while running.try_join_next().is_some() {}
        let Some((_, json)) = popped else { continue };
        let (job, ctx) = match DeployJob::from_json(&json) {
            Ok(job) => job,
            Err(e) => {
                tracing::warn!(error = %e, "dropping an invalid job");
                continue;
            }
        };
        tracing::info!(channel = %ctx.channel_id(), "job taken");
        let emitter = ctx.bind(publisher.clone());
        running.spawn(async move {
            match run_deploy_job(&emitter, &job.config, job.step()).await {
                Ok(()) => tracing::info!(channel = %emitter.channel_id(), "job done"),
                Err(e) => tracing::warn!(channel = %emitter.channel_id(), error = %e, "deploy job failed"),
            }
        });
    }
    if tokio::time::timeout(grace, async { while running.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!(jobs = running.len(), "shutting down with jobs still running");
    }
    Ok(())
}
