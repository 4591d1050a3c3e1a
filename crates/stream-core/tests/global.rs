//! The seed-style process-wide functions, and archiving through `PersistingPublisher`.

use std::sync::Arc;

use serde_json::Map;
use stream_core::memory::{MemoryBroker, MemoryEventStore, MemoryLeaseStore};
use stream_core::{
    AcquireError, ChannelConfig, EventQuery, EventStore, LogLevel, PersistingPublisher, StreamContext,
    StreamLeaseConfig, Streaming, UserId, can_start_stream, get_active_streams, init_streaming, stream_lease,
    stream_lease_sync, streaming,
};

#[tokio::test]
async fn persisted_events_are_archived_and_others_are_not() {
    let broker = Arc::new(MemoryBroker::default());
    let store = Arc::new(MemoryEventStore::default());
    let publisher = Arc::new(PersistingPublisher::new(broker, store.clone()));

    let kept = StreamContext::builder().persist_events(true).build();
    let kept_channel = kept.channel_id().clone();
    let kept = kept.bind(publisher.clone());
    kept.log("archived", LogLevel::Info).await.unwrap();
    kept.complete(true, None, Map::new()).await.unwrap();

    let skipped = StreamContext::builder().build();
    let skipped_channel = skipped.channel_id().clone();
    skipped
        .bind(publisher)
        .log("not archived", LogLevel::Info)
        .await
        .unwrap();

    store.flush().await.unwrap();
    let page = store.query(&EventQuery::channel(kept_channel)).await.unwrap();
    assert_eq!(page.events.len(), 2);
    assert_eq!(page.events[0].message(), Some("archived"));
    assert!(
        store
            .query(&EventQuery::channel(skipped_channel))
            .await
            .unwrap()
            .events
            .is_empty()
    );
}

#[tokio::test]
async fn a_new_store_replaces_the_old_one_instead_of_stacking() {
    let broker = Arc::new(MemoryBroker::default());
    let first = Arc::new(MemoryEventStore::default());
    let second = Arc::new(MemoryEventStore::default());
    let streaming = Streaming::from_parts(
        broker.clone(),
        broker.clone(),
        broker,
        Arc::new(MemoryLeaseStore::default()),
        Some(first.clone()),
        ChannelConfig::default(),
    )
    .with_store(Some(second.clone()));

    let ctx = StreamContext::builder().persist_events(true).build();
    let channel = ctx.channel_id().clone();
    ctx.bind(streaming.publisher.clone())
        .log("once", LogLevel::Info)
        .await
        .unwrap();
    first.flush().await.unwrap();
    second.flush().await.unwrap();
    let count = |page: stream_core::EventPage| page.events.len();
    assert_eq!(
        count(second.query(&EventQuery::channel(channel.clone())).await.unwrap()),
        1
    );
    assert_eq!(count(first.query(&EventQuery::channel(channel)).await.unwrap()), 0);
}

// One test touches the process-wide slot, so tests cannot race on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_functions_use_what_init_streaming_installed() {
    let lease_config = StreamLeaseConfig {
        limit: 2,
        ..StreamLeaseConfig::default()
    };
    init_streaming(Streaming::in_memory(ChannelConfig::default(), lease_config.clone()));
    let user = UserId::new("global-user").unwrap();

    let a = stream_lease(&user, None).await.unwrap();
    assert!(can_start_stream(&user, None).await.unwrap());
    let b = tokio::task::spawn_blocking({
        let user = user.clone();
        move || stream_lease_sync(&user, None).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(get_active_streams(&user, None).await.unwrap(), 2);
    assert!(!can_start_stream(&user, None).await.unwrap());
    assert!(matches!(
        stream_lease(&user, None).await,
        Err(AcquireError::LimitExceeded(_))
    ));

    // An explicit limiter is used instead of the global one.
    let own = Arc::new(MemoryLeaseStore::new(lease_config));
    assert_eq!(get_active_streams(&user, Some(own.clone())).await.unwrap(), 0);
    drop(stream_lease(&user, Some(own)).await.unwrap());

    a.release_async().await.unwrap();
    b.release_async().await.unwrap();
    assert_eq!(get_active_streams(&user, None).await.unwrap(), 0);
    assert!(streaming().store.is_some());
}
