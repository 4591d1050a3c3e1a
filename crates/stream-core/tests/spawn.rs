//! Producers spawned detached from their request (`SseResponse::spawn`), on the memory backends:
//! they outlive their client, hold one lease until they end, stop at their maximum run time, and
//! stop on a cancel request with their future dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use stream_core::sse::{SseReply, SseResponse};
use stream_core::{
    CancelOutcome, ChannelId, Emitter, EventPublisher, EventSubscriber, EventType, SharedEvent, StreamContext,
    StreamLeaseConfig, Streaming, UserId,
};

fn streaming(limit: usize) -> Streaming {
    Streaming::in_memory(
        stream_core::ChannelConfig::default(),
        StreamLeaseConfig {
            limit,
            ..StreamLeaseConfig::default()
        },
    )
}

/// A body's frames, one whole frame per item.
type Frames = std::pin::Pin<Box<dyn futures_util::Stream<Item = bytes::Bytes> + Send>>;

fn body(reply: SseReply) -> Frames {
    match reply {
        SseReply::Stream(body) => Box::pin(stream_core::conformance::frames(body)),
        SseReply::Finished => panic!("expected a stream"),
    }
}

/// The JSON of the next event frame of `body` (pings skipped).
async fn next_json(body: &mut Frames) -> Value {
    loop {
        let frame = body.next().await.expect("a frame");
        let text = std::str::from_utf8(&frame).unwrap();
        let data: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect::<Vec<_>>()
            .join("\n");
        let value: Value = serde_json::from_str(&data).unwrap();
        if value["type"] != "ping" {
            return value;
        }
    }
}

/// A producer that emits `count` tokens, one per `every`, and counts them.
fn tokens(
    count: usize,
    every: Duration,
    sent: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
) -> impl FnOnce(Arc<Emitter>) -> futures_util::future::BoxFuture<'static, Result<(), String>> {
    move |emitter| {
        Box::pin(async move {
            // Set when the future is dropped, finished or not.
            struct OnDrop(Arc<AtomicBool>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = OnDrop(dropped);
            for n in 0..count {
                let mut payload = Map::new();
                payload.insert("token".into(), json!(format!("t{n} ")));
                emitter.data(payload).await.map_err(|e| e.to_string())?;
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(every).await;
            }
            Ok(())
        })
    }
}

async fn all_events(streaming: &Streaming, channel: &ChannelId) -> Vec<SharedEvent> {
    let mut sub = streaming.subscriber.subscribe(channel, None).await.unwrap();
    let mut events = Vec::new();
    while let Some(event) = sub.next_shared().await {
        let event = event.unwrap();
        let done = *event.kind() == EventType::Done;
        events.push(event);
        if done {
            break;
        }
    }
    events
}

