//! A reply that comes too late is the ambiguous case: the command may or may not have run. A TCP
//! proxy in the test holds back the reply to one `EVALSHA` past the client's response timeout,
//! once each for a publish, a lease acquire and a job push; the client then resends, and the
//! resend must not count twice:
//! - the event is stored and delivered once, with the id `publish` returned;
//! - the user holds exactly one lease;
//! - the job is queued, and runs, once.
//!
//! And a job a worker took but never finished (it stopped, or the reply of its `BLMOVE` was lost)
//! is requeued when the worker starts again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stream_core::conformance::broker::{assert_quiet, numbered, take};
use stream_core::conformance::{unique_channel, unique_user};
use stream_core::memory::MemoryBroker;
use stream_core::{
    CancellationToken, ChannelConfig, EventPublisher, EventSubscriber, EventType, LeaseStore, StreamContext,
    StreamLeaseConfig,
};
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::{RedisBroker, redis};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use worker::{DeployRequest, JobQueue, WorkerOptions, processing_list, run_worker};

const HOLD: Duration = Duration::from_millis(800);
const TIMEOUT: Duration = Duration::from_millis(200);

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6399/".into())
}

/// A proxy in front of the test Redis. Once `armed`, the next connection that sends an `EVALSHA`
/// gets that command's reply `HOLD` late; everything else is forwarded as it comes.
struct Proxy {
    url: String,
    armed: Arc<AtomicBool>,
}

