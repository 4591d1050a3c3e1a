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
async fn memory_broker_resumes_a_caught_up_client_without_a_gap() {
    let broker = MemoryBroker::default();
    conformance::broker::resume_at_the_newest_event_is_not_a_gap(&broker, &broker, &broker).await;
}

#[tokio::test]
async fn memory_event_store_conforms() {
    conformance::store::run(Arc::new(MemoryEventStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_announces_gaps() {
    let broker = MemoryBroker::new(stream_core::ChannelConfig {
        history_max_len: 10,
        ..Default::default()
    });
    conformance::broker::resume_older_than_history_starts_with_gap(&broker, &broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_watches_producers() {
    let broker = MemoryBroker::new(stream_core::ChannelConfig {
        heartbeat_interval: Some(std::time::Duration::from_millis(50)),
        ..Default::default()
    });
    conformance::broker::producer_liveness(Arc::new(broker.clone()), &broker).await;
}
