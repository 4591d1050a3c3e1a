//! Killing the broker's subscriber connection mid-stream (`CLIENT KILL ID`, found by its
//! `CLIENT SETNAME`): the broker reconnects, subscribes again and refills from history, so every
//! subscriber still gets every event once, in order.
//!
//! Only this broker's connection is killed (by id), so other tests sharing the server are not
//! disturbed; this file still runs on its own binary. `kill_pubsub.rs` kills with
//! `CLIENT KILL TYPE pubsub` instead, every pub/sub client of the server.

mod common;

use common::mid_stream::{cluster_killed_mid_stream, ids, standalone_killed_mid_stream};
use stream_core::conformance::broker::{numbered, publish_all, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, Event, EventPublisher, EventSubscriber};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_subscriber_connection_killed_mid_stream() {
    standalone_killed_mid_stream(|url, id| async move { common::kill(&url, id).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_disconnected_come_from_history() {
    let url = common::redis_url();
    let name = common::unique_name("sp-gap");
    let broker = common::standalone_named(ChannelConfig::default(), &name).await;
    let ch = unique_channel("offline");
    let mut sub = broker.subscribe(&ch, None).await.expect("subscribe");
    let first = broker.publish(&numbered(&ch, 0)).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, first);

    // Kill the connection and publish right away, before the broker can have reconnected.
    let conn = common::named(&url, &name).await;
    assert_eq!(conn.len(), 1);
    let mut admin = common::admin(&url).await;
    let mut pipe = stream_pubsub::redis::pipe();
    pipe.cmd("CLIENT").arg("KILL").arg("ID").arg(conn[0].id);
    let mut offline: Vec<Event> = (1..20).map(|n| numbered(&ch, n)).collect();
    let _: () = pipe.query_async(&mut admin).await.expect("CLIENT KILL");
    publish_all(&broker, &mut offline).await;
    let got = take(&mut sub, offline.len()).await;
    assert_eq!(ids(&got), ids(&offline));
    let live = broker.publish(&numbered(&ch, 20)).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_subscriber_connections_killed_mid_stream() {
    cluster_killed_mid_stream(|targets| async move {
        let mut killed = 0;
        for (node, id) in &targets {
            killed += common::kill(node, *id).await;
        }
        killed
    })
    .await;
}
