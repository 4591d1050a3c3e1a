//! A producer spawned on one app instance (`SseResponse::spawn` over broker A) is cancelled from
//! another instance (broker B, its own connections to the same Redis): within 1 s its future is
//! dropped and the channel gets `done` with `"cancelled": true`, once. On a standalone server and
//! on the cluster.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, json};
use stream_core::sse::{SseReply, SseResponse};
use stream_core::{CancelOutcome, ChannelConfig, EventPublisher, EventSubscriber, EventType, StreamContext, Streaming};
use stream_pubsub::RedisBroker;

async fn cancel_from_another_instance(a: RedisBroker, b: RedisBroker) {
    let a = Arc::new(a);
    let streaming = Streaming::builder().broker(a.clone()).build();
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let dropped = Arc::new(AtomicBool::new(false));
    let reply = SseResponse::spawn(&streaming, ctx, {
        let dropped = dropped.clone();
        move |emitter| async move {
            struct OnDrop(Arc<AtomicBool>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = OnDrop(dropped);
            for n in 0.. {
                let mut payload = Map::new();
                payload.insert("token".into(), json!(n));
                emitter.data(payload).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), stream_core::EmitError>(())
        }
    })
    .reply()
    .await
    .expect("spawned");
    // No client: the answer is dropped at once; the producer goes on.
    assert!(matches!(reply, SseReply::Stream(_)));
    drop(reply);

    // Instance B follows the channel and, after a few tokens, cancels it.
    let mut sub = b.subscribe(&channel, None).await.expect("subscribe on B");
    for _ in 0..3 {
        sub.next_shared().await.expect("a token").expect("ok");
    }
    let asked = Instant::now();
    assert_eq!(b.request_cancel(&channel).await.unwrap(), CancelOutcome::Requested);
    let done = loop {
        let event = sub.next_shared().await.expect("an event").expect("ok");
        if *event.kind() == EventType::Done {
            break event;
        }
    };
    let took = asked.elapsed();
    eprintln!("cancel to done: {took:?}");
    assert!(took < Duration::from_secs(1), "within 1 s: {took:?}");
    let done = done.event();
    assert_eq!(done.payload["success"], false);
    assert_eq!(done.payload["cancelled"], true);
    assert!(dropped.load(Ordering::SeqCst), "the producer's future was dropped");
    // Idempotent, and nothing changes once done.
    assert_eq!(b.request_cancel(&channel).await.unwrap(), CancelOutcome::AlreadyDone);
    assert_eq!(a.request_cancel(&channel).await.unwrap(), CancelOutcome::AlreadyDone);
    assert!(b.cancel_requested(&channel).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_instance_stops_the_producer_within_a_second() {
    let a = common::standalone(ChannelConfig::default()).await;
    let b = common::standalone(ChannelConfig::default()).await;
    cancel_from_another_instance(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_another_instance_stops_the_producer_on_the_cluster() {
    let a = common::cluster(ChannelConfig::default()).await;
    let b = common::cluster(ChannelConfig::default()).await;
    cancel_from_another_instance(a, b).await;
}
