//! A Redis Cluster failover mid-stream, at library level: a publisher (one `RedisBroker` on the
//! cluster) publishes a numbered stream on one channel while subscribers (on another
//! `RedisBroker`) read it live; meanwhile the channel's primary hands its slots to its replica,
//! either with `CLUSTER FAILOVER` on the replica (coordinated: nothing is lost) or by being
//! SIGKILLed (the others fail it after `cluster-node-timeout` and elect the replica).
//!
//! Then:
//! - every publish succeeded (those during the failover were retried within the retry window);
//! - the subscriber broker is subscribed (`SSUBSCRIBE`) on the new primary, and events published
//!   after the failover arrive live;
//! - every subscriber, and a late one, got every published event once, in order, and `done`;
//!   or, where Redis lost acknowledged writes (replication is asynchronous), a `gap` before what
//!   follows the loss: never a silent loss.
//!
//! Each test runs a cluster of its own (3 primaries, one replica each; Debian's `redis-server`,
//! as `scripts/redis.sh` installs it) on free ports, so that killing a node touches no other test.
//! A missing `redis-server` fails the test.

#[path = "common/own_redis.rs"]
mod own_redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use own_redis::{OwnCluster, redis_cli};
use stream_core::conformance::broker::{numbered, take_to_end};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, ChannelId, Event, EventPublisher, EventSubscriber, EventType, Subscription};
use stream_pubsub::{RedisBroker, RedisSource};

/// Subscribers reading live through the failover.
const SUBSCRIBERS: usize = 2;
/// Events published before the failover starts.
const BEFORE: usize = 60;
/// Events published once the subscriber broker is subscribed on the new primary.
const AFTER: usize = 60;
/// The pause between two publishes.
const STEP: Duration = Duration::from_millis(10);
/// The publisher's retry window: a SIGKILL failover takes the node timeout (2 s) plus an
/// election, well past the default 10 s on a slow machine only rarely, but with no margin.
const RETRY_WINDOW: Duration = Duration::from_secs(20);
/// How long a reader waits for its next event.
const READ_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Failover {
    /// `CLUSTER FAILOVER` on the replica.
    Manual,
    /// SIGKILL of the primary, then the replica's automatic promotion.
    Kill,
}

/// What the publisher sent: each event with its id, and when its publish returned.
struct Sent {
    events: Vec<Event>,
    returned: Vec<Instant>,
    longest: Duration,
}

async fn connect(urls: &[String]) -> RedisBroker {
    RedisBroker::builder(RedisSource::cluster(urls.to_vec()))
        .config(ChannelConfig::default())
        .retry_window(RETRY_WINDOW)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("the test's own cluster at {urls:?}: {e}"))
}

/// Publishes numbered events every `STEP` until `stop`, then `done`. Every publish must succeed.
fn spawn_publisher(
    publisher: RedisBroker,
    ch: ChannelId,
    published: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Sent> {
    tokio::spawn(async move {
        let mut sent = Sent {
            events: Vec::new(),
            returned: Vec::new(),
            longest: Duration::ZERO,
        };
        let mut n = 0;
        loop {
            let last = stop.load(Ordering::SeqCst);
            let mut event = if last {
                Event::done(ch.clone(), true, serde_json::Map::new()).expect("done")
            } else {
                numbered(&ch, n)
            };
            let started = Instant::now();
            event.id = publisher
                .publish(&event)
                .await
                .unwrap_or_else(|e| panic!("publish {n} failed after {:?}: {e}", started.elapsed()));
            sent.longest = sent.longest.max(started.elapsed());
            sent.returned.push(Instant::now());
            sent.events.push(event);
            published.fetch_add(1, Ordering::SeqCst);
            if last {
                return sent;
            }
            n += 1;
            tokio::time::sleep(STEP).await;
        }
    })
}

/// Reads until the subscription ends, with when each event arrived.
fn spawn_reader(mut sub: Subscription, who: String) -> tokio::task::JoinHandle<Vec<(Event, Instant)>> {
    tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(READ_WAIT, sub.next()).await {
                Ok(Some(Ok(event))) => got.push((event, Instant::now())),
                Ok(Some(Err(e))) => panic!("{who}: the subscription failed after {} events: {e}", got.len()),
                Ok(None) => return got,
                Err(_) => panic!("{who}: nothing for {READ_WAIT:?} after {} events", got.len()),
            }
        }
    })
}

/// Checks that `got` holds every event of `sent` once, in order, ending with `done`, except
/// where a `gap` came before the event that follows a loss. Returns the number of `gap` events
/// and of sent events missing.
fn check_stream(who: &str, got: &[Event], sent: &[Event]) -> (usize, usize) {
    let last = got.last().unwrap_or_else(|| panic!("{who}: got nothing"));
    assert_eq!(last.kind, EventType::Done, "{who}: the last event is done");
    let (mut gaps, mut missing, mut gap_pending, mut next) = (0, 0, false, 0);
    for event in got {
        if event.kind == EventType::Gap {
            eprintln!("{who}: gap {}", serde_json::Value::Object(event.payload.clone()));
            gaps += 1;
            gap_pending = true;
            continue;
        }
        let at = sent[next..]
            .iter()
            .position(|s| s.id == event.id)
            .map(|p| p + next)
            .unwrap_or_else(|| {
                panic!(
                    "{who}: {event:?} is a repeat, out of order, or was never acknowledged to the publisher \
                     (after sent event {next})"
                )
            });
        if at > next {
            assert!(
                gap_pending,
                "{who}: sent events {next}..{at} were lost silently (no gap before {:?})",
                event.id
            );
            missing += at - next;
        }
        gap_pending = false;
        next = at + 1;
    }
    assert_eq!(next, sent.len(), "{who}: the stream ended early");
    (gaps, missing)
}

