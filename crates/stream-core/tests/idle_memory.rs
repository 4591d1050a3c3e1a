//! Small idle streams: the bytes an idle SSE stream holds (subscription, replay, pipeline, and the
//! broker's share of its channel), counted by a counting allocator.

use std::alloc::System;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::task::noop_waker_ref;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use stream_core::memory::MemoryBroker;
use stream_core::sse::{SseBody, SseReply, SseResponse};
use stream_core::{ChannelConfig, ChannelId, Streaming};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const STREAMS: usize = 1000;

/// The counting allocator counts every thread: the measurements take turns.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn an_idle_memory_stream_is_small() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let streaming = Streaming::builder()
            .broker(MemoryBroker::new(ChannelConfig::default()))
            .build();
        let channels: Vec<ChannelId> = (0..STREAMS).map(|_| ChannelId::generate()).collect();
        let mut bodies: Vec<SseBody> = Vec::with_capacity(STREAMS);
        let region = Region::new(GLOBAL);
        for channel in &channels {
            let SseReply::Stream(mut body) = SseResponse::channel(&streaming, channel.clone()).await.unwrap() else {
                panic!("a new channel is not finished");
            };
            // Polled once, as a server does: every timer and wait is registered.
            let mut cx = Context::from_waker(noop_waker_ref());
            assert!(matches!(body.poll_next_unpin(&mut cx), Poll::Pending));
            bodies.push(body);
        }
        let stats = region.change();
        let per_stream = (stats.bytes_allocated - stats.bytes_deallocated) as f64 / STREAMS as f64;
        eprintln!(
            "idle memory stream: {per_stream:.0} bytes held per stream ({} allocations per stream)",
            (stats.allocations - stats.deallocations) / STREAMS
        );
        assert!(per_stream < 16.0 * 1024.0, "{per_stream:.0} bytes per idle stream");
    });
}

/// An idle channel of the in-memory broker, as the demo makes one for a deployment: its owner is
/// registered and it has a few events in its history, but nobody is subscribed. Nothing is
/// allocated for subscribers until one comes (the fan-out's queues are lazy).
#[test]
fn an_idle_memory_channel_is_small() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const CHANNELS: usize = 1000;
    const EVENTS: usize = 3;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let streaming = Streaming::builder()
            .broker(MemoryBroker::new(ChannelConfig::default()))
            .build();
        let owner = stream_core::UserId::new("owner").unwrap();
        let channels: Vec<ChannelId> = (0..CHANNELS).map(|_| ChannelId::generate()).collect();
        let registered = Region::new(GLOBAL);
        for channel in &channels {
            streaming
                .registry
                .register(channel, &owner, std::time::Duration::from_secs(3600))
                .await
                .unwrap();
        }
        let stats = registered.change();
        let per_registered = (stats.bytes_allocated - stats.bytes_deallocated) as f64 / CHANNELS as f64;
        let with_events = Region::new(GLOBAL);
        for channel in &channels {
            for n in 0..EVENTS {
                let mut payload = serde_json::Map::new();
                payload.insert("message".into(), format!("step {n}").into());
                streaming
                    .publish(channel, stream_core::EventType::Log, payload)
                    .await
                    .unwrap();
            }
        }
        let stats = with_events.change();
        let per_history = (stats.bytes_allocated - stats.bytes_deallocated) as f64 / CHANNELS as f64;
        eprintln!(
            "idle memory channel: {per_registered:.0} bytes for its owner record, \
             {per_history:.0} bytes for a history of {EVENTS} small events"
        );
        assert!(
            per_registered < 512.0,
            "{per_registered:.0} bytes per registered channel"
        );
        assert!(
            per_history < 3072.0,
            "{per_history:.0} bytes per history of {EVENTS} events"
        );
    });
}
