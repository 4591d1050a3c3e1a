//! The Python module's names, for code ported from it. Each works on the process-wide backends
//! ([`get_default`]) and maps to one call of the main API:
//!
//! | the seed's name | here | the Rust API |
//! |---|---|---|
//! | `init_streaming(…)` | [`init_streaming`] | [`set_global_default`]`(Streaming::builder()….build())` |
//! | `init_lease_limiter(redis_config, config)` | `stream_lease::compat::init_lease_limiter`, built on [`init_lease_store`] | `Streaming::builder().leases(StreamLeaseLimiter::connect(url, config).await?)` |
//! | `init_event_storage(…)` | `stream_store_opensearch::compat::init_event_storage`, built on [`init_event_store`] | `Streaming::builder().store(OpenSearchEventStore::connect(config).await?)` |
//! | `get_event_storage()` | [`get_event_storage`] | `streaming.store` |
//! | `stream_lease(user_id)` | [`stream_lease`] | [`StreamLease::acquire`]`(streaming.leases.clone(), user)` |
//! | `stream_lease_sync(user_id)` | [`stream_lease_sync`] | [`StreamLease::acquire_blocking`] |
//! | `get_active_streams(user_id)` | [`get_active_streams`] | `streaming.leases.active_count(&user)` |
//! | `can_start_stream(user_id)` | [`can_start_stream`] | `active_count(&user) < streaming.leases.config().limit` |
//! | `sse_response(channel_id, channel, headers)` | [`sse_response`] | [`SseResponse::channel`]`(&streaming, channel)` |
//! | `sse_response_with_lease(channel_id, user_id, …)` | [`sse_response_with_lease`] | `SseResponse::channel(&streaming, channel).lease(user)` |
//! | `direct_sse_response(generator, user_id, use_lease, headers)` | [`direct_sse_response`] | [`SseResponse::direct`]`(&streaming, events)`, `.lease(user)` |
//!
//! The responses come back as the [`SseResponse`] builder: await it and convert the reply with the
//! adapter's `Sse` (`stream_axum::Sse::from(reply)`, `stream_actix::Sse::from(reply)`), as the
//! main API does. `docs/migration.md` maps the rest of the module (the context, the events, the
//! config fields).

use std::sync::Arc;

use futures_core::Stream;

use crate::event::Event;
use crate::global::{SetGlobalDefaultError, get_default, set_event_store, set_global_default, set_lease_store};
use crate::ids::{ChannelId, UserId};
use crate::lease::{AcquireError, LeaseError, LeaseStore, StreamLease};
use crate::store::EventStore;
use crate::streaming::{SseResponse, Streaming};

/// The seed's `init_streaming`: [`set_global_default`]. Fails on a second call.
pub fn init_streaming(streaming: Streaming) -> Result<(), SetGlobalDefaultError> {
    set_global_default(streaming)
}

/// Installs only the process-wide lease store, keeping the other parts (what the seed's
/// `init_lease_limiter` does; `stream_lease::compat::init_lease_limiter` connects Redis and calls
/// this). Fails when a lease store or the whole backends were already installed.
pub fn init_lease_store(leases: Arc<dyn LeaseStore>) -> Result<(), SetGlobalDefaultError> {
    set_lease_store(leases)
}

/// Installs only the process-wide event store, keeping the other parts (what the seed's
/// `init_event_storage` does; `stream_store_opensearch::compat::init_event_storage` connects
/// OpenSearch and calls this). Persisted events published through the process-wide publisher go
/// to it. Fails when an event store or the whole backends were already installed.
pub fn init_event_store(store: Arc<dyn EventStore>) -> Result<(), SetGlobalDefaultError> {
    set_event_store(store)
}

/// The process-wide event store, if any (the seed's `get_event_storage`).
pub fn get_event_storage() -> Option<Arc<dyn EventStore>> {
    get_default().store
}

fn pick(limiter: Option<Arc<dyn LeaseStore>>) -> Arc<dyn LeaseStore> {
    limiter.unwrap_or_else(|| get_default().leases)
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

/// The seed's `sse_response(channel_id)` on the process-wide backends:
/// [`SseResponse::channel`]. Chain `.resume(last_event_id)` for Last-Event-ID.
pub fn sse_response(channel: ChannelId) -> SseResponse {
    SseResponse::channel(&get_default(), channel)
}

/// The seed's `sse_response_with_lease(channel_id, user_id)`: [`sse_response`] holding a lease of
/// `user` for as long as the response streams (429 when the user is at the cap).
pub fn sse_response_with_lease(channel: ChannelId, user: UserId) -> SseResponse {
    sse_response(channel).lease(user)
}

/// The seed's `direct_sse_response(generator, user_id, use_lease)`: [`SseResponse::direct`] on
/// the process-wide backends, with a lease of `user` when one is given (the seed's
/// `use_lease=True` with a `user_id`).
pub fn direct_sse_response<S, E>(events: S, user: Option<UserId>) -> SseResponse
where
    S: Stream<Item = Result<Event, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let response = SseResponse::direct(&get_default(), events);
    match user {
        Some(user) => response.lease(user),
        None => response,
    }
}
