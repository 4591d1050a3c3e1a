//! The slow-subscriber policy: a subscriber whose queue overflows stops receiving live messages,
//! drains its queue, refills from history after its last event, and gets one `gap` event for
//! what the history no longer holds. Others are not held up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stream_core::conformance::broker::{assert_quiet, numbered, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, Event, EventId, EventPublisher, EventSubscriber, EventType};
use stream_pubsub::{RedisBroker, redis};

const QUEUE: usize = 4;

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

fn config(history_max_len: usize) -> ChannelConfig {
    ChannelConfig {
        subscriber_queue: QUEUE,
        history_max_len,
        history_ttl: Duration::from_secs(60),
        ..ChannelConfig::default()
    }
}

/// Publishes `events` one by one while the subscriber reads nothing, then lets the pushes land.
async fn flood(broker: &RedisBroker, events: &mut [Event]) {
    for e in events.iter_mut() {
        e.id = broker.publish(e).await.expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn a_lagging_subscriber_is_refilled_from_history(broker: RedisBroker) {
    let ch = unique_channel("lag");
    let mut slow = broker.subscribe(&ch, None).await.expect("subscribe");
    let mut sent: Vec<Event> = (0..300).map(|n| numbered(&ch, n)).collect();
    flood(&broker, &mut sent).await;
    assert_eq!(ids(&take(&mut slow, 300).await), ids(&sent));
    assert_quiet(&mut slow).await;
    let live = broker.publish(&numbered(&ch, 300)).await.expect("publish");
    assert_eq!(take(&mut slow, 1).await[0].id, live, "live again after catching up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_lagging_subscriber_is_refilled_from_history() {
    a_lagging_subscriber_is_refilled_from_history(common::standalone(config(5000)).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lagging_subscriber_is_refilled_from_history() {
    a_lagging_subscriber_is_refilled_from_history(common::cluster(config(5000)).await).await;
}

/// With a short history (trimmed with `MAXLEN ~`, so it keeps at least `history_max_len`), the
/// subscriber gets its queued events, one `gap` whose `missed` is exactly what was trimmed, then
/// everything the history still holds. `before` events are published before it subscribes.
async fn events_lost_from_history_are_reported_with_one_gap<C>(broker: RedisBroker, admin: &mut C, before: usize)
where
    C: redis::aio::ConnectionLike + Send,
{
    let ch = unique_channel("gap");
    let mut sent: Vec<Event> = (0..before + 600).map(|n| numbered(&ch, n)).collect();
    let history = format!("{}{{{ch}}}:h", broker.config().key_prefix);
    flood(&broker, &mut sent[..before]).await;
    let kept_before = xlen(admin, &history).await;
    let mut slow = broker.subscribe(&ch, None).await.expect("subscribe");
    if kept_before < before {
        let gap = take(&mut slow, 1).await.remove(0);
        assert_eq!(gap.kind, EventType::Gap, "a new subscriber is told what history lost");
        assert_eq!(gap.payload["missed"], before - kept_before);
    }
    let replay = take(&mut slow, kept_before).await;
    assert_eq!(
        ids(&replay),
        ids(&sent[before - kept_before..before]),
        "a new subscriber gets what history holds"
    );
    flood(&broker, &mut sent[before..]).await;
    let kept = xlen(admin, &history).await;
    assert!(
        (10..600 - QUEUE).contains(&kept),
        "history trimmed to about 10, kept {kept}"
    );

    let queued = take(&mut slow, QUEUE).await;
    assert_eq!(
        ids(&queued),
        ids(&sent[before..before + QUEUE]),
        "the queued events come first"
    );
    let gap = take(&mut slow, 1).await.remove(0);
    assert_eq!(gap.kind, EventType::Gap);
    let missed = 600 - QUEUE - kept;
    assert_eq!(
        gap.payload["missed"], missed,
        "missed counts exactly the trimmed events"
    );
    assert!(gap.payload["reason"].is_string());
    let rest = take(&mut slow, kept).await;
    assert_eq!(ids(&rest), ids(&sent[before + QUEUE + missed..]));
    assert_quiet(&mut slow).await;
}

async fn xlen<C: redis::aio::ConnectionLike + Send>(admin: &mut C, key: &str) -> usize {
    redis::cmd("XLEN").arg(key).query_async(admin).await.expect("XLEN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_events_lost_from_history_are_reported_with_one_gap() {
    let mut admin = common::admin(&common::redis_url()).await;
    for before in [0, 150] {
        let broker = common::standalone(config(10)).await;
        events_lost_from_history_are_reported_with_one_gap(broker, &mut admin, before).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_events_lost_from_history_are_reported_with_one_gap() {
    let mut admin = common::cluster_admin().await;
    for before in [0, 150] {
        let broker = common::cluster(config(10)).await;
        events_lost_from_history_are_reported_with_one_gap(broker, &mut admin, before).await;
    }
}

/// A stalled subscriber holds up neither the publisher nor a fast subscriber of the same channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_does_not_hold_up_the_others() {
    let broker = Arc::new(common::standalone(config(5000)).await);
    let ch = unique_channel("stall");
    let mut stalled = broker.subscribe(&ch, None).await.expect("subscribe");
    let mut fast = broker.subscribe(&ch, None).await.expect("subscribe");
    let mut sent: Vec<Event> = (0..500).map(|n| numbered(&ch, n)).collect();
    let publisher = broker.clone();
    let task = tokio::spawn(async move {
        for e in &mut sent {
            e.id = publisher.publish(e).await.expect("publish");
        }
        sent
    });
    let got = take(&mut fast, 500).await;
    let sent = task.await.expect("publisher");
    assert_eq!(ids(&got), ids(&sent));
    // The stalled one still gets everything once it reads.
    assert_eq!(ids(&take(&mut stalled, 500).await), ids(&sent));
}
