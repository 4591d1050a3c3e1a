//! The seed-style process-wide functions, and archiving through `PersistingPublisher`.

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::Map;
use stream_core::compat::{
    self, can_start_stream, get_active_streams, get_event_storage, init_event_store, init_lease_store, init_streaming,
    stream_lease, stream_lease_sync,
};
use stream_core::memory::{MemoryBroker, MemoryEventStore, MemoryLeaseStore};
use stream_core::sse::SseReply;
use stream_core::{
    AcquireError, ChannelConfig, EventQuery, EventStore, LeaseStore, LogLevel, PersistingPublisher, StreamContext,
    StreamLeaseConfig, Streaming, UserId, get_default, set_global_default, with_default,
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
    // Scoped backends are seen inside the scope only, and do not count as installed.
    let scoped = Streaming::in_memory(ChannelConfig::default(), lease_config.clone());
    let scoped_leases = scoped.leases.clone();
    with_default(scoped, async {
        assert!(Arc::ptr_eq(&get_default().leases, &scoped_leases));
    })
    .await;
    assert!(!Arc::ptr_eq(&get_default().leases, &scoped_leases));

    let installed = Streaming::builder()
        .leases(MemoryLeaseStore::new(lease_config.clone()))
        .store(MemoryEventStore::default())
        .build();
    init_streaming(installed).expect("the first installation");
    // Set once: a second installation, of the whole or of a part, fails and changes nothing.
    let before = get_default().leases;
    let err = set_global_default(Streaming::builder().build()).expect_err("a second installation");
    assert!(err.to_string().contains("already installed"), "{err}");
    let other: Arc<dyn LeaseStore> = Arc::new(MemoryLeaseStore::default());
    init_lease_store(other).expect_err("a lease store after the whole");
    init_event_store(Arc::new(MemoryEventStore::default())).expect_err("a store after the whole");
    assert!(Arc::ptr_eq(&get_default().leases, &before));
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
    assert!(get_event_storage().is_some());

    // The seed's response names answer from the process-wide backends.
    let channel = stream_core::ChannelId::generate();
    let emitter = get_default().emitter(channel.clone());
    emitter.log("through compat", LogLevel::Info).await.unwrap();
    emitter.complete(true, None, Map::new()).await.unwrap();
    let frames = match compat::sse_response_with_lease(channel, user.clone()).await.unwrap() {
        SseReply::Stream(body) => body.map(Result::unwrap).collect::<Vec<_>>().await,
        SseReply::Finished => panic!("a fresh client gets the stream"),
    };
    let text: String = frames.iter().map(|f| String::from_utf8_lossy(f)).collect();
    assert!(text.contains("through compat") && text.contains("\"done\""), "{text}");
    let events = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
        stream_core::Event::new(
            stream_core::ChannelId::generate(),
            stream_core::EventType::Data,
            Map::new(),
        )
        .unwrap(),
    )]);
    assert!(matches!(
        compat::direct_sse_response(events, Some(user.clone())).await,
        Ok(SseReply::Stream(_))
    ));
}
