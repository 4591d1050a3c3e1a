//! Encode once: delivering one event to 1,000 local subscribers costs O(1) allocations, not one
//! per subscriber, and every subscriber writes the very same frame bytes.

use std::alloc::System;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::Map;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use stream_core::memory::MemoryBroker;
use stream_core::sse::{SseOptions, SseReply, SseResponse};
use stream_core::{
    ChannelConfig, ChannelId, Event, EventPublisher, EventSubscriber, EventType, Streaming, Subscription,
};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SUBSCRIBERS: usize = 1000;

fn event(channel: &ChannelId) -> Event {
    let mut payload = Map::new();
    payload.insert(
        "message".into(),
        "deploying step 3 of the pipeline to production".into(),
    );
    Event::new(channel.clone(), EventType::Log, payload).unwrap()
}

#[test]
fn one_event_to_a_thousand_subscribers_is_encoded_once() {
    // One thread: every allocation counted below is this test's.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let broker = MemoryBroker::new(ChannelConfig {
            heartbeat_interval: None,
            ..ChannelConfig::default()
        });
        let channel = ChannelId::generate();
        let mut subs: Vec<Subscription> = Vec::with_capacity(SUBSCRIBERS);
        for _ in 0..SUBSCRIBERS {
            subs.push(broker.subscribe(&channel, None).await.unwrap());
        }
        // Warm up: the first event sets up what each subscription keeps for good.
        broker.publish(&event(&channel)).await.unwrap();
        for sub in &mut subs {
            sub.next_shared().await.unwrap().unwrap();
        }
        let mut frames = Vec::with_capacity(SUBSCRIBERS);
        let region = Region::new(GLOBAL);
        broker.publish(&event(&channel)).await.unwrap();
        for sub in &mut subs {
            frames.push(sub.next_shared().await.unwrap().unwrap().frame().clone());
        }
        let stats = region.change();
        // The event, its JSON, its frame, the history entry and the frames vector: a handful,
        // whatever the number of subscribers.
        assert!(
            stats.allocations < 50,
            "{} allocations for one event to {SUBSCRIBERS} subscribers",
            stats.allocations
        );
        eprintln!(
            "one event to {SUBSCRIBERS} subscribers: {} allocations, {} bytes",
            stats.allocations, stats.bytes_allocated
        );
        let first = frames[0].as_ptr();
        assert!(frames.iter().all(|f| f.as_ptr() == first), "one frame, shared");
    });
}

#[test]
fn every_sse_body_writes_the_same_frame_bytes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let broker = Arc::new(MemoryBroker::default());
        let streaming = Streaming::builder().broker(broker.clone()).build();
        let channel = ChannelId::generate();
        let mut bodies = Vec::new();
        for _ in 0..3 {
            let options = SseOptions::default();
            let SseReply::Stream(body) = SseResponse::channel(&streaming, channel.clone())
                .options(options)
                .await
                .unwrap()
            else {
                panic!("a stream");
            };
            bodies.push(body);
        }
        broker.publish(&event(&channel)).await.unwrap();
        let mut pointers = Vec::new();
        for body in &mut bodies {
            let frame = body.next().await.unwrap().unwrap();
            assert!(frame.starts_with(b"id: "), "{frame:?}");
            pointers.push(frame.as_ptr());
        }
        assert!(
            pointers.windows(2).all(|w| w[0] == w[1]),
            "the very same bytes: {pointers:?}"
        );
    });
}