impl Proxy {
    async fn start() -> Self {
        let upstream = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .rsplit('@')
            .next()
            .expect("host:port")
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("redis://{}/", listener.local_addr().expect("addr"));
        let armed = Arc::new(AtomicBool::new(false));
        let arming = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(&upstream).await.expect("connect to Redis");
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let hold = Arc::new(AtomicBool::new(false));
                let (armed, hold_up) = (arming.clone(), hold.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        if buf[..n].windows(7).any(|w| w == b"EVALSHA") && armed.swap(false, Ordering::SeqCst) {
                            hold_up.store(true, Ordering::SeqCst);
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                        if hold.swap(false, Ordering::SeqCst) {
                            tokio::time::sleep(HOLD).await;
                        }
                        if client_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { url, armed }
    }

    /// Holds back the reply to the next `EVALSHA`.
    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Whether the armed hold has been used.
    fn held(&self) -> bool {
        !self.armed.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_resent_after_a_timeout_is_delivered_once() {
    let proxy = Proxy::start().await;
    let broker = RedisBroker::builder(proxy.url.clone())
        .config(ChannelConfig::default())
        .response_timeout(TIMEOUT)
        .connect()
        .await
        .expect("connect through the proxy");
    let reader = RedisBroker::connect(&redis_url(), ChannelConfig::default())
        .await
        .expect("connect");
    let ch = unique_channel("resend");
    let mut sub = reader.subscribe(&ch, None).await.expect("subscribe");

    let first = broker.publish(&numbered(&ch, 0)).await.expect("publish");
    proxy.arm();
    let held = broker
        .publish(&numbered(&ch, 1))
        .await
        .expect("the resent publish succeeds");
    assert!(proxy.held(), "the proxy held a reply back");
    let last = broker.publish(&numbered(&ch, 2)).await.expect("publish");

    let got = take(&mut sub, 3).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), [first, held, last]);
    assert_eq!(got[1].payload["n"], 1);
    assert_quiet(&mut sub).await;
    let mut late = reader.subscribe(&ch, None).await.expect("subscribe");
    assert_eq!(take(&mut late, 3).await.len(), 3, "the history holds one copy");
    assert_quiet(&mut late).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_acquire_resent_after_a_timeout_counts_once() {
    let proxy = Proxy::start().await;
    // A limit of one: a resend that counted its own first run would be refused.
    let config = StreamLeaseConfig {
        limit: 1,
        ..StreamLeaseConfig::default()
    };
    let limiter = StreamLeaseLimiter::connect(proxy.url.clone(), config)
        .await
        .expect("connect through the proxy");
    limiter.set_response_timeout(TIMEOUT);
    let user = unique_user("resend");
    proxy.arm();
    let lease = limiter.acquire(&user).await.expect("the resent acquire succeeds");
    assert!(lease.is_some(), "the resend is not refused by its own first run");
    assert!(proxy.held(), "the proxy held a reply back");
    assert_eq!(
        limiter.active_count(&user).await.expect("count"),
        1,
        "one lease, not two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_push_resent_after_a_timeout_queues_the_job_once() {
    let proxy = Proxy::start().await;
    let queue_key = unique_channel("jobs").to_string();
    let queue = JobQueue::redis_with_timeout(&proxy.url, &queue_key, TIMEOUT)
        .await
        .expect("connect through the proxy");
    let request = DeployRequest {
        project: "shop".into(),
        environment: "staging".into(),
        service: "api".into(),
    };
    // A first job loads the script, so that the held reply is the one of a push that ran.
    queue
        .submit(
            StreamContext::builder().build(),
            None,
            request.clone(),
            Duration::from_millis(1),
        )
        .await
        .expect("push");
    proxy.arm();
    queue
        .submit(
            StreamContext::builder().build(),
            None,
            request,
            Duration::from_millis(1),
        )
        .await
        .expect("the resent push succeeds");
    assert!(proxy.held(), "the proxy held a reply back");
    let mut admin = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let queued: usize = redis::cmd("LLEN")
        .arg(worker::queue_key(&queue_key))
        .query_async(&mut admin)
        .await
        .expect("LLEN");
    assert_eq!(queued, 2, "each job is queued once");
}

/// A job that sits in a worker's processing list (taken, never finished) is requeued and run when
/// that worker starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_taken_but_not_finished_runs_when_its_worker_restarts() {
    let queue_key = unique_channel("jobs").to_string();
    let worker = unique_channel("worker").to_string();
    let queue = JobQueue::redis(&redis_url(), &queue_key).await.expect("connect");
    let ctx = StreamContext::builder().project("shop").build();
    let channel = ctx.channel_id().clone();
    let request = DeployRequest {
        project: "shop".into(),
        environment: "staging".into(),
        service: "api".into(),
    };
    queue
        .submit(ctx, None, request, Duration::from_millis(1))
        .await
        .expect("push");
    // A previous run of this worker took the job (its BLMOVE went through) and then died.
    let mut admin = redis::Client::open(redis_url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let processing = processing_list(&queue_key, &worker);
    let _: String = redis::cmd("LMOVE")
        .arg(worker::queue_key(&queue_key))
        .arg(&processing)
        .arg("LEFT")
        .arg("RIGHT")
        .query_async(&mut admin)
        .await
        .expect("LMOVE");

    let broker = MemoryBroker::default();
    let mut sub = broker.subscribe(&channel, None).await.expect("subscribe");
    let shutdown = CancellationToken::new();
    let options = WorkerOptions {
        worker: worker.clone(),
        grace: Duration::from_secs(5),
        heartbeat: Duration::from_secs(5),
        owners: None,
    };
    let (url, key, stop) = (redis_url(), queue_key.clone(), shutdown.clone());
    let publisher = Arc::new(broker.clone());
    let running = tokio::spawn(async move { run_worker(&url, &key, options, publisher, stop).await });
    let mut kinds = Vec::new();
    while kinds.last() != Some(&EventType::Done) {
        kinds.push(take(&mut sub, 1).await.remove(0).kind);
    }
    assert_eq!(kinds[0], EventType::Log, "the job ran from its start");
    shutdown.cancel();
    running.await.expect("join").expect("the worker stops cleanly");
    let left: usize = redis::cmd("LLEN")
        .arg(&processing)
        .query_async(&mut admin)
        .await
        .expect("LLEN");
    assert_eq!(left, 0, "a finished job leaves the processing list");
}
