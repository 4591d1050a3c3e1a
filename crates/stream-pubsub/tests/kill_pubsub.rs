//! `CLIENT KILL TYPE pubsub` mid-stream: Redis drops every pub/sub client, the broker's subscriber
//! connection among them, while events flow; some events are published only after the kill. The
//! broker reconnects, subscribes again and refills from history, so every subscriber still gets
//! every event once, in order.
//!
//! The kill hits every pub/sub client of the server, so this test has a binary of its own: cargo
//! runs test binaries one after another, and no other test of this crate is subscribed meanwhile.
//! The cluster is not covered here: see `mid_stream::CLUSTER_REST` for what a kill on the cluster
//! nodes runs into.

mod common;

use common::mid_stream::standalone_killed_mid_stream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_type_pubsub_mid_stream() {
    standalone_killed_mid_stream(|url, _| async move { common::kill_type_pubsub(&url).await }).await;
}
