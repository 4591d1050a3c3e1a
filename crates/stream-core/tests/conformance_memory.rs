//! The shared conformance suites, on the in-memory backends.

use std::sync::Arc;

use stream_core::conformance;
use stream_core::memory::{MemoryBroker, MemoryEventStore, MemoryLeaseStore};
use stream_core::{EventPublisher, EventSubscriber, LeaseStore};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_conforms() {
    let broker = MemoryBroker::default();
    let publisher: Arc<dyn EventPublisher> = Arc::new(broker.clone());
    let subscriber: Arc<dyn EventSubscriber> = Arc::new(broker);
    conformance::broker::run(publisher, subscriber).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_lease_store_conforms() {
    conformance::lease::run(|config| Arc::new(MemoryLeaseStore::new(config)) as Arc<dyn LeaseStore>).await;
}

#[tokio::test]
async fn memory_registry_conforms() {
    conformance::registry::run(&MemoryBroker::default()).await;
}

#[tokio::test]
async fn memory_event_store_conforms() {
    conformance::store::run(Arc::new(MemoryEventStore::default())).await;
}
