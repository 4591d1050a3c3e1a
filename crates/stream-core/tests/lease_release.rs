//! A lease guard dropped on a runtime that shuts down before its release task runs (a web
//! server's worker runtime at shutdown) is still released by `StreamLease::wait_for_releases`.

use std::sync::Arc;
use std::time::Duration;

use stream_core::memory::MemoryLeaseStore;
use stream_core::{LeaseStore, StreamLease, StreamLeaseConfig, UserId};

#[test]
fn a_release_dropped_with_its_runtime_is_run_by_wait_for_releases() {
    let store: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::new(StreamLeaseConfig::default()));
    let user = UserId::new("shutdown").unwrap();
    let worker = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    worker.block_on(async {
        let lease = StreamLease::acquire(store.clone(), user.clone()).await.unwrap();
        // The release is spawned on this runtime, which stops before running it.
        drop(lease);
    });
    drop(worker);
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    main.block_on(async {
        assert_eq!(
            store.active_count(&user).await.unwrap(),
            1,
            "the release did not run yet"
        );
        assert_eq!(StreamLease::wait_for_releases(Duration::from_secs(2)).await, 0);
        assert_eq!(store.active_count(&user).await.unwrap(), 0, "released at shutdown");
    });
}
