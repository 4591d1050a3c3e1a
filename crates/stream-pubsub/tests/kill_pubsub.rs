//! `CLIENT KILL TYPE pubsub` mid-stream: Redis drops every pub/sub client, the broker's subscriber
//! connection among them, while events flow; some events are published only after the kill. The
//! broker reconnects, subscribes again and refills from history, so every subscriber still gets
//! every event once, in order.
//!
//! The kill hits every pub/sub client of the server, so these tests have a binary of their own:
//! cargo runs test binaries one after another, and no other test of this crate is subscribed
//! meanwhile. The two tests use different servers (the standalone one and the cluster's nodes).

mod common;

use common::mid_stream::{cluster_killed_mid_stream, standalone_killed_mid_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub_mid_stream() {
    standalone_killed_mid_stream(|url, _| async move { common::kill_type_pubsub(&url).await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub_on_every_cluster_node_mid_stream() {
    // One node after the other: a node's subscriber connection may already have been replaced
    // (and not subscribed yet) when its turn comes, so only the total is checked (at least one).
    cluster_killed_mid_stream(|_| async move {
        let mut killed = 0;
        for node in common::cluster_nodes() {
            killed += common::kill_type_pubsub(&node).await;
        }
        killed
    })
    .await;
}
