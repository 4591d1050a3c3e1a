//! A worker in a separate OS process emits; a reader in this process receives everything, in
//! order. The worker is this same test binary, re-run with `--exact` on this same test and the
//! channel id in an environment variable ([`common::child`]).

mod common;

use std::sync::Arc;

use serde_json::{Map, json};
use stream_core::conformance::broker::{assert_ends, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, ChannelId, EventSubscriber, EventType, LogLevel, StreamContext};
use stream_pubsub::RedisBroker;

const WORKER_CHANNEL: &str = "STREAM_PUBSUB_TEST_WORKER_CHANNEL";
const WORKER_EVENTS: usize = 200;
const TEST: &str = "a_worker_process_emits_and_this_process_reads_everything_in_order";

/// The reader, in this process; or, in the child process, the worker.
#[test]
fn a_worker_process_emits_and_this_process_reads_everything_in_order() {
    common::child::parent_or_child(
        WORKER_CHANNEL,
        |channel| worker(ChannelId::new(channel).expect("channel id")),
        reader(),
    );
}

/// The worker half, in the child process. It behaves like a job worker: its own runtime for the
/// broker, and blocking emits from the main thread.
fn worker(channel: ChannelId) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let broker = runtime
        .block_on(RedisBroker::connect(&common::redis_url(), ChannelConfig::default()))
        .expect("the worker connects to Redis");
    let ctx = StreamContext::builder().channel_id(channel).project("worker").build();
    let emitter = ctx.bind_blocking(Arc::new(broker));
    for n in 0..WORKER_EVENTS {
        let mut payload = Map::new();
        payload.insert("n".into(), json!(n));
        payload.insert("pid".into(), json!(std::process::id()));
        if n % 50 == 0 {
            emitter.log(&format!("step {n}"), LogLevel::Info).expect("log");
        } else {
            emitter.data(payload).expect("data");
        }
    }
    emitter.complete(true, None, Map::new()).expect("complete");
}

/// The reader half, in this process: starts the worker and reads its events.
async fn reader() {
    let channel = unique_channel("xproc");
    let broker = common::standalone(ChannelConfig::default()).await;
    let mut worker = common::child::command(TEST, WORKER_CHANNEL, channel.as_str())
        .spawn()
        .expect("start the worker process");
    // Subscribe while the worker is already emitting: history covers what came first.
    let mut sub = broker.subscribe(&channel, None).await.expect("subscribe");
    let got = take(&mut sub, WORKER_EVENTS + 1).await;
    assert_ends(&mut sub).await;
    let status = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .expect("join")
        .expect("wait");
    assert_eq!(
        status.code(),
        Some(common::child::DONE),
        "the worker process failed: {status}"
    );

    assert!(got.windows(2).all(|w| w[0].id < w[1].id), "ids strictly increase");
    let worker_pid = got[1].payload["pid"].as_u64().expect("pid");
    assert_ne!(
        worker_pid,
        u64::from(std::process::id()),
        "the events come from another process"
    );
    for (n, event) in got[..WORKER_EVENTS].iter().enumerate() {
        if n % 50 == 0 {
            assert_eq!(event.kind, EventType::Log);
            assert_eq!(event.message(), Some(format!("step {n}").as_str()));
        } else {
            assert_eq!(event.kind, EventType::Data);
            assert_eq!(event.payload["n"], json!(n), "event {n} out of order");
        }
    }
    assert_eq!(got[WORKER_EVENTS].kind, EventType::Done);
}
