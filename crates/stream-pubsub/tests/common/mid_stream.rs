//! Killing subscriber connections while events flow: a publisher broker emits on a few channels,
//! the subscriber connections are killed once the first subscriber is part way through, and every
//! subscriber must still read every event of its channel once, in order.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use stream_core::conformance::broker::{assert_ends, numbered, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, Event, EventId, EventPublisher, EventSubscriber, Subscription};
use stream_pubsub::RedisBroker;
use tokio::sync::oneshot;

/// Events on each channel, before its `done`.
pub const EVENTS: usize = 400;
/// The kill comes once the first subscriber has read this many.
pub const KILL_AFTER: usize = 100;
/// The publisher sends this many on each channel, then waits for the kill before the rest, so
/// that some events are certainly published while the broker reconnects, or after.
pub const BEFORE_KILL: usize = 200;

pub fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// `EVENTS` numbered events and a `done` on a new channel.
pub fn channel_events(prefix: &str) -> Vec<Event> {
    let ch = unique_channel(prefix);
    let mut events: Vec<Event> = (0..EVENTS).map(|n| numbered(&ch, n)).collect();
    events.push(Event::done(ch, true, serde_json::Map::new()).expect("done"));
    events
}

/// Publishes the events of every channel, a few at a time, from another broker (a worker process
/// would): the first `BEFORE_KILL` of each, then the rest once `killed` fires (or its sender is
/// gone).
pub fn spawn_publisher(
    publisher: Arc<RedisBroker>,
    mut sent: Vec<Vec<Event>>,
    killed: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<Vec<Vec<Event>>> {
    tokio::spawn(async move {
        let mut killed = Some(killed);
        for n in 0..sent[0].len() {
            if n == BEFORE_KILL
                && let Some(killed) = killed.take()
            {
                let _ = killed.await;
            }
            for events in &mut sent {
                events[n].id = publisher.publish(&events[n]).await.expect("publish");
            }
            if n % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        sent
    })
}

/// Subscribes `broker` to the channel of every list of `sent`, in order.
pub async fn subscribe_all(broker: &RedisBroker, sent: &[Vec<Event>]) -> Vec<Subscription> {
    let mut subs = Vec::new();
    for events in sent {
        subs.push(broker.subscribe(&events[0].channel_id, None).await.expect("subscribe"));
    }
    subs
}

/// Starts the publisher and reads every subscription (one per list of `sent`) to its end, calling
/// `kill` once the first one has `KILL_AFTER` events; asserts that `kill` killed something and
/// that each subscription got exactly its channel's events, in order.
pub async fn read_through_a_kill<F, Fut>(subs: Vec<Subscription>, publisher: RedisBroker, sent: &[Vec<Event>], kill: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = u64>,
{
    let (killed_tx, killed_rx) = oneshot::channel();
    let task = spawn_publisher(Arc::new(publisher), sent.to_vec(), killed_rx);
    let mut subs = subs.into_iter();
    let mut first = subs.next().expect("a subscription");
    let mut got = take(&mut first, KILL_AFTER).await;
    let killed = kill().await;
    assert!(killed >= 1, "no subscriber connection was killed");
    // The publisher is gone only if it panicked, which `task.await` reports.
    let _ = killed_tx.send(());
    got.extend(take(&mut first, EVENTS + 1 - KILL_AFTER).await);
    assert_ends(&mut first).await;
    let mut all = vec![got];
    for mut sub in subs {
        all.push(take(&mut sub, EVENTS + 1).await);
        assert_ends(&mut sub).await;
    }
    // The ids the broker gave, as the publisher was told them.
    let sent = task.await.expect("publisher");
    for (got, want) in all.iter().zip(&sent) {
        assert_eq!(ids(got), ids(want), "a subscriber lost or repeated events");
    }
}

/// The standalone case: a broker reads three channels while `kill` (given the server's URL and
/// the id of the broker's subscriber connection) kills that connection; the broker then has a new
/// subscriber connection of the same name.
pub async fn standalone_killed_mid_stream<F, Fut>(kill: F)
where
    F: FnOnce(String, u64) -> Fut,
    Fut: Future<Output = u64>,
{
    let url = super::redis_url();
    let name = super::unique_name("sp-kill");
    let broker = super::standalone_named(ChannelConfig::default(), &name).await;
    let publisher = super::standalone(ChannelConfig::default()).await;
    let sent = vec![
        channel_events("kill-a"),
        channel_events("kill-b"),
        channel_events("kill-b"),
    ];
    // Three channels (`kill-b` twice is two channels: unique ids).
    let subs = subscribe_all(&broker, &sent).await;
    let before = super::named(&url, &name).await;
    assert_eq!(before.len(), 1, "one subscriber connection: {before:?}");
    assert_eq!(before[0].sub, 3);
    let old_id = before[0].id;

    read_through_a_kill(subs, publisher, &sent, || kill(url.clone(), old_id)).await;

    // The broker reconnected (a new connection with the same name): the kill took the old one.
    let after = super::named(&url, &name).await;
    assert_eq!(
        after.len(),
        1,
        "one subscriber connection after the reconnect: {after:?}"
    );
    assert_ne!(after[0].id, old_id, "the subscriber connection should be a new one");
}

/// The cluster case: a broker reads six channels (some on every node) while `kill` (given each
/// node's URL and the id of the broker's subscriber connection there) kills those connections;
/// the broker subscribes again on every node, in turn, and refills from history.
pub async fn cluster_killed_mid_stream<F, Fut>(kill: F)
where
    F: FnOnce(Vec<(String, u64)>) -> Fut,
    Fut: Future<Output = u64>,
{
    let nodes = super::cluster_nodes();
    let name = super::unique_name("sp-ckill");
    let broker = super::cluster_named(ChannelConfig::default(), &name).await;
    let publisher = super::cluster(ChannelConfig::default()).await;
    // Enough channels that every node serves some.
    let sent: Vec<Vec<Event>> = (0..6).map(|_| channel_events("ckill")).collect();
    let subs = subscribe_all(&broker, &sent).await;
    let mut targets = Vec::new();
    let mut ssub = 0;
    for node in &nodes {
        let conns = super::named(node, &name).await;
        assert!(
            conns.len() <= 1,
            "at most one subscriber connection per node: {conns:?}"
        );
        ssub += conns.iter().map(|c| c.ssub).sum::<u64>();
        targets.extend(conns.into_iter().map(|c| (node.clone(), c.id)));
    }
    assert_eq!(ssub, 6, "six sharded subscriptions across the nodes");

    read_through_a_kill(subs, publisher, &sent, || kill(targets)).await;
}