#[tokio::test]
async fn a_spawned_producer_outlives_its_client_and_a_resume_gets_the_rest() {
    let streaming = streaming(5);
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let (sent, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let mut answer = body(
        SseResponse::spawn(
            &streaming,
            ctx,
            tokens(10, Duration::from_millis(20), sent.clone(), dropped.clone()),
        )
        .reply()
        .await
        .unwrap(),
    );
    let mut last = None;
    for n in 0..3 {
        let event = next_json(&mut answer).await;
        assert_eq!(event["token"], format!("t{n} "));
        last = Some(event["id"].as_str().unwrap().to_owned());
    }
    // The only client goes.
    drop(answer);
    let events = all_events(&streaming, &channel).await;
    assert_eq!(sent.load(Ordering::SeqCst), 10, "the producer went on");
    assert_eq!(events.len(), 11, "10 tokens and done");
    assert_eq!(events[10].event().payload["success"], true, "done for it");
    assert!(dropped.load(Ordering::SeqCst));

    // A client resuming after the third token gets the rest, no duplicate.
    let resumed = body(
        SseResponse::channel(&streaming, channel.clone())
            .resume(Some(last.unwrap().parse().unwrap()))
            .reply()
            .await
            .unwrap(),
    );
    let frames: Vec<Value> = resumed
        .filter_map(|f| async move {
            let text = String::from_utf8(f.to_vec()).unwrap();
            text.strip_prefix("id: ").map(|_| {
                let data = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
                serde_json::from_str(data).unwrap()
            })
        })
        .collect()
        .await;
    let tokens: Vec<&str> = frames.iter().filter_map(|f| f["token"].as_str()).collect();
    assert_eq!(tokens, ["t3 ", "t4 ", "t5 ", "t6 ", "t7 ", "t8 ", "t9 "]);
    assert_eq!(frames.last().unwrap()["type"], "done");
}

#[tokio::test]
async fn the_producer_holds_one_lease_until_it_ends_and_a_429_starts_nothing() {
    let streaming = streaming(1);
    let user = UserId::new("alice").unwrap();
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let (sent, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let answer = SseResponse::spawn(
        &streaming,
        ctx,
        tokens(5, Duration::from_millis(30), sent.clone(), dropped.clone()),
    )
    .lease(user.clone())
    .reply()
    .await
    .unwrap();
    drop(answer);
    assert_eq!(
        streaming.leases.active_count(&user).await.unwrap(),
        1,
        "held while it runs"
    );

    // At the cap: 429, and the second producer never runs.
    let started = Arc::new(AtomicBool::new(false));
    let refused = SseResponse::spawn(&streaming, StreamContext::builder().build(), {
        let started = started.clone();
        move |_emitter| async move {
            started.store(true, Ordering::SeqCst);
            Ok::<(), String>(())
        }
    })
    .lease(user.clone())
    .reply()
    .await;
    assert_eq!(refused.unwrap_err().status(), 429);

    all_events(&streaming, &channel).await;
    // Freed once the producer's task has ended (it emits done, then drops the lease).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while streaming.leases.active_count(&user).await.unwrap() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the lease was not freed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!started.load(Ordering::SeqCst), "a 429 starts nothing");
}

#[tokio::test(start_paused = true)]
async fn a_producer_past_its_maximum_run_time_ends_with_timeout() {
    let streaming = streaming(5);
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let (sent, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let answer = SseResponse::spawn(
        &streaming,
        ctx,
        tokens(1000, Duration::from_secs(1), sent.clone(), dropped.clone()),
    )
    .max_run_time(Duration::from_secs(30))
    .reply()
    .await
    .unwrap();
    drop(answer);
    let events = all_events(&streaming, &channel).await;
    let done = events.last().unwrap().event();
    assert_eq!(done.payload["success"], false);
    assert_eq!(done.payload["reason"], "timeout");
    assert!(
        (29..=31).contains(&sent.load(Ordering::SeqCst)),
        "{}",
        sent.load(Ordering::SeqCst)
    );
    assert!(dropped.load(Ordering::SeqCst), "the producer's future was dropped");
}

#[tokio::test]
async fn a_cancel_drops_the_producer_and_ends_the_channel_once() {
    let streaming = streaming(5);
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let (sent, dropped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let mut answer = body(
        SseResponse::spawn(
            &streaming,
            ctx,
            tokens(1000, Duration::from_millis(20), sent.clone(), dropped.clone()),
        )
        .reply()
        .await
        .unwrap(),
    );
    next_json(&mut answer).await;
    let asked = tokio::time::Instant::now();
    assert_eq!(
        streaming.publisher.request_cancel(&channel).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        streaming.publisher.request_cancel(&channel).await.unwrap(),
        CancelOutcome::Requested,
        "idempotent"
    );
    let done = loop {
        let event = next_json(&mut answer).await;
        if event["type"] == "done" {
            break event;
        }
    };
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "within 1 s: {:?}",
        asked.elapsed()
    );
    assert_eq!(done["success"], false);
    assert_eq!(done["cancelled"], true);
    assert!(dropped.load(Ordering::SeqCst), "the producer's future was dropped");
    let after = sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sent.load(Ordering::SeqCst), after, "nothing emitted after the cancel");
    // A cancel after done changes nothing.
    assert_eq!(
        streaming.publisher.request_cancel(&channel).await.unwrap(),
        CancelOutcome::AlreadyDone
    );
    let events = all_events(&streaming, &channel).await;
    assert_eq!(events.iter().filter(|e| *e.kind() == EventType::Done).count(), 1);
}
