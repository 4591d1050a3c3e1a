//! The EventStore conformance suite of stream-core, against a real OpenSearch node.

mod common;

use std::sync::Arc;

use stream_core::EventStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_against_opensearch() {
    let store = Arc::new(common::connect(common::test_config("conformance")).await);
    stream_core::conformance::store::run(store.clone()).await;
    let stats = store.stats();
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert_eq!(stats.written, stats.accepted, "{stats:?}");
    store.shutdown().await.expect("shutdown");
    common::cleanup(&store).await;
}
