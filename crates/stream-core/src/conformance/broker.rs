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

/// Publishes `events` one by one and gives each the id the broker returned.
pub async fn publish_each(p: &dyn EventPublisher, events: &mut [Event]) {
    for e in events.iter_mut() {
        e.id = p.publish(e).await.expect("publish");
    }
}

/// Publishes `events` as one batch and gives each the id the broker returned.
pub async fn publish_all(p: &dyn EventPublisher, events: &mut [Event]) {
    let ids = p.publish_batch(events).await.expect("publish batch");
    assert_eq!(ids.len(), events.len(), "one id per event");
    for (e, id) in events.iter_mut().zip(ids) {
        e.id = id;
    }
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
    subscribe_racing_publish_loses_nothing(publisher.clone(), &*subscriber).await;
    concurrent_publishers_lose_nothing(publisher, subscriber).await;
}

/// Events published before anyone subscribed are replayed to the first subscriber.
pub async fn late_subscriber_gets_history(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("late");
    let mut sent: Vec<Event> = (0..5).map(|n| numbered(&ch, n)).collect();
    publish_each(p, &mut sent).await;
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
    let mut sent: Vec<Event> = (0..20).map(|n| numbered(&ch, n)).collect();
    let task = tokio::spawn(async move {
        publish_each(&*p, &mut sent).await;
        sent
    });
    let got = take(&mut sub, 20).await;
    let sent = task.await.expect("publisher task");
    assert_eq!(ids(&got), ids(&sent));
}

/// A subscription after an id starts right after it.
pub async fn resume_after_an_id(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("resume");
    let mut sent: Vec<Event> = (0..10).map(|n| numbered(&ch, n)).collect();
    publish_all(p, &mut sent).await;
    let mut sub = s.subscribe(&ch, Some(sent[4].id)).await.expect("subscribe");
    let got = take(&mut sub, 5).await;
    assert_eq!(ids(&got), ids(&sent[5..]));
    assert_quiet(&mut sub).await;
    let more = p.publish(&numbered(&ch, 10)).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, more);
}

/// After `done`: a new subscriber gets the replay and `done`, then the end; one resuming at
/// `done` gets a finished subscription.
pub async fn replay_after_done(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("done");
    let mut sent: Vec<Event> = (0..3).map(|n| numbered(&ch, n)).collect();
    sent.push(Event::done(ch.clone(), true, Map::new()).expect("done"));
    publish_each(p, &mut sent).await;
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
    let only_b = p.publish(&numbered(&b, 1)).await.expect("publish");
    let got = take(&mut sub_b, 1).await;
    assert_eq!(got[0].id, only_b);
    assert_eq!(got[0].channel_id, b);
    assert_quiet(&mut sub_b).await;
}

/// A batch is delivered in order.
pub async fn batches_keep_order(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("batch");
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    let mut sent: Vec<Event> = (0..10).map(|n| numbered(&ch, n)).collect();
    publish_all(p, &mut sent).await;
    assert_eq!(ids(&take(&mut sub, 10).await), ids(&sent));
}

/// Fifty subscribers of one channel each get every event.
pub async fn many_subscribers_all_receive(p: Arc<dyn EventPublisher>, s: Arc<dyn EventSubscriber>) {
    let ch = unique_channel("fanout");
    let mut subs = Vec::new();
    for _ in 0..50 {
        subs.push(s.subscribe(&ch, None).await.expect("subscribe"));
    }
    let mut sent: Vec<Event> = (0..30).map(|n| numbered(&ch, n)).collect();
    publish_each(&*p, &mut sent).await;
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
    let mut sent: Vec<Event> = (0..200).map(|n| numbered(&ch, n)).collect();
    let task = tokio::spawn(async move {
        for (n, e) in sent.iter_mut().enumerate() {
            e.id = p.publish(e).await.expect("publish");
            if n % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
        sent
    });
    tokio::time::sleep(Duration::from_millis(2)).await;
    let mut sub = s.subscribe(&ch, None).await.expect("subscribe");
    let got = take(&mut sub, 200).await;
    let sent = task.await.expect("publisher task");
    assert_eq!(ids(&got), ids(&sent));
    assert_quiet(&mut sub).await;
}

/// Reads until the subscription ends (after `done`), failing on an error or a [`WAIT`] timeout.
pub async fn take_to_end(sub: &mut Subscription) -> Vec<Event> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, sub.next()).await {
            Ok(Some(Ok(e))) => out.push(e),
            Ok(Some(Err(e))) => panic!("subscription failed after {} events: {e}", out.len()),
            Ok(None) => return out,
            Err(_) => panic!("timed out after {} events", out.len()),
        }
    }
}

