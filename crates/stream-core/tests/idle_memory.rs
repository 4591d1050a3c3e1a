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

#[test]
fn an_idle_memory_stream_is_small() {
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
