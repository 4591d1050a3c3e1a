//! The Redis job queue outlives its connections: after Redis drops every client connection (a
//! restart, a failover, `CLIENT KILL`), the app's pushes and the worker's pops work again without
//! a restart of either. Needs the Redis at `REDIS_URL` (default `redis://127.0.0.1:6399/`); fails
//! without it. Alone in its test binary, because it kills the other clients of that Redis.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stream_core::memory::MemoryBroker;
use stream_core::{CancellationToken, ChannelId, EventSubscriber, EventType, StreamContext};
use tokio::time::Instant;
use worker::{DeployRequest, JobQueue, WorkerOptions, run_worker};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

/// Submits a job, retrying while the queue reconnects, and waits for its `done`.
async fn run_one(queue: &JobQueue, broker: &Arc<MemoryBroker>) {
    let ctx = StreamContext::builder().build();
    let mut events = broker.subscribe(ctx.channel_id(), None).await.unwrap();
    let request = DeployRequest::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(e) = queue
        .submit(ctx.clone(), None, request.clone(), Duration::from_millis(1))
        .await
    {
        assert!(Instant::now() < deadline, "the queue did not reconnect: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            if event.unwrap().kind == EventType::Done {
                return;
            }
        }
        panic!("the channel ended without done");
    });
    done.await.expect("the worker did not run the job to done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_pops_work_again_after_redis_drops_every_connection() {
    let url = redis_url();
    let key = format!("queue-reconnect-test:{}", ChannelId::generate());
    let queue = JobQueue::redis(&url, &key)
        .await
        .unwrap_or_else(|e| panic!("Redis must run at {url}: {e}"));
    let broker = Arc::new(MemoryBroker::default());
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn({
        let (url, key, broker, shutdown) = (url.clone(), key.clone(), broker.clone(), shutdown.clone());
        let options = WorkerOptions {
            worker: format!("{key}-worker"),
            grace: Duration::from_secs(5),
            heartbeat: Duration::from_secs(5),
            owners: None,
        };
        async move { run_worker(&url, &key, options, broker, shutdown).await }
    });

    run_one(&queue, &broker).await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut admin)
        .await
        .unwrap();
    assert!(
        killed >= 2,
        "the app's and the worker's connections were killed: {killed}"
    );

    run_one(&queue, &broker).await;

    shutdown.cancel();
    worker.await.unwrap().unwrap();
}
