#![doc = include_str!("../README.md")]

pub mod ai_sdk;
pub mod compat;
mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod context;
mod error;
mod event;
pub mod fanout;
mod global;
pub mod group_commit;
mod ids;
mod lease;
pub mod memory;
pub mod metrics;
mod publish;
mod registry;
pub mod replay;
mod shared;
pub mod spawn;
pub mod sse;
mod store;
mod streaming;
mod subscribe;
pub mod token;

pub use config::ChannelConfig;
pub use context::{
    BlockingEmitter, EmitError, Emitter, InvalidContext, LogLevel, OwnerRecord, SseEmitter, StreamContext,
    StreamContextBuilder,
};
pub use error::BoxError;
pub use event::{
    DebugContext, Event, EventId, EventType, InvalidEventId, InvalidEventType, RESERVED_KEYS, ReservedKey,
};
pub use global::{SetGlobalDefaultError, get_default, set_global_default, with_default};
pub use ids::{ChannelId, InvalidId, LeaseId, UserId};
pub use lease::{AcquireError, LeaseError, LeaseInfo, LeaseStore, StreamLease, StreamLeaseConfig, StreamLimitExceeded};
pub use publish::{CancelOutcome, EventPublisher, PersistingPublisher, PublishError};
pub use registry::{ChannelRegistry, RegistryError};
pub use shared::SharedEvent;
pub use store::{AppendError, EventPage, EventQuery, EventStore, PageCursor, SortOrder, StoreError, StoreStats};
pub use streaming::{Streaming, StreamingBuilder};
pub use subscribe::{EventCursor, EventSubscriber, SubscribeError, Subscription};
pub use token::{StreamTokenSigner, TokenError};

/// Re-exported so that users can name the shutdown token that [`sse::SseOptions`] takes.
pub use tokio_util::sync::CancellationToken;
