//! Scale-out through a failover (issue 17), on whole processes: a Redis Cluster of the test's own
//! (3 primaries, one replica each, persistence on), two instances of each app and two workers on
//! it (`REDIS_CLUSTER_NODES`), 20 deployments of 5 users at once. Every deployment has two
//! clients that hang up now and then and resume with `Last-Event-ID` on a random instance. While
//! the jobs run, the replica of the primary that serves one busy channel takes over
//! (`CLUSTER FAILOVER`), then the primary of another busy channel is SIGKILLed and its replica
//! promoted.
//!
//! Every client ends with every event of its job once, in order, and `done`; an event that the
//! failover lost (replication is asynchronous) may only be missing after a `gap` notice. No user
//! ever holds more leases than the limit, across the four instances (sampled all along).

mod support;

#[path = "../../crates/stream-pubsub/tests/common/own_redis.rs"]
mod own_redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use own_redis::OwnCluster;
use stream_core::UserId;
use stream_lease::StreamLeaseLimiter;
use stream_pubsub::RedisSource;
use support::*;

const USERS: usize = 5;
const JOBS_PER_USER: usize = 4;
const CLIENTS_PER_JOB: usize = 2;
const LEASE_LIMIT: u64 = 4;

/// What one client saw, joined over its connections.
#[derive(Debug, Default)]
struct Seen {
    frames: Vec<Frame>,
    connections: usize,
    refused: usize,
    /// The last refusal: a status and its body, or the connect error.
    last_refusal: String,
}

