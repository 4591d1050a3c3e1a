//! `init_lease_limiter` installs Redis as the process-wide lease store used by the seed-style
//! free functions. (The other tests of this binary pass their stores explicitly.)

use std::time::Duration;

use stream_core::conformance::unique_user;
use stream_lease::compat::{can_start_stream, get_active_streams, init_lease_limiter, stream_lease, stream_lease_sync};
use stream_lease::{AcquireError, LimiterError, StreamLeaseConfig};

use crate::common::{raw, redis_url, zcard};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_lease_limiter_installs_redis_for_the_free_functions() {
    let config = StreamLeaseConfig {
        limit: 2,
        ttl_seconds: 60,
        retry_after_seconds: 7,
        ..StreamLeaseConfig::default()
    };
    let limiter = init_lease_limiter(redis_url(), config)
        .await
        .expect("init_lease_limiter");
    // Installed once: a second call fails and the first limiter stays.
    match init_lease_limiter(redis_url(), StreamLeaseConfig::default()).await {
        Err(LimiterError::AlreadyInstalled(_)) => {}
        other => panic!("expected AlreadyInstalled, got {other:?}"),
    }
    let user = unique_user("global");
    let key = limiter.key(&user);
    let mut conn = raw().await;

    assert!(can_start_stream(&user, None).await.expect("can_start_stream"));
    let first = stream_lease(&user, None).await.expect("first lease");
    let second = stream_lease(&user, None).await.expect("second lease");
    // The leases are in Redis, not in the in-memory default.
    assert_eq!(zcard(&mut conn, &key).await, 2);
    assert_eq!(get_active_streams(&user, None).await.expect("count"), 2);
    assert!(!can_start_stream(&user, None).await.expect("can_start_stream"));
    match stream_lease(&user, None).await {
        Err(AcquireError::LimitExceeded(e)) => {
            assert_eq!(e.limit, 2);
            assert_eq!(e.retry_after, Duration::from_secs(7));
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    drop(first);
    second.release_async().await.expect("release");

    // The blocking helper from a plain thread uses the same store.
    let sync_user = user.clone();
    std::thread::spawn(move || {
        let lease = stream_lease_sync(&sync_user, None).expect("sync lease");
        assert!(lease.refresh().expect("refresh"));
    })
    .join()
    .expect("plain thread");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while zcard(&mut conn, &key).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "leases left behind");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
