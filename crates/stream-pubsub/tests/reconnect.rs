//! Killing the broker's subscriber connection mid-stream (`CLIENT KILL ID`, found by its
//! `CLIENT SETNAME`): the broker reconnects, subscribes again and refills from history, so every
//! subscriber still gets every event once, in order.
//!
//! Only this broker's connection is killed (by id), so other tests sharing the server are not
//! disturbed; this file still runs on its own binary.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stream_core::conformance::broker::{assert_ends, numbered, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, Event, EventId, EventPublisher, EventSubscriber, Subscription};
use stream_pubsub::RedisBroker;

const EVENTS: usize = 400;
const KILL_AFTER: usize = 100;

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Publishes `EVENTS` events and a `done` on each channel, a few at a time, from another broker
/// (a worker process would).
fn spawn_publisher(publisher: Arc<RedisBroker>, sent: Vec<Vec<Event>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for n in 0..sent[0].len() {
            for events in &sent {
                publisher.publish(&events[n]).await.expect("publish");
            }
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    })
}

fn channel_events(prefix: &str) -> Vec<Event> {
    let ch = unique_channel(prefix);
    let mut events: Vec<Event> = (0..EVENTS).map(|n| numbered(&ch, n)).collect();
    events.push(Event::done(ch, true, serde_json::Map::new()).expect("done"));
    events
}

/// Reads every subscription to its end, killing the subscriber connections (via `kill`) once the
/// first subscription has `KILL_AFTER` events; asserts each got exactly its channel's events.
async fn read_through_a_kill<F, Fut>(subs: Vec<Subscription>, sent: &[Vec<Event>], kill: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let mut subs = subs.into_iter();
    let mut first = subs.next().expect("a subscription");
    let mut got = take(&mut first, KILL_AFTER).await;
    let killed = kill().await;
    assert!(killed >= 1, "no subscriber connection was killed");
    got.extend(take(&mut first, EVENTS + 1 - KILL_AFTER).await);
    assert_eq!(ids(&got), ids(&sent[0]), "the first subscriber lost or repeated events");
    assert_ends(&mut first).await;
    for (mut sub, want) in subs.zip(&sent[1..]) {
        let got = take(&mut sub, EVENTS + 1).await;
        assert_eq!(ids(&got), ids(want), "a subscriber lost or repeated events");
        assert_ends(&mut sub).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_subscriber_connection_killed_mid_stream() {
    let url = common::redis_url();
    let name = common::unique_name("sp-kill");
    let broker = common::standalone_named(ChannelConfig::default(), &name).await;
    let publisher = Arc::new(common::standalone(ChannelConfig::default()).await);
    let sent = vec![
        channel_events("kill-a"),
        channel_events("kill-b"),
        channel_events("kill-b"),
    ];
    // Two subscribers on the first channel's copy (`kill-b` twice is two channels: unique ids).
    let mut subs = Vec::new();
    for events in &sent {
        subs.push(broker.subscribe(&events[0].channel_id, None).await.expect("subscribe"));
    }
    let before = common::named(&url, &name).await;
    assert_eq!(before.len(), 1, "one subscriber connection: {before:?}");
    assert_eq!(before[0].sub, 3);
    let old_id = before[0].id;

    let task = spawn_publisher(publisher, sent.clone());
    read_through_a_kill(subs, &sent, || common::kill(&url, old_id)).await;
    task.await.expect("publisher");

    // The broker reconnected (a new connection with the same name).
    let after = common::named(&url, &name).await;
    assert_eq!(
        after.len(),
        1,
        "one subscriber connection after the reconnect: {after:?}"
    );
    assert_ne!(after[0].id, old_id, "the subscriber connection should be a new one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_disconnected_come_from_history() {
    let url = common::redis_url();
    let name = common::unique_name("sp-gap");
    let broker = common::standalone_named(ChannelConfig::default(), &name).await;
    let ch = unique_channel("offline");
    let mut sub = broker.subscribe(&ch, None).await.expect("subscribe");
    let first = numbered(&ch, 0);
    broker.publish(&first).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, first.id);

    // Kill the connection and publish right away, before the broker can have reconnected.
    let conn = common::named(&url, &name).await;
    assert_eq!(conn.len(), 1);
    let mut admin = common::admin(&url).await;
    let mut pipe = stream_pubsub::redis::pipe();
    pipe.cmd("CLIENT").arg("KILL").arg("ID").arg(conn[0].id);
    let offline: Vec<Event> = (1..20).map(|n| numbered(&ch, n)).collect();
    let _: () = pipe.query_async(&mut admin).await.expect("CLIENT KILL");
    broker.publish_batch(&offline).await.expect("publish");
    let got = take(&mut sub, offline.len()).await;
    assert_eq!(ids(&got), ids(&offline));
    let live = numbered(&ch, 20);
    broker.publish(&live).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, live.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_subscriber_connections_killed_mid_stream() {
    let nodes = common::cluster_nodes();
    let name = common::unique_name("sp-ckill");
    let broker = common::cluster_named(ChannelConfig::default(), &name).await;
    let publisher = Arc::new(common::cluster(ChannelConfig::default()).await);
    // Enough channels that every node serves some.
    let sent: Vec<Vec<Event>> = (0..6).map(|_| channel_events("ckill")).collect();
    let mut subs = Vec::new();
    for events in &sent {
        subs.push(broker.subscribe(&events[0].channel_id, None).await.expect("subscribe"));
    }
    let mut targets = Vec::new();
    let mut ssub = 0;
    for node in &nodes {
        let conns = common::named(node, &name).await;
        assert!(
            conns.len() <= 1,
            "at most one subscriber connection per node: {conns:?}"
        );
        ssub += conns.iter().map(|c| c.ssub).sum::<u64>();
        targets.extend(conns.into_iter().map(|c| (node.clone(), c.id)));
    }
    assert_eq!(ssub, 6, "six sharded subscriptions across the nodes");

    let task = spawn_publisher(publisher, sent.clone());
    read_through_a_kill(subs, &sent, || async {
        let mut killed = 0;
        for (node, id) in &targets {
            killed += common::kill(node, *id).await;
        }
        killed
    })
    .await;
    task.await.expect("publisher");
}
