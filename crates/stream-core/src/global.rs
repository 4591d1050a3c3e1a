//! Process-wide backends, for code written like the seed (`init_streaming` once at start-up, then
//! free functions). Code that avoids global state passes a [`Streaming`] or the backends
//! themselves instead.

use std::sync::{Arc, OnceLock, RwLock};

use crate::config::ChannelConfig;
use crate::ids::UserId;
use crate::lease::{AcquireError, LeaseError, LeaseStore, StreamLease, StreamLeaseConfig};
use crate::store::EventStore;
use crate::streaming::Streaming;

fn slot() -> &'static RwLock<Option<Streaming>> {
    static SLOT: OnceLock<RwLock<Option<Streaming>>> = OnceLock::new();
    SLOT.get_or_init(|| RwLock::new(None))
}

/// Installs the process-wide backends (the seed's `init_streaming`). Calling it again replaces
/// them; streams already open keep the backends they started with.
pub fn init_streaming(streaming: Streaming) {
    *slot().write().unwrap_or_else(|e| e.into_inner()) = Some(streaming);
}

/// Replaces only the process-wide lease store (the seed's `init_lease_limiter`).
pub fn init_lease_store(leases: Arc<dyn LeaseStore>) {
    update(|mut s| {
        s.leases = leases;
        s
    });
}

/// Replaces only the process-wide event store (the seed's `init_event_storage`): persisted events
/// go to `store` from now on, and no longer to the store it replaces (see
/// [`Streaming::with_store`]).
pub fn init_event_store(store: Arc<dyn EventStore>) {
    update(|s| s.with_store(Some(store)));
}

fn update(f: impl FnOnce(Streaming) -> Streaming) {
    let mut guard = slot().write().unwrap_or_else(|e| e.into_inner());
    let streaming = guard
        .take()
        .unwrap_or_else(|| Streaming::in_memory(ChannelConfig::default(), StreamLeaseConfig::default()));
    *guard = Some(f(streaming));
}

/// The process-wide backends: what [`init_streaming`] installed, or the in-memory default.
pub fn streaming() -> Streaming {
    if let Some(s) = slot().read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return s.clone();
    }
    let mut guard = slot().write().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(|| Streaming::in_memory(ChannelConfig::default(), StreamLeaseConfig::default()))
        .clone()
}

/// The process-wide event store, if any (the seed's `get_event_storage`).
pub fn get_event_store() -> Option<Arc<dyn EventStore>> {
    streaming().store
}

fn pick(limiter: Option<Arc<dyn LeaseStore>>) -> Arc<dyn LeaseStore> {
    limiter.unwrap_or_else(|| streaming().leases)
}

/// Acquires a lease for `user` (the seed's `stream_lease`): from `limiter`, or the process-wide
/// store when `None`. The guard releases it on drop.
pub async fn stream_lease(user: &UserId, limiter: Option<Arc<dyn LeaseStore>>) -> Result<StreamLease, AcquireError> {
    StreamLease::acquire(pick(limiter), user.clone()).await
}

/// Blocking [`stream_lease`] (the seed's `stream_lease_sync`), for plain threads.
pub fn stream_lease_sync(user: &UserId, limiter: Option<Arc<dyn LeaseStore>>) -> Result<StreamLease, AcquireError> {
    StreamLease::acquire_blocking(pick(limiter), user.clone())
}

/// The user's active stream count (the seed's `get_active_streams`).
pub async fn get_active_streams(user: &UserId, limiter: Option<Arc<dyn LeaseStore>>) -> Result<usize, LeaseError> {
    pick(limiter).active_count(user).await
}

/// Whether the user is under the cap (the seed's `can_start_stream`). Advisory: another stream
/// may take the last slot before you acquire it.
pub async fn can_start_stream(user: &UserId, limiter: Option<Arc<dyn LeaseStore>>) -> Result<bool, LeaseError> {
    let store = pick(limiter);
    Ok(store.active_count(user).await? < store.config().limit)
}