/// Follows `channel` as `user` until `done`: hangs up after every `hang_up_every` events and
/// resumes with `Last-Event-ID` on the next instance of `bases` (in an order of its own); a
/// refusal (429 at the lease limit, 503 during the failover) or a broken stream is retried.
async fn follow(bases: Arc<Vec<String>>, channel: String, user: String, seed: usize) -> Seen {
    let client = client();
    let mut seen = Seen::default();
    let mut last_id: Option<String> = None;
    let hang_up_every = 3 + seed % 3;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel}/{seed}: no done within 120 s: {:?}; {} connections, {} refused, last: {}",
            seen.frames.iter().map(Frame::kind).collect::<Vec<_>>(),
            seen.connections,
            seen.refused,
            seen.last_refusal
        );
        let base = &bases[(seed * 7 + attempt * 3) % bases.len()];
        let mut req = client
            .get(format!("{base}/streams/{channel}"))
            .header("X-User-Id", &user);
        if let Some(id) = &last_id {
            req = req.header("Last-Event-ID", id);
        }
        let res = match req.send().await {
            Ok(res) if res.status() == 200 => res,
            Ok(res) if res.status() == 204 => panic!("{channel}: 204 before done was seen"),
            other => {
                seen.last_refusal = match other {
                    Ok(res) => format!("{} {}", res.status(), res.text().await.unwrap_or_default()),
                    Err(e) => e.to_string(),
                };
                seen.refused += 1;
                tokio::time::sleep(Duration::from_millis(150)).await;
                continue;
            }
        };
        seen.connections += 1;
        let mut sse = SseReader::new(res);
        let mut this_connection = 0;
        loop {
            match sse.try_next_within(Duration::from_secs(15)).await {
                Ok(Some(frame)) if frame.kind() == "ping" => {}
                Ok(Some(frame)) if frame.kind() == "error" && frame.data["fatal"] == true && frame.id.is_none() => {
                    // The pipeline's own fatal frame (a backend failed): reconnect.
                }
                Ok(Some(frame)) => {
                    if let Some(id) = &frame.id {
                        last_id = Some(id.clone());
                    }
                    let done = frame.kind() == "done";
                    seen.frames.push(frame);
                    if done {
                        return seen;
                    }
                    this_connection += 1;
                    if this_connection == hang_up_every {
                        break;
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
    }
    unreachable!()
}

/// Whether `sub` appears in `all` in order.
fn is_subsequence(sub: &[&str], all: &[&str]) -> bool {
    let mut rest = all.iter();
    sub.iter().all(|k| rest.any(|a| a == k))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_on_four_instances_survive_a_failover_and_a_killed_primary() {
    let mut cluster = OwnCluster::start_with_replicas();
    let nodes = cluster.urls().join(",");
    let queue = unique("failover-jobs");
    let settings = |worker: bool| Settings {
        step_ms: 700,
        lease_limit: LEASE_LIMIT,
        start_worker: worker,
        cluster_nodes: Some(nodes.clone()),
        env: vec![
            ("DEMO_JOB_QUEUE".into(), queue.clone()),
            // A SIGKILL failover takes the node timeout and an election: a few seconds.
            ("STREAM_REDIS_RETRY_SECS".into(), "30".into()),
            // Heartbeats far apart: a failover must not look like a lost producer.
            ("STREAM_HEARTBEAT_MS".into(), "5000".into()),
        ],
        ..Settings::default()
    };
    let apps: Vec<App> = [
        ("axum-app", true),
        ("actix-app", true),
        ("axum-app", false),
        ("actix-app", false),
    ]
    .into_iter()
    .map(|(app, worker)| {
        App::start_with(
            Target {
                app,
                mode: Mode::RedisCluster,
            },
            settings(worker),
        )
    })
    .collect();
    let bases = Arc::new(apps.iter().map(|a| a.base.clone()).collect::<Vec<_>>());

    // The lease sampler: every user's live leases, through the limiter on the same cluster.
    let limiter = StreamLeaseLimiter::builder(RedisSource::cluster(cluster.urls()))
        .config(stream_core::StreamLeaseConfig {
            limit: LEASE_LIMIT as usize,
            ..stream_core::StreamLeaseConfig::default()
        })
        .connect()
        .await
        .expect("the test's limiter");
    let users: Vec<String> = (0..USERS).map(|n| unique(&format!("failover-user{n}"))).collect();
    let sampling = Arc::new(AtomicBool::new(true));
    let (samples, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let sampler = tokio::spawn({
        let (users, sampling, samples, most) = (users.clone(), sampling.clone(), samples.clone(), most.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                for user in &users {
                    // During the failover a read may fail: that is not a sample.
                    if let Ok(n) = limiter.get_active_streams(&UserId::new(user).unwrap()).await {
                        samples.fetch_add(1, Ordering::Relaxed);
                        most.fetch_max(n, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });

    // 20 deployments, each created on some instance, each with two clients.
    let mut channels = Vec::new();
    for (n, user) in users.iter().enumerate() {
        for j in 0..JOBS_PER_USER {
            let (channel, _) = apps[(n + j) % apps.len()].deploy(user).await;
            channels.push((channel, user.clone()));
        }
    }
    let mut clients = Vec::new();
    for (n, (channel, user)) in channels.iter().enumerate() {
        for c in 0..CLIENTS_PER_JOB {
            clients.push((
                channel.clone(),
                tokio::spawn(follow(
                    bases.clone(),
                    channel.clone(),
                    user.clone(),
                    n * CLIENTS_PER_JOB + c,
                )),
            ));
        }
    }

    // While they run: a manual failover of one busy channel's primary, then a SIGKILL of
    // another's (whichever node serves it by then) and its replica's promotion.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let first = cluster.primary_of(&channels[0].0);
    let replica = cluster.replica_of(first);
    let took = tokio::task::block_in_place(|| cluster.cluster_failover(replica));
    eprintln!("CLUSTER FAILOVER: node {replica} took over from node {first} in {took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let victim_channel = channels
        .iter()
        .map(|(c, _)| c)
        .find(|c| cluster.primary_of(c) != replica)
        .unwrap_or(&channels[1].0)
        .clone();
    let victim = cluster.primary_of(&victim_channel);
    let heir = cluster.replica_of(victim);
    let took = tokio::task::block_in_place(|| cluster.kill_and_wait_promotion(victim, heir));
    eprintln!("SIGKILL of node {victim}: node {heir} promoted in {took:?}");

    let mut gaps = 0;
    for (channel, client) in clients {
        let seen = client.await.expect("a client task");
        let kinds: Vec<&str> = seen.frames.iter().map(Frame::kind).collect();
        assert_eq!(kinds.last(), Some(&"done"), "{channel}: {kinds:?}");
        if kinds.contains(&"gap") {
            gaps += 1;
            let events: Vec<Frame> = seen.frames.iter().filter(|f| f.kind() != "gap").cloned().collect();
            assert_increasing(&events);
            let got: Vec<&str> = kinds.iter().copied().filter(|k| *k != "gap").collect();
            assert!(is_subsequence(&got, &JOB_TYPES), "{channel}: {kinds:?}");
        } else {
            assert_job(&seen.frames, &channel);
        }
        assert!(
            seen.connections >= 2,
            "{channel}: it resumed ({} connections)",
            seen.connections
        );
    }
    sampling.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let (samples, most) = (samples.load(Ordering::Relaxed), most.load(Ordering::Relaxed));
    eprintln!(
        "{} clients done; {gaps} saw a gap notice; lease samples {samples}, most leases of one user {most}",
        channels.len() * CLIENTS_PER_JOB
    );
    assert!(samples > 100, "the sampler sampled ({samples})");
    assert!(
        most as u64 <= LEASE_LIMIT,
        "a user held {most} leases, over the limit {LEASE_LIMIT}"
    );
    assert!(most > 0, "leases were held");
    drop(apps);
}