/// Checks what a reader of [`concurrent_publishers_lose_nothing`] got: every `(writer, n)` once,
/// ids strictly increasing and equal to the ids the publishers were given, then `done`.
fn assert_every_event_once(got: &[Event], given: &[EventId], writers: &[(usize, usize)], who: &str) {
    let (done, events) = got.split_last().unwrap_or_else(|| panic!("{who}: got nothing"));
    assert_eq!(done.kind, EventType::Done, "{who}: the last event is done");
    assert!(
        got.windows(2).all(|w| w[0].id < w[1].id),
        "{who}: ids strictly increase"
    );
    let mut seen = std::collections::HashSet::new();
    for e in events {
        let key = (
            e.payload["writer"].as_u64().unwrap_or(u64::MAX),
            e.payload["n"].as_u64().unwrap_or(u64::MAX),
        );
        assert!(seen.insert(key), "{who}: {key:?} arrived twice");
    }
    let expected: usize = writers.iter().map(|(_, count)| count).sum();
    assert_eq!(events.len(), expected, "{who}: every event arrives");
    let mut got_ids: Vec<EventId> = events.iter().map(|e| e.id).collect();
    let mut given = given.to_vec();
    got_ids.sort();
    given.sort();
    assert_eq!(got_ids, given, "{who}: readers see the ids that emit returned");
}

/// Eight tasks share one emitter and emit 500 events each while four more emitters write to the
/// same channel: a live subscriber and a late one each get every event once, in strictly
/// increasing id order, with the ids `emit` returned.
pub async fn concurrent_publishers_lose_nothing(p: Arc<dyn EventPublisher>, s: Arc<dyn EventSubscriber>) {
    let ch = unique_channel("concurrent");
    let mut live = s.subscribe(&ch, None).await.expect("subscribe");
    let live_reader = tokio::spawn(async move { take_to_end(&mut live).await });
    let ctx = || crate::StreamContext::builder().channel_id(ch.clone()).build();
    let shared = Arc::new(ctx().bind(p.clone()));
    // (writer, events): writers 0-7 share one emitter, 8-11 have their own.
    let writers: Vec<(usize, usize)> = (0..8).map(|w| (w, 500)).chain((8..12).map(|w| (w, 200))).collect();
    let tasks: Vec<_> = writers
        .iter()
        .map(|&(writer, count)| {
            let emitter = if writer < 8 {
                shared.clone()
            } else {
                Arc::new(ctx().bind(p.clone()))
            };
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(count);
                for n in 0..count {
                    let mut payload = Map::new();
                    payload.insert("writer".into(), json!(writer));
                    payload.insert("n".into(), json!(n));
                    ids.push(emitter.emit(EventType::Log, payload).await.expect("emit"));
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                ids
            })
        })
        .collect();
    let mut given = Vec::new();
    for task in tasks {
        given.extend(task.await.expect("writer task"));
    }
    shared.complete(true, None, Map::new()).await.expect("complete");
    let got = tokio::time::timeout(WAIT * 3, live_reader)
        .await
        .expect("the live subscriber ends")
        .expect("reader task");
    assert_every_event_once(&got, &given, &writers, "live subscriber");
    let mut late = s.subscribe(&ch, None).await.expect("subscribe");
    let got = take_to_end(&mut late).await;
    assert_every_event_once(&got, &given, &writers, "late subscriber");
}

/// For a broker whose history keeps at most `history_max_len` events (at least 10, and at most
/// 100): 300 events and `done`, then a resume after the 6th starts with one `gap` whose `missed`
/// counts exactly the events the history no longer holds, then the rest in order, then `done`;
/// a subscriber from the start gets the same `gap` first.
pub async fn resume_older_than_history_starts_with_gap(p: &dyn EventPublisher, s: &dyn EventSubscriber) {
    let ch = unique_channel("gap");
    let mut sent: Vec<Event> = (0..300).map(|n| numbered(&ch, n)).collect();
    sent.push(Event::done(ch.clone(), true, Map::new()).expect("done"));
    publish_all(p, &mut sent).await;
    for (after, who) in [(Some(sent[5].id), "resume after the 6th"), (None, "from the start")] {
        let mut sub = s.subscribe(&ch, after).await.expect("subscribe");
        let got = take_to_end(&mut sub).await;
        let (gap, rest) = got.split_first().unwrap_or_else(|| panic!("{who}: got nothing"));
        assert_eq!(
            gap.kind,
            EventType::Gap,
            "{who}: the first event is a gap notice: {gap:?}"
        );
        assert!(gap.payload["reason"].is_string(), "{who}: the gap says why");
        let missed = gap.payload["missed"]
            .as_u64()
            .unwrap_or_else(|| panic!("{who}: missed is known"));
        let skipped = if after.is_some() { 6 } else { 0 };
        assert!(rest.len() < 200, "{who}: the history was trimmed ({} kept)", rest.len());
        assert_eq!(
            missed as usize + rest.len(),
            sent.len() - skipped,
            "{who}: missed + delivered = all"
        );
        assert_eq!(
            ids(rest),
            ids(&sent[sent.len() - rest.len()..]),
            "{who}: the kept tail in order"
        );
        assert_eq!(rest.last().map(|e| e.kind.clone()), Some(EventType::Done));
    }
}

