//! Four OS processes publish to one channel at once, on a standalone Redis and on the Redis
//! Cluster: a live subscriber and a late one each get all 2,000 events once, in strictly
//! increasing id order. The publishers are this same test binary, re-run as children
//! ([`common::child`]).

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, json};
use stream_core::conformance::broker::take;
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, ChannelId, Event, EventPublisher, EventSubscriber, EventType, StreamContext};
use stream_pubsub::{RedisBroker, RedisSource};

const CHILD_INPUT: &str = "STREAM_PUBSUB_TEST_CONCURRENT_PUBLISHER";
const PROCESSES: usize = 4;
const EVENTS: usize = 500;

/// The child's half: publishes `EVENTS` events from two tasks sharing one emitter.
fn publisher(input: &str) {
    let (mode, channel) = input.split_once(':').expect("mode:channel");
    let channel = ChannelId::new(channel).expect("channel id");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let broker = if mode == "cluster" {
            RedisBroker::connect(RedisSource::cluster(common::cluster_nodes()), ChannelConfig::default()).await
        } else {
            RedisBroker::connect(&common::redis_url(), ChannelConfig::default()).await
        }
        .expect("the publisher connects to Redis");
        let emitter = Arc::new(
            StreamContext::builder()
                .channel_id(channel)
                .build()
                .bind(Arc::new(broker))
                .with_heartbeat(None),
        );
        let tasks: Vec<_> = (0..2)
            .map(|half| {
                let emitter = emitter.clone();
                tokio::spawn(async move {
                    for n in (half..EVENTS).step_by(2) {
                        let mut payload = Map::new();
                        payload.insert("pid".into(), json!(std::process::id()));
                        payload.insert("n".into(), json!(n));
                        emitter.emit(EventType::Log, payload).await.expect("emit");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("publisher task");
        }
    });
}

fn check(got: &[Event], who: &str) {
    assert!(
        got.windows(2).all(|w| w[0].id < w[1].id),
        "{who}: ids strictly increase"
    );
    let (done, events) = got.split_last().expect("events");
    assert_eq!(done.kind, EventType::Done, "{who}: ends with done");
    let keys: HashSet<(u64, u64)> = events
        .iter()
        .map(|e| {
            (
                e.payload["pid"].as_u64().expect("pid"),
                e.payload["n"].as_u64().expect("n"),
            )
        })
        .collect();
    assert_eq!(keys.len(), events.len(), "{who}: no event twice");
    assert_eq!(events.len(), PROCESSES * EVENTS, "{who}: every event");
    let pids: HashSet<u64> = keys.iter().map(|(pid, _)| *pid).collect();
    assert_eq!(pids.len(), PROCESSES, "{who}: from {PROCESSES} processes");
}

async fn four_processes_publish_to_one_channel(mode: &str, test: &str) {
    let broker = if mode == "cluster" {
        common::cluster(ChannelConfig::default()).await
    } else {
        common::standalone(ChannelConfig::default()).await
    };
    let channel = unique_channel("procs");
    let mut live = broker.subscribe(&channel, None).await.expect("subscribe");
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            common::child::command(test, CHILD_INPUT, &format!("{mode}:{channel}"))
                .spawn()
                .expect("start a publisher process")
        })
        .collect();
    let reader = tokio::spawn(async move { take(&mut live, PROCESSES * EVENTS + 1).await });
    for mut child in children {
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("wait");
        assert_eq!(status.code(), Some(common::child::DONE), "a publisher failed: {status}");
    }
    let done = Event::done(channel.clone(), true, Map::new()).expect("done");
    broker.publish(&done).await.expect("publish done");
    check(&reader.await.expect("reader"), "live subscriber");
    let mut late = broker.subscribe(&channel, None).await.expect("subscribe");
    check(&take(&mut late, PROCESSES * EVENTS + 1).await, "late subscriber");
}

fn run(mode: &str, test: &str) {
    common::child::parent_or_child(
        CHILD_INPUT,
        publisher,
        four_processes_publish_to_one_channel(mode, test),
    );
}

#[test]
fn four_processes_publish_to_one_standalone_channel() {
    run("standalone", "four_processes_publish_to_one_standalone_channel");
}

#[test]
fn four_processes_publish_to_one_cluster_channel() {
    run("cluster", "four_processes_publish_to_one_cluster_channel");
}
