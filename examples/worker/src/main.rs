//! The demo worker: a separate process that takes deploy jobs from a Redis list (`BLPOP` on
//! `DEMO_JOB_QUEUE`, default `stream-demo:jobs`) and emits their events through the Redis broker,
//! so that any app instance streams them. It reads the same environment as the apps; `REDIS_URL`
//! is required (in memory mode the app runs jobs in-process and needs no worker).

use std::process::ExitCode;
use std::time::Duration;

use demo_service::{
    CancellationToken, Config, WorkerOptions, cancel_on_signal, run_main, run_worker, worker_publisher,
};

#[tokio::main]
async fn main() -> ExitCode {
    run_main("worker", run()).await
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_env()?;
    let Some(redis_url) = config.redis_url.clone() else {
        return Err("REDIS_URL is not set: in memory mode the app runs jobs in-process".into());
    };
    let (publisher, store) = worker_publisher(&config, &redis_url).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(&shutdown);
    // The tests read this line to know the worker is taking jobs.
    println!("worker ready on {}", config.job_queue);
    let options = WorkerOptions {
        worker: config.worker_id.clone(),
        grace: Duration::from_secs(10),
        heartbeat: config.heartbeat(),
    };
    run_worker(&redis_url, &config.job_queue, options, publisher, shutdown).await?;
    if let Some(store) = store
        && let Err(e) = store.flush().await
    {
        tracing::warn!(error = %e, "event store flush failed");
    }
    Ok(())
}