/// For a broker whose subscriptions check producers every 100 ms or less
/// ([`ChannelConfig::heartbeat_interval`](crate::ChannelConfig::heartbeat_interval)):
/// - a channel whose producer stops sending heartbeats ends, for each of two subscribers, with
///   exactly one `error` (`fatal`, `producer_lost`) and one `done` (`success: false`), both kept in
///   the history, so that a resume after that `done` is finished;
/// - an emitter that is alive but quiet, or that was dropped on purpose, ends nothing.
pub async fn producer_liveness(p: Arc<dyn EventPublisher>, s: &dyn EventSubscriber) {
    // A producer that dies: its heartbeats stop and its record expires.
    let ch = unique_channel("lost");
    let mut subs = vec![s.subscribe(&ch, None).await.expect("subscribe")];
    let first = p.publish(&numbered(&ch, 0)).await.expect("publish");
    p.heartbeat(&ch, Some(Duration::from_millis(300)))
        .await
        .expect("heartbeat");
    subs.push(s.subscribe(&ch, None).await.expect("subscribe"));
    for sub in &mut subs {
        let got = take_to_end(sub).await;
        let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["log", "error", "done"],
            "the stream ends with producer_lost: {got:?}"
        );
        assert_eq!(got[0].id, first);
        assert_eq!(got[1].payload["reason"], json!("producer_lost"));
        assert_eq!(got[1].payload["fatal"], json!(true));
        assert_eq!(got[2].payload["success"], json!(false));
        assert_eq!(got[2].payload["reason"], json!("producer_lost"));
    }
    let mut replay = s.subscribe(&ch, None).await.expect("subscribe");
    let kept = take_to_end(&mut replay).await;
    assert_eq!(
        kept.len(),
        3,
        "one error and one done are kept, whoever noticed: {kept:?}"
    );
    let fin = s.subscribe(&ch, Some(kept[2].id)).await.expect("subscribe");
    assert!(fin.is_finished(), "a reconnect after producer_lost's done is finished");

    // An emitter that is alive but quiet keeps its channel open; one dropped on purpose withdraws.
    let quiet = unique_channel("quiet");
    let emitter = crate::StreamContext::builder()
        .channel_id(quiet.clone())
        .build()
        .bind(p.clone())
        .with_heartbeat(Some(Duration::from_millis(100)));
    let mut sub = s.subscribe(&quiet, None).await.expect("subscribe");
    emitter.log("working", crate::LogLevel::Info).await.expect("emit");
    assert_eq!(take(&mut sub, 1).await[0].kind, EventType::Log);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_quiet(&mut sub).await;
    drop(emitter);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_quiet(&mut sub).await;
}

/// A client that resumes at the newest event of an owned, live channel has missed nothing: no
/// `gap`, and the next event arrives once.
pub async fn resume_at_the_newest_event_is_not_a_gap(
    p: &dyn EventPublisher,
    s: &dyn EventSubscriber,
    r: &dyn crate::ChannelRegistry,
) {
    let ch = unique_channel("caught-up");
    let owner = crate::ids::UserId::new("owner").expect("user id");
    r.register(&ch, &owner, Duration::from_secs(60))
        .await
        .expect("register");
    let mut sent: Vec<Event> = (0..3).map(|n| numbered(&ch, n)).collect();
    publish_each(p, &mut sent).await;
    let mut sub = s.subscribe(&ch, Some(sent[2].id)).await.expect("subscribe");
    assert_quiet(&mut sub).await;
    let next = p.publish(&numbered(&ch, 3)).await.expect("publish");
    let got = take(&mut sub, 1).await;
    assert_eq!(got[0].id, next, "the next event, and no gap before it: {got:?}");
    assert_quiet(&mut sub).await;
}
