//! Redis SIGKILLed mid-stream and restarted, with persistence on (`appendonly yes`,
//! `appendfsync everysec`): the publisher keeps emitting through the outage (each publish is
//! retried for the retry window, and a resent publish is stored once), and a subscriber that was
//! reading through the kill, like a late one, ends with every event once, in order, and `done`.
//! Past the retry window, a publish fails with a clear error.
//!
//! Each test runs a Redis server of its own (Debian's `redis-server`, as `scripts/redis.sh`
//! installs it) on a free port, so that killing it touches no other test.

mod common;
#[path = "common/own_redis.rs"]
mod own_redis;

use std::time::{Duration, Instant};

use own_redis::{OwnCluster, OwnRedis};
use stream_core::conformance::broker::{numbered, take, take_to_end};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, ChannelId, Event, EventPublisher, EventSubscriber};
use stream_pubsub::{RedisBroker, RedisSource};

const EVENTS: usize = 150;
const KILL_AT: usize = 50;

/// A server (or a cluster node) that the test kills and starts again.
trait Restartable {
    fn kill(&mut self);
    fn restart(&mut self);
}

impl Restartable for OwnRedis {
    fn kill(&mut self) {
        OwnRedis::kill(self);
    }
    fn restart(&mut self) {
        OwnRedis::restart(self);
    }
}

/// One node of a cluster.
struct Node<'a>(&'a mut OwnCluster, usize);

impl Restartable for Node<'_> {
    fn kill(&mut self) {
        self.0.kill(self.1);
    }
    fn restart(&mut self) {
        self.0.restart(self.1);
    }
}

/// Publishes `EVENTS` events and `done` on `ch`, SIGKILLs `server` before event `KILL_AT` and
/// starts it again 1.5 s later, while that publish waits. Then checks that a subscriber that read
/// through it all, and a late one, both got every event once, in order.
async fn publish_through_a_restart(
    publisher: &RedisBroker,
    subscriber: &RedisBroker,
    ch: ChannelId,
    server: &mut impl Restartable,
) {
    let mut live = subscriber.subscribe(&ch, None).await.expect("subscribe");

    let mut sent: Vec<Event> = (0..EVENTS).map(|n| numbered(&ch, n)).collect();
    sent.push(Event::done(ch.clone(), true, serde_json::Map::new()).expect("done"));
    let mut outage = Duration::ZERO;
    for (n, event) in sent.iter_mut().enumerate() {
        if n == KILL_AT {
            server.kill();
            // Emits go on while Redis is down: the next publish waits for it, within the window.
            let started = Instant::now();
            let restart = async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                server.restart();
            };
            let (published, ()) = tokio::join!(publisher.publish(event), restart);
            event.id = published.expect("a publish rides out the restart");
            outage = started.elapsed();
            continue;
        }
        event.id = publisher
            .publish(event)
            .await
            .unwrap_or_else(|e| panic!("publish {n}: {e}"));
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(
        outage >= Duration::from_secs(1),
        "the publish waited for the restart ({outage:?})"
    );

    let ids = |events: &[Event]| events.iter().map(|e| e.id).collect::<Vec<_>>();
    let got = take(&mut live, sent.len()).await;
    assert_eq!(ids(&got), ids(&sent), "the live subscriber: every event once, in order");
    let mut late = subscriber.subscribe(&ch, None).await.expect("a late subscribe");
    assert_eq!(
        ids(&take_to_end(&mut late).await),
        ids(&sent),
        "the history after the restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_persistence_loses_nothing_and_duplicates_nothing() {
    let mut redis = OwnRedis::start(true);
    let publisher = RedisBroker::connect(redis.url(), ChannelConfig::default())
        .await
        .expect("publisher broker");
    let subscriber = RedisBroker::connect(redis.url(), ChannelConfig::default())
        .await
        .expect("subscriber broker");
    publish_through_a_restart(&publisher, &subscriber, unique_channel("restart"), &mut redis).await;
}

/// The same on a 3-node cluster: the node that owns the channel's slot is SIGKILLed and started
/// again (with its append-only file and `nodes.conf`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_node_restart_with_persistence_loses_nothing_and_duplicates_nothing() {
    let mut cluster = OwnCluster::start();
    let connect = || RedisBroker::connect(RedisSource::cluster(cluster.urls()), ChannelConfig::default());
    let publisher = connect().await.expect("publisher broker");
    let subscriber = connect().await.expect("subscriber broker");
    let ch = unique_channel("restart");
    let owner = cluster.node_of(ch.as_str());
    publish_through_a_restart(&publisher, &subscriber, ch, &mut Node(&mut cluster, owner)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_retry_window_a_publish_fails_with_a_clear_error() {
    let mut redis = OwnRedis::start(true);
    let publisher = RedisBroker::builder(redis.url())
        .retry_window(Duration::from_secs(1))
        .connect()
        .await
        .expect("publisher broker");
    let ch = unique_channel("gone");
    publisher
        .publish(&numbered(&ch, 0))
        .await
        .expect("a publish while Redis is up");
    redis.kill();
    let started = Instant::now();
    let err = publisher
        .publish(&numbered(&ch, 1))
        .await
        .expect_err("Redis stays down");
    let took = started.elapsed();
    let chain = stream_core::sse::ErrorChain(&err).to_string();
    assert!(chain.contains("gave up after"), "{chain}");
    assert!(
        took >= Duration::from_millis(900),
        "kept trying for the window ({took:?})"
    );
    assert!(took < Duration::from_secs(8), "and then gave up ({took:?})");
}

/// Persistence off: the restart loses the channel's history and its sequence. A client that
/// resumes from before the kill is told with a `gap` (never a silent one), then gets every event
/// published after the restart, in order, and `done`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_is_announced_with_a_gap() {
    let mut redis = OwnRedis::start(false);
    let broker = RedisBroker::connect(redis.url(), ChannelConfig::default())
        .await
        .expect("broker");
    let ch = unique_channel("amnesia");
    let mut before: Vec<Event> = (0..40).map(|n| numbered(&ch, n)).collect();
    for event in &mut before {
        event.id = broker.publish(event).await.expect("publish before the kill");
    }
    // The client has read the first 20 and gone away.
    let resume_from = before[19].id;

    redis.kill();
    let (port, dir) = (redis.port, redis.dir.clone());
    redis.child = std::thread::spawn(move || OwnRedis::spawn(port, &dir, false))
        .join()
        .expect("restarted");
    let mut after: Vec<Event> = (40..60).map(|n| numbered(&ch, n)).collect();
    after.push(Event::done(ch.clone(), true, serde_json::Map::new()).expect("done"));
    for event in &mut after {
        event.id = broker.publish(event).await.expect("publish after the restart");
    }

    let mut resumed = broker.subscribe(&ch, Some(resume_from)).await.expect("resume");
    let got = take_to_end(&mut resumed).await;
    assert_eq!(got[0].kind, stream_core::EventType::Gap, "a gap first: {:?}", got[0]);
    let ids = |events: &[Event]| events.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&got[1..]),
        ids(&after),
        "then every event since the restart, in order"
    );
}
