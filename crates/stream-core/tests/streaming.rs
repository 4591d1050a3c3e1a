//! `Streaming::builder`, and publishing through a bundle.

use serde_json::{Map, json};
use stream_core::memory::{MemoryBroker, MemoryLeaseStore};
use stream_core::{ChannelConfig, ChannelId, EmitError, EventType, LogLevel, StreamLeaseConfig, Streaming, UserId};

fn object(value: serde_json::Value) -> Map<String, serde_json::Value> {
    value.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_bundle_from_the_builder_publishes_and_streams() {
    let broker = MemoryBroker::default();
    let streaming = Streaming::builder()
        .broker(broker.clone())
        .leases(MemoryLeaseStore::new(StreamLeaseConfig {
            limit: 1,
            ..StreamLeaseConfig::default()
        }))
        .build();
    assert!(streaming.store.is_none(), "no store unless one is given");
    assert_eq!(streaming.leases.config().limit, 1);

    let channel = ChannelId::generate();
    let first = streaming
        .publish(&channel, EventType::Data, object(json!({"token": "Hel"})))
        .await
        .unwrap();
    let emitter = streaming.emitter(channel.clone()).with_heartbeat(None);
    let second = emitter.log("lo", LogLevel::Info).await.unwrap();
    assert!(second > first);
    assert_eq!(emitter.channel_id(), &channel);

    // The broker given is the one used: a subscription on it sees both events.
    let mut sub = stream_core::EventSubscriber::subscribe(&broker, &channel, None)
        .await
        .unwrap();
    let got = [
        sub.next_shared().await.unwrap().unwrap(),
        sub.next_shared().await.unwrap().unwrap(),
    ];
    assert_eq!([got[0].id(), got[1].id()], [first, second]);
    assert!(got[0].event().context.is_none(), "an empty context is left out");
}

#[tokio::test]
async fn publish_refuses_control_types_and_reserved_keys() {
    let streaming = Streaming::builder().build();
    let channel = ChannelId::generate();
    assert!(matches!(
        streaming.publish(&channel, EventType::Ping, Map::new()).await,
        Err(EmitError::ControlType(_))
    ));
    assert!(matches!(
        streaming
            .publish(&channel, EventType::Data, object(json!({"id": "x"})))
            .await,
        Err(EmitError::ReservedKey(_))
    ));
}

#[tokio::test]
async fn everything_left_out_defaults_to_memory() {
    let streaming = Streaming::builder()
        .channel_config(ChannelConfig {
            ping_interval: std::time::Duration::from_secs(7),
            ..ChannelConfig::default()
        })
        .build();
    assert_eq!(streaming.channel_config.ping_interval.as_secs(), 7);
    let user = UserId::new("u").unwrap();
    let lease = stream_core::StreamLease::acquire(streaming.leases.clone(), user)
        .await
        .unwrap();
    assert!(lease.is_active());
}
