//! Plain std threads without a tokio runtime: `stream_lease_sync`, blocking refresh, and the
//! release of a lease dropped there (run to completion by `block_on` on the dropping thread).

use std::sync::Arc;

use futures_executor::block_on;
use stream_core::conformance::unique_user;
use stream_lease::compat::stream_lease_sync;
use stream_lease::{AcquireError, LeaseStore, StreamLeaseLimiter};

use crate::common::{cfg, redis_url};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The checks that run on the plain thread.
fn use_from_plain_thread(limiter: &StreamLeaseLimiter) {
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "this must run outside any runtime"
    );
    let store: Arc<dyn LeaseStore> = Arc::new(limiter.clone());
    let user = unique_user("blocking");
    let lease = stream_lease_sync(&user, Some(store.clone())).expect("lease");
    assert!(lease.is_active());
    assert_eq!(block_on(store.active_count(&user)).expect("count"), 1);
    assert!(lease.refresh().expect("refresh"));
    match stream_lease_sync(&user, Some(store.clone())) {
        Err(AcquireError::LimitExceeded(e)) => assert_eq!(e.limit, 1),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    let listed = block_on(limiter.get_all_leases(&user)).expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(&listed[0].0, lease.lease_id());

    // Dropped here, the lease is released before `drop` returns.
    drop(lease);
    assert_eq!(block_on(store.active_count(&user)).expect("count"), 0);

    // The explicit blocking release too.
    let again = stream_lease_sync(&user, Some(store.clone())).expect("lease after drop");
    again.release().expect("release");
    assert!(!again.is_active());
    assert_eq!(block_on(limiter.get_active_streams(&user)).expect("count"), 0);
}

#[test]
fn a_limiter_built_in_a_runtime_works_from_plain_threads() {
    let runtime = runtime();
    let limiter = runtime.block_on(crate::common::limiter(cfg(1, 60)));
    let worker = limiter.clone();
    std::thread::spawn(move || use_from_plain_thread(&worker))
        .join()
        .expect("plain thread");
    // And a lease dropped on a plain thread while the runtime is busy elsewhere.
    let store: Arc<dyn LeaseStore> = Arc::new(limiter.clone());
    let user = unique_user("blocking-drop");
    let lease = runtime
        .block_on(stream_lease::compat::stream_lease(&user, Some(store.clone())))
        .expect("lease");
    std::thread::spawn(move || drop(lease)).join().expect("dropping thread");
    assert_eq!(runtime.block_on(limiter.get_active_streams(&user)).expect("count"), 0);
}

#[test]
fn connect_blocking_needs_no_runtime_at_all() {
    std::thread::spawn(|| {
        let limiter = StreamLeaseLimiter::builder(redis_url())
            .config(cfg(1, 60))
            .connect_blocking()
            .expect("connect_blocking");
        use_from_plain_thread(&limiter);
        drop(limiter); // stops its runtime
    })
    .join()
    .expect("plain thread");
}

#[test]
fn a_limiter_whose_runtime_is_gone_reports_it() {
    let runtime = runtime();
    let limiter = runtime.block_on(crate::common::limiter(cfg(1, 60)));
    drop(runtime);
    let user = unique_user("gone");
    let err = block_on(limiter.get_active_streams(&user)).expect_err("no runtime left");
    let stream_lease::LeaseError::Backend(source) = &err else {
        panic!("unexpected {err:?}")
    };
    assert!(source.is::<stream_lease::RuntimeUnavailable>(), "{err:?}");
}
