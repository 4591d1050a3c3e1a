//! The lease store suite.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::unique_user;
use crate::lease::{AcquireError, LeaseStore, StreamLease, StreamLeaseConfig};

/// Runs every check. `make` builds a store with the given settings (the suite uses short TTLs).
pub async fn run<F>(make: F)
where
    F: Fn(StreamLeaseConfig) -> Arc<dyn LeaseStore>,
{
    let cfg = |limit: usize, ttl_seconds: u64| StreamLeaseConfig {
        limit,
        ttl_seconds,
        ..StreamLeaseConfig::default()
    };
    limit_is_enforced(&*make(cfg(3, 60))).await;
    release_frees_a_slot(&*make(cfg(2, 60))).await;
    refresh_never_revives(&*make(cfg(2, 60))).await;
    leases_expire(&*make(cfg(2, 1))).await;
    users_are_isolated(&*make(cfg(1, 60))).await;
    listing_shows_expiry(&*make(cfg(3, 60))).await;
    concurrent_acquires_respect_the_limit(make(cfg(5, 60))).await;
    guard_releases_on_drop(make(cfg(1, 60))).await;
}

/// At most `limit` leases per user.
pub async fn limit_is_enforced(store: &dyn LeaseStore) {
    let user = unique_user("limit");
    for _ in 0..3 {
        assert!(store.acquire(&user).await.expect("acquire").is_some());
    }
    assert_eq!(store.acquire(&user).await.expect("acquire"), None);
    assert_eq!(store.active_count(&user).await.expect("count"), 3);
}

/// Releasing gives the slot back; releasing twice or an unknown lease is fine.
pub async fn release_frees_a_slot(store: &dyn LeaseStore) {
    let user = unique_user("release");
    let a = store.acquire(&user).await.expect("acquire").expect("lease");
    let _b = store.acquire(&user).await.expect("acquire").expect("lease");
    assert_eq!(store.acquire(&user).await.expect("acquire"), None);
    store.release(&user, &a).await.expect("release");
    store.release(&user, &a).await.expect("second release");
    store
        .release(&user, &crate::LeaseId::generate())
        .await
        .expect("unknown release");
    assert_eq!(store.active_count(&user).await.expect("count"), 1);
    assert!(store.acquire(&user).await.expect("acquire").is_some());
}

/// Refresh keeps a live lease, and reports `false` for a released or unknown one without
/// bringing it back.
pub async fn refresh_never_revives(store: &dyn LeaseStore) {
    let user = unique_user("refresh");
    let a = store.acquire(&user).await.expect("acquire").expect("lease");
    assert!(store.refresh(&user, &a).await.expect("refresh"));
    store.release(&user, &a).await.expect("release");
    assert!(!store.refresh(&user, &a).await.expect("refresh"));
    assert_eq!(store.active_count(&user).await.expect("count"), 0);
    assert!(
        !store
            .refresh(&user, &crate::LeaseId::generate())
            .await
            .expect("refresh")
    );
    assert_eq!(store.active_count(&user).await.expect("count"), 0);
}

/// A lease that is not refreshed expires after its TTL and frees its slot.
pub async fn leases_expire(store: &dyn LeaseStore) {
    let user = unique_user("expire");
    let a = store.acquire(&user).await.expect("acquire").expect("lease");
    let _b = store.acquire(&user).await.expect("acquire").expect("lease");
    assert_eq!(store.acquire(&user).await.expect("acquire"), None);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(store.active_count(&user).await.expect("count"), 0);
    assert!(
        !store.refresh(&user, &a).await.expect("refresh"),
        "an expired lease was revived"
    );
    assert!(store.acquire(&user).await.expect("acquire").is_some());
}

/// One user's leases do not count against another's.
pub async fn users_are_isolated(store: &dyn LeaseStore) {
    let (u1, u2) = (unique_user("iso1"), unique_user("iso2"));
    assert!(store.acquire(&u1).await.expect("acquire").is_some());
    assert_eq!(store.acquire(&u1).await.expect("acquire"), None);
    assert!(store.acquire(&u2).await.expect("acquire").is_some());
}

/// Listing shows each lease with an expiry about one TTL ahead.
pub async fn listing_shows_expiry(store: &dyn LeaseStore) {
    let user = unique_user("list");
    let a = store.acquire(&user).await.expect("acquire").expect("lease");
    let b = store.acquire(&user).await.expect("acquire").expect("lease");
    let list = store.leases(&user).await.expect("list");
    assert_eq!(list.len(), 2);
    let mut got: Vec<_> = list.iter().map(|l| l.lease_id.clone()).collect();
    got.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(got, want);
    let now = SystemTime::now();
    for l in &list {
        assert!(l.expires_at > now + Duration::from_secs(50), "expiry too soon: {l:?}");
        assert!(l.expires_at < now + Duration::from_secs(70), "expiry too late: {l:?}");
    }
    assert!(list[0].expires_at <= list[1].expires_at);
}

/// 32 tasks racing for one user's 5 slots: exactly 5 win.
pub async fn concurrent_acquires_respect_the_limit(store: Arc<dyn LeaseStore>) {
    let user = unique_user("race");
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, user) = (store.clone(), user.clone());
            tokio::spawn(async move { store.acquire(&user).await.expect("acquire") })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.expect("task").is_some());
    }
    assert_eq!(won, 5);
    assert_eq!(store.active_count(&user).await.expect("count"), 5);
}

/// The guard reports the cap as [`crate::StreamLimitExceeded`] and releases on drop.
pub async fn guard_releases_on_drop(store: Arc<dyn LeaseStore>) {
    let user = unique_user("guard");
    let lease = StreamLease::acquire(store.clone(), user.clone()).await.expect("lease");
    assert!(lease.is_active());
    assert_eq!(lease.user_id(), &user);
    match StreamLease::acquire(store.clone(), user.clone()).await {
        Err(AcquireError::LimitExceeded(e)) => assert_eq!(e.limit, 1),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    drop(lease);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while store.active_count(&user).await.expect("count") != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dropped lease not released within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let again = StreamLease::acquire(store.clone(), user.clone())
        .await
        .expect("lease after drop");
    again.release_async().await.expect("release");
    assert!(!again.is_active());
    assert_eq!(store.active_count(&user).await.expect("count"), 0);
}
