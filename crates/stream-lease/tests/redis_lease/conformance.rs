//! The `LeaseStore` conformance suite from stream-core, on standalone Redis and on the cluster.

use std::sync::Arc;

use stream_core::conformance::lease;
use stream_lease::LeaseStore;

use crate::common::{cfg, cluster_limiter, limiter};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_redis_passes_the_lease_suite() {
    let base = limiter(cfg(5, 60)).await;
    lease::run(|config| Arc::new(base.with_config(config).expect("config")) as Arc<dyn LeaseStore>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_lease_suite() {
    let base = cluster_limiter(cfg(5, 60)).await;
    assert!(base.is_cluster());
    lease::run(|config| Arc::new(base.with_config(config).expect("config")) as Arc<dyn LeaseStore>).await;
}
