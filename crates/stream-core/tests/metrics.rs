//! The pipeline's metrics across streams' lives, read from `metrics-util`'s debugging recorder:
//! opens by answer (200, 204, 429), events published and delivered, duplicates dropped on a
//! resume, a gap notice, the open-streams gauge, and a close for each reason (done, client gone,
//! idle, lease lost, producer lost, shutdown); then the same for AI SDK streams (and a close for
//! an error).
//!
//! The recorder is global, so this binary holds one test that runs everything in order, on a
//! current-thread runtime with paused time (the idle timeout and the lease refresh come at once).

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use futures_util::StreamExt;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::{Map, json};
use stream_core::ai_sdk::ui_message_stream;
use stream_core::metrics as m;
use stream_core::sse::{SseBody, SseReply, SseResponse};
use stream_core::{
    CancellationToken, ChannelConfig, ChannelId, Event, EventId, EventPublisher, EventType, StreamLeaseConfig,
    Streaming, UserId,
};

/// The recorded values so far. A debugging recorder's snapshot takes what was recorded since the
/// last one (counters and gauges as deltas, histogram values), so this adds them up.
#[derive(Default)]
struct Totals {
    /// (name, sorted labels) -> counter total or gauge value.
    values: HashMap<(String, Vec<(String, String)>), f64>,
    histograms: HashMap<String, usize>,
}

impl Totals {
    fn take(&mut self, snap: &Snapshotter) {
        for (key, _, _, value) in snap.snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            let name = key.name().to_owned();
            match value {
                DebugValue::Counter(n) => *self.values.entry((name, labels)).or_default() += n as f64,
                DebugValue::Gauge(g) => *self.values.entry((name, labels)).or_default() += g.into_inner(),
                DebugValue::Histogram(v) => *self.histograms.entry(name).or_default() += v.len(),
            }
        }
    }
}

