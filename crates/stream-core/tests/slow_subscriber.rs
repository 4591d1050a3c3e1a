//! The memory broker's slow-subscriber policy: refill from history, `gap` for what history lost.

use futures_util::StreamExt;
use stream_core::conformance::broker::{numbered, publish_each, take};
use stream_core::memory::MemoryBroker;
use stream_core::{ChannelConfig, ChannelId, Event, EventSubscriber, EventType, Subscription};

/// Subscribes with a 4-event queue, then publishes 50 events without reading any.
async fn flood(history_max_len: usize) -> (Subscription, Vec<Event>) {
    let broker = MemoryBroker::new(ChannelConfig {
        subscriber_queue: 4,
        history_max_len,
        ..ChannelConfig::default()
    });
    let ch = ChannelId::generate();
    let slow = broker.subscribe(&ch, None).await.unwrap();
    let mut sent: Vec<_> = (0..50).map(|n| numbered(&ch, n)).collect();
    publish_each(&broker, &mut sent).await;
    (slow, sent)
}

#[tokio::test]
async fn a_lagging_subscriber_is_refilled_from_history() {
    let (mut slow, sent) = flood(100).await;
    let got = take(&mut slow, 50).await;
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        sent.iter().map(|e| e.id).collect::<Vec<_>>()
    );
}

/// The subscriber gets what it queued (4 events), one `gap` for what the history lost meanwhile,
/// then what the history still holds.
#[tokio::test]
async fn events_lost_from_history_are_reported_with_one_gap() {
    let (mut slow, sent) = flood(10).await;
    let queued = take(&mut slow, 4).await;
    assert_eq!(
        queued.iter().map(|e| e.id).collect::<Vec<_>>(),
        sent[..4].iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let gap = slow.next().await.unwrap().unwrap();
    assert_eq!(gap.kind, EventType::Gap);
    assert_eq!(gap.payload["missed"], 36);
    let rest = take(&mut slow, 10).await;
    assert_eq!(
        rest.iter().map(|e| e.id).collect::<Vec<_>>(),
        sent[40..].iter().map(|e| e.id).collect::<Vec<_>>()
    );
}
