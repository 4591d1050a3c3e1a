//! The publisher/subscriber suite.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, json};

use super::{WAIT, unique_channel};
use crate::event::{Event, EventId, EventType};
use crate::ids::ChannelId;
use crate::publish::EventPublisher;
use crate::subscribe::{EventSubscriber, Subscription};

/// A `log` event numbered `n`.
pub fn numbered(channel: &ChannelId, n: usize) -> Event {
    let mut payload = Map::new();
    payload.insert("message".into(), json!(format!("event {n}")));
    payload.insert("n".into(), json!(n));
    Event::new(channel.clone(), EventType::Log, payload).expect("no reserved keys")
}

/// Reads exactly `n` events, failing on an error, an early end, or a [`WAIT`] timeout.
pub async fn take(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("subscription failed after {} events: {e}", out.len()),
            Ok(None) => panic!("subscription ended after {} of {n} events", out.len()),
            Err(_) => panic!("timed out after {} of {n} events", out.len()),
        }
    }
    out
}

/// Asserts that the subscription ends (after `done`) within [`WAIT`].
pub async fn assert_ends(sub: &mut Subscription) {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(None) => {}
        Ok(Some(item)) => panic!("expected the end of the subscription, got {item:?}"),
        Err(_) => panic!("subscription did not end"),
    }
}

/// Asserts that nothing arrives for a short while.
pub async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
        panic!("expected no event, got {item:?}");
    }
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// Runs every check.
pub async fn run(publisher: Arc<dyn EventPublisher>, subscriber: Arc<dyn EventSubscriber>) {
    late_subscriber_gets_history(&*publisher, &*subscriber).await;
    live_events_arrive_in_order(publisher.clone(), &*subscriber).await;
    resume_after_an_id(&*publisher, &*subscriber).await;
    replay_after_done(&*publisher, &*subscriber).await;
    channels_are_isolated(&*publisher, &*subscriber).await;
    batches_keep_order(&*publisher, &*subscriber).await;
    many_subscribers_all_receive(publisher.clone(), subscriber.clone()).await;
    subscribe_racing_publish_loses_nothing(publisher, &*subscriber).await;
}

/// Events published before anyone subscribed are replayed to the first subscriber.
pub async fn late_subscriber_gets_history(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("late");
    let sent: Vec<Event> = (0..5).map(|n| numbered(&ch, n)).collect();
    for e in &sent {
        p.publish(e).await.expect("publish");
    }
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    assert!(!sub.is_finished());
    let got = take(&mut sub, 5).await;
    assert_eq!(ids(&got), ids(&sent));
    assert_eq!(got[3].payload["n"], json!(3));
    assert_eq!(got[3].kind, EventType::Log);
    assert_quiet(&mut sub).await;
}

/// Live events arrive in publish order.
pub async fn live_events_arrive_in_order(p: Arc<dyn EventPublisher>, s: &dyn EventSubscriber) {
    let ch = unique_channel("live");
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    let sent: Vec<Event> = (0..20).map(|n| numbered(&ch, n)).collect();
    let to_send = sent.clone();
    let task = tokio::spawn(async move {
        for e in &to_send {
            p.publish(e).await.expect("publish");
        }
    });
    let got = take(&mut sub, 20).await;
    task.await.expect("publisher task");
    assert_eq!(ids(&got), ids(&sent));
}

/// A subscription after an id starts right after it.
pub async fn resume_after_an_id(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("resume");
    let sent: Vec<Event> = (0..10).map(|n| numbered(&ch, n)).collect();
    p.publish_batch(&sent).await.expect("publish");
    let mut sub = s.subscribe(&ch, Some(sent[4].id)).await.expect("subscribe");
    let got = take(&mut sub, 5).await;
    assert_eq!(ids(&got), ids(&sent[5..]));
    assert_quiet(&mut sub).await;
    let more = numbered(&ch, 10);
    p.publish(&more).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, more.id);
}

/// After `done`: a new subscriber gets the replay and `done`, then the end; one resuming at
/// `done` gets a finished subscription.
pub async fn replay_after_done(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("done");
    let mut sent: Vec<Event> = (0..3).map(|n| numbered(&ch, n)).collect();
    sent.push(Event::done(ch.clone(), true, Map::new()).expect("done"));
    for e in &sent {
        p.publish(e).await.expect("publish");
    }
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    let got = take(&mut sub, 4).await;
    assert_eq!(ids(&got), ids(&sent));
    assert_eq!(got[3].kind, EventType::Done);
    assert_eq!(got[3].payload["success"], json!(true));
    assert_ends(&mut sub).await;

    let mut mid = s.subscribe(&ch, Some(sent[1].id)).await.expect("subscribe");
    assert_eq!(ids(&take(&mut mid, 2).await), ids(&sent[2..]));
    assert_ends(&mut mid).await;

    let fin = s.subscribe(&ch, Some(sent[3].id)).await.expect("subscribe");
    assert!(fin.is_finished(), "a subscription after done must be finished");
}

/// One channel's events never reach another's subscribers.
pub async fn channels_are_isolated(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let (a, b) = (unique_channel("iso-a"), unique_channel("iso-b"));
    let mut sub_b = s.subscribe(&b, None).await.expect("subscribe");
    p.publish(&numbered(&a, 0)).await.expect("publish");
    let only_b = numbered(&b, 1);
    p.publish(&only_b).await.expect("publish");
    let got = take(&mut sub_b, 1).await;
    assert_eq!(got[0].id, only_b.id);
    assert_eq!(got[0].channel_id, b);
    assert_quiet(&mut sub_b).await;
}

/// A batch is delivered in order.
pub async fn batches_keep_order(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("batch");
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    let sent: Vec<Event> = (0..10).map(|n| numbered(&ch, n)).collect();
    p.publish_batch(&sent).await.expect("publish batch");
    assert_eq!(ids(&take(&mut sub, 10).await), ids(&sent));
}

/// Fifty subscribers of one channel each get every event.
pub async fn many_subscribers_all_receive(p: Arc<dyn EventPublisher>, s: Arc<dyn EventSubscriber>) {
    let ch = unique_channel("fanout");
    let mut subs = Vec::new();
    for _ in 0..50 {
        subs.push(s.subscribe(&ch, None).await.expect("subscribe"));
    }
    let sent: Vec<Event> = (0..30).map(|n| numbered(&ch, n)).collect();
    for e in &sent {
        p.publish(e).await.expect("publish");
    }
    let want = ids(&sent);
    let readers = subs.into_iter().map(|mut sub| {
        let want = want.clone();
        tokio::spawn(async move { assert_eq!(ids(&take(&mut sub, 30).await), want) })
    });
    for r in readers.collect::<Vec<_>>() {
        r.await.expect("reader");
    }
}

/// Subscribing while a publisher is mid-flight yields every event once, in order.
pub async fn subscribe_racing_publish_loses_nothing(p: Arc<dyn EventPublisher>, s: &dyn EventSubscriber) {
    let ch = unique_channel("race");
    let sent: Vec<Event> = (0..200).map(|n| numbered(&ch, n)).collect();
    let to_send = sent.clone();
    let task = tokio::spawn(async move {
        for (n, e) in to_send.iter().enumerate() {
            p.publish(e).await.expect("publish");
            if n % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    let got = take(&mut sub, 200).await;
    task.await.expect("publisher task");
    assert_eq!(ids(&got), ids(&sent));
    assert_quiet(&mut sub).await;
}