/// A counter's total or a gauge's value (0 when never recorded) for `name` with exactly `labels`.
fn value(totals: &RefCell<Totals>, snap: &Snapshotter, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut totals = totals.borrow_mut();
    totals.take(snap);
    let mut labels: Vec<(String, String)> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    labels.sort();
    totals.values.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

fn body(reply: SseReply) -> SseBody {
    match reply {
        SseReply::Stream(body) => body,
        SseReply::Finished => panic!("expected a stream"),
    }
}

/// Reads a body to its end; returns its frames, each ending with its blank line.
async fn drain(body: SseBody) -> Vec<String> {
    stream_core::conformance::frames(body)
        .map(|frame| String::from_utf8(frame.to_vec()).unwrap())
        .collect()
        .await
}

async fn publish(streaming: &Streaming, channel: &ChannelId, n: usize) -> Vec<EventId> {
    let mut ids = Vec::new();
    for i in 0..n {
        let mut payload = Map::new();
        payload.insert("n".into(), json!(i));
        ids.push(streaming.publish(channel, EventType::Data, payload).await.unwrap());
    }
    ids
}

async fn done(streaming: &Streaming, channel: &ChannelId) -> EventId {
    let mut payload = Map::new();
    payload.insert("success".into(), json!(true));
    streaming.publish(channel, EventType::Done, payload).await.unwrap()
}

#[test]
fn the_pipeline_counts_a_streams_life() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    recorder.install().expect("the only recorder of this binary");
    m::describe();
    let totals = RefCell::new(Totals::default());
    let counter = |name: &str, labels: &[(&str, &str)]| value(&totals, &snap, name, labels) as u64;
    let gauge = |name: &str| value(&totals, &snap, name, &[]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let streaming = Streaming::in_memory(
            ChannelConfig {
                max_idle_time: Duration::from_secs(60),
                history_max_len: 3,
                ..ChannelConfig::default()
            },
            StreamLeaseConfig {
                limit: 1,
                ttl_seconds: 3,
                ..StreamLeaseConfig::default()
            },
        );
        let alice = UserId::new("alice").unwrap();

        // A whole stream under a lease: 2 events and done, delivered; closed for `done`.
        let ch = ChannelId::generate();
        publish(&streaming, &ch, 2).await;
        let done_id = done(&streaming, &ch).await;
        let reply = SseResponse::channel(&streaming, ch.clone())
            .lease(alice.clone())
            .reply()
            .await
            .unwrap();
        assert_eq!(gauge(m::OPEN_STREAMS), 1.0);
        assert_eq!(drain(body(reply)).await.len(), 3);
        totals.borrow_mut().take(&snap);
        assert_eq!(totals.borrow().histograms.get(m::PUBLISH_TO_DELIVER), Some(&3));
        assert_eq!(counter(m::EVENTS_PUBLISHED, &[(m::BACKEND, "memory")]), 3);
        assert_eq!(counter(m::EVENTS_DELIVERED, &[]), 3);
        assert_eq!(counter(m::OPENS, &[(m::ANSWER, "200")]), 1);
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "done")]), 1);
        assert_eq!(gauge(m::OPEN_STREAMS), 0.0);

        // A reconnect after done: 204.
        let reply = SseResponse::channel(&streaming, ch.clone())
            .resume(Some(done_id))
            .reply()
            .await
            .unwrap();
        assert!(matches!(reply, SseReply::Finished));
        assert_eq!(counter(m::OPENS, &[(m::ANSWER, "204")]), 1);

        // A source that repeats an event: the repeat is dropped as a duplicate.
        let ch = ChannelId::generate();
        let mut first = Event::new(ch.clone(), EventType::Data, Map::new()).unwrap();
        first.id = EventId::from_parts(1, 1);
        let mut second = first.clone();
        second.id = EventId::from_parts(1, 2);
        let repeated = futures_util::stream::iter([first.clone(), second, first].map(Ok::<_, Infallible>));
        let frames = drain(body(SseResponse::direct(&streaming, repeated).reply().await.unwrap())).await;
        assert_eq!(frames.len(), 2);
        assert_eq!(counter(m::DUPLICATES_DROPPED, &[]), 1);
        assert_eq!(
            counter(m::CLOSES, &[(m::REASON, "done")]),
            2,
            "a direct stream that ends"
        );

        // A resume inside the history.
        let ids = publish(&streaming, &ch, 3).await;
        let resumed = body(
            SseResponse::channel(&streaming, ch.clone())
                .resume(Some(ids[1]))
                .reply()
                .await
                .unwrap(),
        );
        // The user's one lease is free (its release on close runs on a task)...
        tokio::time::sleep(Duration::from_millis(10)).await;
        // ...so a stream under it holds it...
        let held = body(
            SseResponse::channel(&streaming, ch.clone())
                .lease(alice.clone())
                .reply()
                .await
                .unwrap(),
        );
        // ...so another is refused: 429.
        let refused = SseResponse::channel(&streaming, ch.clone())
            .lease(alice.clone())
            .reply()
            .await;
        assert_eq!(refused.unwrap_err().status(), 429);
        assert_eq!(counter(m::OPENS, &[(m::ANSWER, "429")]), 1);
        assert_eq!(gauge(m::OPEN_STREAMS), 2.0);
        // The clients go: closed for `client_gone`, and the lease is released.
        drop((resumed, held));
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "client_gone")]), 2);
        assert_eq!(gauge(m::OPEN_STREAMS), 0.0);

        // A resume from before what the history keeps (3 events): a gap notice.
        let ch = ChannelId::generate();
        let ids = publish(&streaming, &ch, 6).await;
        done(&streaming, &ch).await;
        let frames = drain(body(
            SseResponse::channel(&streaming, ch.clone())
                .resume(Some(ids[0]))
                .reply()
                .await
                .unwrap(),
        ))
        .await;
        assert!(frames[0].contains(r#""type":"gap""#), "{frames:?}");
        assert_eq!(counter(m::GAPS, &[]), 1);

        // Idle: no event for max_idle_time.
        let ch = ChannelId::generate();
        let idle = body(SseResponse::channel(&streaming, ch.clone()).reply().await.unwrap());
        drain(idle).await;
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "idle")]), 1);

        // Shutdown.
        let token = CancellationToken::new();
        let stopping = body(
            SseResponse::channel(&streaming, ch.clone())
                .shutdown(token.clone())
                .reply()
                .await
                .unwrap(),
        );
        token.cancel();
        drain(stopping).await;
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "shutdown")]), 1);

        tokio::time::sleep(Duration::from_millis(10)).await;
        // Lease lost: the lease is released behind the stream's back; the next refresh finds
        // it gone.
        let leased = body(
            SseResponse::channel(&streaming, ch.clone())
                .lease(alice.clone())
                .reply()
                .await
                .unwrap(),
        );
        for lease in streaming.leases.leases(&alice).await.unwrap() {
            streaming.leases.release(&alice, &lease.lease_id).await.unwrap();
        }
        let frames = drain(leased).await;
        assert!(frames.last().unwrap().contains("lease_expired"), "{frames:?}");
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "lease_lost")]), 1);

        // Producer lost: the channel ends with the broker's error and done.
        let ch = ChannelId::generate();
        publish(&streaming, &ch, 1).await;
        let lost = stream_core::replay::producer_lost_events(&ch);
        streaming.publisher.publish_batch(&lost).await.unwrap();
        drain(body(
            SseResponse::channel(&streaming, ch.clone()).reply().await.unwrap(),
        ))
        .await;
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "producer_lost")]), 1);
        assert_eq!(gauge(m::OPEN_STREAMS), 0.0);

        // AI SDK streams count as streams: opened (200), their event frames delivered (not the
        // events they skip), and closed by reason.
        let ch = ChannelId::generate();
        let delivered = counter(m::EVENTS_DELIVERED, &[]);
        let opens = counter(m::OPENS, &[(m::ANSWER, "200")]);
        let reply = numbered([
            Event::data(ch.clone(), "token", "Hel").unwrap(),
            Event::new(ch.clone(), EventType::Progress, Map::new()).unwrap(),
            Event::data(ch.clone(), "token", "lo").unwrap(),
            Event::done(ch.clone(), true, Map::new()).unwrap(),
        ]);
        let chat = ui_message_stream(futures_util::stream::iter(reply.map(Ok::<_, Infallible>)), "m");
        assert_eq!(gauge(m::OPEN_STREAMS), 1.0);
        let text: String = chat
            .map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap())
            .collect()
            .await;
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
        assert_eq!(counter(m::EVENTS_DELIVERED, &[]), delivered + 3, "two tokens and done");
        assert_eq!(counter(m::OPENS, &[(m::ANSWER, "200")]), opens + 1);
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "done")]), 4);
        assert_eq!(gauge(m::OPEN_STREAMS), 0.0);

        // The client goes mid-reply.
        let [token] = numbered([Event::data(ch.clone(), "token", "Hel").unwrap()]);
        let events = futures_util::stream::iter([Ok::<_, Infallible>(token)]).chain(futures_util::stream::pending());
        let mut chat = ui_message_stream(events, "m");
        chat.next().await.expect("the first token's frames").unwrap();
        drop(chat);
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "client_gone")]), 3);

        // The subscription breaks.
        let [token] = numbered([Event::data(ch.clone(), "token", "Hel").unwrap()]);
        let events = futures_util::stream::iter([Ok(token), Err("broken")]);
        ui_message_stream(events, "m").collect::<Vec<_>>().await;
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "error")]), 1);

        // The producer died: its error and done.
        let lost = numbered(stream_core::replay::producer_lost_events(&ch));
        ui_message_stream(futures_util::stream::iter(lost.map(Ok::<_, Infallible>)), "m")
            .collect::<Vec<_>>()
            .await;
        assert_eq!(counter(m::CLOSES, &[(m::REASON, "producer_lost")]), 2);
        assert_eq!(gauge(m::OPEN_STREAMS), 0.0);
    });
}

/// `events` with ids in order, timed now (as a broker gives them).
fn numbered<const N: usize>(events: [Event; N]) -> [Event; N] {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut seq = 0;
    events.map(|mut event| {
        seq += 1;
        event.id = EventId::from_parts(now_ms, seq);
        event
    })
}
