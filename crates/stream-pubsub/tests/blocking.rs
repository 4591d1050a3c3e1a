//! A `BlockingEmitter` on a plain std::thread (no tokio runtime in scope) publishes through the
//! RedisBroker; the work runs on the runtime the broker was built on.

mod common;

use std::sync::Arc;

use serde_json::Map;
use stream_core::conformance::broker::{assert_ends, take};
use stream_core::{ChannelConfig, EventId, EventSubscriber, EventType, LogLevel, StreamContext};

async fn emit_from_a_plain_thread(broker: stream_pubsub::RedisBroker) {
    let broker = Arc::new(broker);
    let ctx = StreamContext::builder().workspace_id("user_1").project("demo").build();
    let channel = ctx.channel_id().clone();
    let mut sub = broker.subscribe(&channel, None).await.expect("subscribe");
    let emitter = ctx.bind_blocking(broker.clone());
    let thread = std::thread::spawn(move || {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "no runtime on this thread"
        );
        let mut ids: Vec<EventId> = Vec::new();
        ids.push(emitter.log("Starting deployment...", LogLevel::Info).expect("log"));
        for percent in (10..=90).step_by(10) {
            ids.push(emitter.progress(percent, Some("pushing"), None).expect("progress"));
        }
        ids.push(emitter.complete(true, None, Map::new()).expect("complete"));
        assert!(emitter.log("too late", LogLevel::Info).is_err());
        ids
    });
    // Await the thread without blocking this runtime: the publishes run on it.
    let ids = tokio::task::spawn_blocking(move || thread.join().expect("emitter thread"))
        .await
        .expect("join");
    let got = take(&mut sub, ids.len()).await;
    assert_eq!(got.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    assert_eq!(got[0].message(), Some("Starting deployment..."));
    assert_eq!(got.last().expect("done").kind, EventType::Done);
    assert_eq!(
        got[0].context.as_ref().expect("context").project.as_deref(),
        Some("demo")
    );
    assert_ends(&mut sub).await;
}

/// The test runtime is single-threaded: the plain thread's publishes are spawned on it and run
/// while the test awaits.
#[tokio::test]
async fn blocking_emit_from_a_plain_thread_on_a_current_thread_runtime() {
    emit_from_a_plain_thread(common::standalone(ChannelConfig::default()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_emit_from_a_plain_thread_to_the_cluster() {
    emit_from_a_plain_thread(common::cluster(ChannelConfig::default()).await).await;
}

/// Publishing after the broker's runtime has shut down is an error, not a hang.
#[test]
fn publish_after_the_runtime_is_gone_fails() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let broker = Arc::new(runtime.block_on(common::standalone(ChannelConfig::default())));
    runtime.shutdown_background();
    let emitter = StreamContext::builder().build().bind_blocking(broker);
    assert!(emitter.log("nobody runs this", LogLevel::Info).is_err());
}