/// How many of the subscriber broker's node connections have `SSUBSCRIBE`d `channel` on the node
/// at `port`.
fn shard_subscribers(port: u16, channel: &str) -> u64 {
    let out = redis_cli(port, &["pubsub", "shardnumsub", channel]);
    out.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

async fn stream_through_a_failover(kind: Failover) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut cluster = OwnCluster::start_with_replicas();
    let urls = cluster.urls();
    let publisher = connect(&urls).await;
    let subscriber = connect(&urls).await;
    let ch = unique_channel("failover");
    let pubsub_channel = format!("stream:{{{ch}}}");
    let primary = cluster.primary_of(ch.as_str());
    let replica = cluster.replica_of(primary);

    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let sub = subscriber.subscribe(&ch, None).await.expect("subscribe");
        readers.push(spawn_reader(sub, format!("{kind:?} subscriber {i}")));
    }
    assert_eq!(
        shard_subscribers(cluster.ports[primary], &pubsub_channel),
        1,
        "subscribed on the channel's primary"
    );

    let published = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let task = spawn_publisher(publisher.clone(), ch.clone(), published.clone(), stop.clone());
    while published.load(Ordering::SeqCst) < BEFORE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // The failover, while the publisher goes on (the cluster helper blocks: redis-cli).
    let started = Instant::now();
    let to_primary = tokio::task::block_in_place(|| match kind {
        Failover::Manual => cluster.cluster_failover(replica),
        Failover::Kill => cluster.kill_and_wait_promotion(primary, replica),
    });
    let at_failover = published.load(Ordering::SeqCst);

    // The subscriber broker follows the slot to the new primary.
    let new_port = cluster.ports[replica];
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::task::block_in_place(|| shard_subscribers(new_port, &pubsub_channel)) == 0 {
        assert!(
            Instant::now() < deadline,
            "the subscriber broker did not subscribe on the new primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let to_resubscribed = started.elapsed();
    let subscribed_at = Instant::now();
    let at_resubscribed = published.load(Ordering::SeqCst);

    while published.load(Ordering::SeqCst) < at_resubscribed + AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Still subscribed on the new primary, and only there, before `done` ends the subscriptions.
    tokio::task::block_in_place(|| {
        assert_eq!(
            cluster.primary_of(ch.as_str()),
            replica,
            "the replica serves the channel's slot"
        );
        assert_eq!(
            shard_subscribers(new_port, &pubsub_channel),
            1,
            "the subscriber broker is subscribed on the new primary"
        );
        if let Failover::Manual = kind {
            assert_eq!(
                shard_subscribers(cluster.ports[primary], &pubsub_channel),
                0,
                "and no longer on the old one, now a replica"
            );
        }
    });
    stop.store(true, Ordering::SeqCst);
    let sent = task.await.expect("every publish succeeded");

    let mut lost = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let who = format!("{kind:?} subscriber {i}");
        let got = reader.await.expect("reader");
        let events: Vec<Event> = got.iter().map(|(e, _)| e.clone()).collect();
        let (gaps, missing) = check_stream(&who, &events, &sent.events);
        lost = lost.max(missing);
        // Live after the failover: each event published once the new primary's subscription was
        // confirmed arrives promptly, not only on some later refill from history.
        let mut slowest = Duration::ZERO;
        for (event, arrived) in &got {
            if let Some(at) = sent.events.iter().position(|s| s.id == event.id)
                && sent.returned[at] > subscribed_at + Duration::from_millis(200)
            {
                slowest = slowest.max(arrived.saturating_duration_since(sent.returned[at]));
            }
        }
        eprintln!(
            "{who}: {} events, {gaps} gap(s), {missing} missing; slowest live delivery after the \
             failover {slowest:?}",
            events.len()
        );
        assert!(
            slowest < Duration::from_secs(1),
            "{who}: events after the failover came late ({slowest:?}): not live?"
        );
    }

    // A late subscriber reads the whole history from the new primary.
    let mut late = subscriber.subscribe(&ch, None).await.expect("a late subscribe");
    let history = take_to_end(&mut late).await;
    let (gaps, missing) = check_stream(&format!("{kind:?} late subscriber"), &history, &sent.events);

    eprintln!(
        "{kind:?} failover: new primary after {to_primary:?}; subscriber on it after {to_resubscribed:?}; \
         longest publish {:?}; {} events sent ({at_failover} when the new primary served, \
         {at_resubscribed} when the subscriber followed); late subscriber: {} events, {gaps} gap(s), \
         {missing} missing; live subscribers missed at most {lost}",
        sent.longest,
        sent.events.len(),
        history.len(),
    );
    assert!(sent.longest < RETRY_WINDOW);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_failover_of_the_channels_primary_loses_nothing_silently() {
    stream_through_a_failover(Failover::Manual).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_primary_and_its_replicas_promotion_lose_nothing_silently() {
    stream_through_a_failover(Failover::Kill).await;
}
