//! The process-wide [`Streaming`], set once and explicitly, as `tracing` sets its subscriber.
//!
//! Code that avoids global state passes a [`Streaming`] (or the backends themselves) and never
//! touches this module. Code written like the seed installs the backends once at start-up with
//! [`set_global_default`] and reads them anywhere with [`get_default`]; the seed's own names
//! (`init_streaming`, `stream_lease`, `get_event_storage`, …) are in [`compat`](crate::compat).
//!
//! Tests that want their own backends without touching the process run a future under
//! [`with_default`]: inside it, [`get_default`] (and everything built on it) sees the scoped
//! value, and other tasks are not affected.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

use crate::config::ChannelConfig;
use crate::lease::{LeaseStore, StreamLeaseConfig};
use crate::store::EventStore;
use crate::streaming::Streaming;

tokio::task_local! {
    static SCOPED: Streaming;
}

/// The process-wide slot and which of its parts were set explicitly (each may be set once),
/// indexed by [`Part`].
struct Slot {
    streaming: Option<Streaming>,
    installed: [bool; 3],
}

static SLOT: RwLock<Slot> = RwLock::new(Slot {
    streaming: None,
    installed: [false; 3],
});

/// What a second installation of the process-wide backends fails with: the first one stays.
///
/// Each part is installed at most once: the whole [`Streaming`] ([`set_global_default`], the
/// seed's `init_streaming`), the lease store (the seed's `init_lease_limiter`) and the event store
/// (the seed's `init_event_storage`). Installing the whole after a part, or a part twice, fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetGlobalDefaultError {
    part: Part,
}

/// Which part of the process-wide backends was already installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Whole,
    Leases,
    Store,
}

impl fmt::Display for SetGlobalDefaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.part {
            Part::Whole => "the process-wide streaming backends were already installed",
            Part::Leases => "the process-wide lease store was already installed",
            Part::Store => "the process-wide event store was already installed",
        };
        write!(
            f,
            "{what}; they are set once, at start-up (use with_default to scope them in tests)"
        )
    }
}

impl std::error::Error for SetGlobalDefaultError {}

fn write() -> std::sync::RwLockWriteGuard<'static, Slot> {
    SLOT.write().unwrap_or_else(|e| e.into_inner())
}

fn embedded() -> Streaming {
    Streaming::in_memory(ChannelConfig::default(), StreamLeaseConfig::default())
}

/// Installs the process-wide backends, once (the seed's `init_streaming`). A second call, or a
/// call after one of the parts was installed through [`compat`](crate::compat), fails and leaves
/// the first installation in place.
///
/// Until it is called, [`get_default`] gives the embedded in-memory backends; streams that were
/// opened on them keep them.
pub fn set_global_default(streaming: Streaming) -> Result<(), SetGlobalDefaultError> {
    install(Part::Whole, |_| streaming)
}

/// Installs only the lease store, once, keeping the other parts. For `compat`.
pub(crate) fn set_lease_store(leases: Arc<dyn LeaseStore>) -> Result<(), SetGlobalDefaultError> {
    install(Part::Leases, |current| {
        let mut streaming = current.unwrap_or_else(embedded);
        streaming.leases = leases;
        streaming
    })
}

/// Installs only the event store, once, keeping the other parts. For `compat`.
pub(crate) fn set_event_store(store: Arc<dyn EventStore>) -> Result<(), SetGlobalDefaultError> {
    install(Part::Store, |current| {
        current.unwrap_or_else(embedded).with_store(Some(store))
    })
}

/// Installs `part` (the whole, or one part on top of what is there), unless it, or anything it
/// would overwrite, was installed already.
fn install(part: Part, update: impl FnOnce(Option<Streaming>) -> Streaming) -> Result<(), SetGlobalDefaultError> {
    let mut slot = write();
    let overwritten: &[Part] = match part {
        Part::Whole => &[Part::Whole, Part::Leases, Part::Store],
        _ => &[Part::Whole, part],
    };
    if let Some(&part) = overwritten.iter().find(|p| slot.installed[**p as usize]) {
        return Err(SetGlobalDefaultError { part });
    }
    let current = slot.streaming.take();
    slot.streaming = Some(update(current));
    slot.installed[part as usize] = true;
    Ok(())
}

/// The backends in effect here: those of the enclosing [`with_default`] if any, else the
/// process-wide ones that [`set_global_default`] installed, else the embedded in-memory default
/// (created on first use and shared by every later caller).
pub fn get_default() -> Streaming {
    if let Ok(scoped) = SCOPED.try_with(Streaming::clone) {
        return scoped;
    }
    if let Some(streaming) = SLOT.read().unwrap_or_else(|e| e.into_inner()).streaming.as_ref() {
        return streaming.clone();
    }
    write().streaming.get_or_insert_with(embedded).clone()
}

/// Runs `future` with `streaming` as what [`get_default`] returns inside it, without touching the
/// process-wide backends: for tests that run side by side in one process. Tasks spawned inside
/// the future do not inherit the scope.
pub async fn with_default<F: Future>(streaming: Streaming, future: F) -> F::Output {
    SCOPED.scope(streaming, future).await
}
