//! The demo worker: a separate process that takes deploy jobs from a Redis list (`BLMOVE` from
//! `DEMO_JOB_QUEUE`, default `stream-demo:jobs`) and emits their events through the Redis broker,
//! so that any app instance streams them. It writes to no event store: the app that queued a job
//! archives its channel. `REDIS_URL` (or `REDIS_CLUSTER_NODES`, which wins) is required (in memory mode the app runs jobs in-process and
//! needs no worker); the other variables it reads are [`WorkerConfig`]'s.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use stream_core::CancellationToken;
use stream_pubsub::RedisBroker;
use worker::{WorkerConfig, WorkerOptions, cancel_on_signal, run_main, run_worker};

#[tokio::main]
async fn main() -> ExitCode {
    run_main("worker", run()).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = WorkerConfig::from_env()?;
    let (Some(broker_source), Some(queue_source)) = (config.redis_source(), config.redis_source()) else {
        return Err(
            "neither REDIS_URL nor REDIS_CLUSTER_NODES is set: in memory mode the app runs jobs in-process".into(),
        );
    };
    let broker = RedisBroker::builder(broker_source)
        .config(config.channel_config())
        .retry_window(config.redis_retry_window())
        .connect()
        .await
        .map(Arc::new)
        .map_err(|e| format!("Redis broker: {e}"))?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(&shutdown);
    // The tests read this line to know the worker is taking jobs.
    println!("worker ready on {}", config.job_queue);
    let options = WorkerOptions {
        worker: config.worker_id.clone(),
        grace: Duration::from_secs(10),
        heartbeat: config.heartbeat(),
        owners: Some((broker.clone(), config.channel_config().history_ttl)),
    };
    run_worker(queue_source, &config.job_queue, options, broker, shutdown).await?;
    Ok(())
}
