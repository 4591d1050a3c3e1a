//! In-memory backends: the embedded default. Nothing to install; one process only.
//!
//! They keep the semantics of the Redis and OpenSearch backends, and the conformance suites in
//! `stream_core::conformance` (feature `conformance`) run against both.

mod broker;
mod lease;
mod store;

pub use broker::MemoryBroker;
pub use lease::MemoryLeaseStore;
pub use store::MemoryEventStore;
