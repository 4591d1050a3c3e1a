//! A thousand subscribers in one process share the broker's one subscriber connection; checked
//! with `CLIENT LIST` (the connection is found by its `CLIENT SETNAME`). Every connection this
//! process has open to the server is counted too ([`common::own`]): the subscriber connection and
//! the command connection, not one per subscription. The standalone and the cluster test use
//! different servers, so neither sees the other's connections.

mod common;

use common::ClientInfo;
use common::own::Inspector;
use futures_util::future::join_all;
use stream_core::conformance::broker::{numbered, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, ChannelId, Event, EventPublisher, EventSubscriber, Subscription};
use stream_pubsub::RedisBroker;

const SUBSCRIBERS: usize = 1000;
const CHANNELS: usize = 100;

async fn subscribe_all(broker: &RedisBroker) -> (Vec<ChannelId>, Vec<Subscription>) {
    let channels: Vec<ChannelId> = (0..CHANNELS).map(|_| unique_channel("thousand")).collect();
    let subs = join_all((0..SUBSCRIBERS).map(|n| broker.subscribe(&channels[n % CHANNELS], None))).await;
    let subs: Vec<Subscription> = subs.into_iter().map(|s| s.expect("subscribe")).collect();
    assert_eq!(broker.local_channel_count(), CHANNELS);
    (channels, subs)
}

/// Whether `own` (the connections of this process to one server) is the broker's subscriber
/// connection, named `name`, and one command connection, which is not a pub/sub one.
fn subscriber_and_command(own: &[ClientInfo], name: &str) -> bool {
    let (subscriber, others): (Vec<&ClientInfo>, Vec<&ClientInfo>) = own.iter().partition(|c| c.name == name);
    subscriber.len() == 1 && others.len() == 1 && others[0].sub + others[0].ssub == 0 && !others[0].flags.contains('P')
}

fn ids(own: &[ClientInfo]) -> Vec<u64> {
    let mut ids: Vec<u64> = own.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

/// Every subscriber gets its channel's event.
async fn everyone_receives(broker: &RedisBroker, channels: &[ChannelId], subs: Vec<Subscription>) {
    let sent: Vec<Event> = channels.iter().map(|ch| numbered(ch, 0)).collect();
    let given = broker.publish_batch(&sent).await.expect("publish batch");
    let readers = subs.into_iter().enumerate().map(|(n, mut sub)| {
        let want = given[n % CHANNELS];
        tokio::spawn(async move { assert_eq!(take(&mut sub, 1).await[0].id, want) })
    });
    for reader in join_all(readers).await {
        reader.expect("reader");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_share_one_standalone_connection() {
    let url = common::redis_url();
    let name = common::unique_name("sp-1000");
    let mut inspector = Inspector::connect(&url).await;
    inspector
        .wait_own("none before the broker", <[ClientInfo]>::is_empty)
        .await;
    let broker = common::standalone_named(ChannelConfig::default(), &name).await;
    let (channels, subs) = subscribe_all(&broker).await;

    let want = "the subscriber connection and one command connection";
    let own = inspector.wait_own(want, |own| subscriber_and_command(own, &name)).await;
    let conns: Vec<&ClientInfo> = own.iter().filter(|c| c.name == name).collect();
    assert_eq!(conns.len(), 1, "exactly one subscriber connection: {conns:?}");
    assert_eq!(
        conns[0].sub, CHANNELS as u64,
        "one SUBSCRIBE per channel, not per subscriber"
    );
    assert!(
        conns[0].flags.contains('P'),
        "it is a pub/sub connection: {:?}",
        conns[0]
    );

    everyone_receives(&broker, &channels, subs).await;
    let after = inspector.wait_own(want, |own| subscriber_and_command(own, &name)).await;
    assert_eq!(
        ids(&after),
        ids(&own),
        "publishing and reading opened no other connection"
    );

    // All subscriptions are dropped: the channels are unsubscribed, the connection stays.
    assert_eq!(broker.local_channel_count(), 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let conns = common::named(&url, &name).await;
        assert_eq!(conns.len(), 1, "the subscriber connection stays: {conns:?}");
        if conns[0].sub == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last subscriber leaving should unsubscribe its channel: {conns:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_share_one_connection_per_cluster_node() {
    let nodes = common::cluster_nodes();
    let name = common::unique_name("sp-1000c");
    let mut inspectors = Vec::new();
    for node in &nodes {
        let mut inspector = Inspector::connect(node).await;
        inspector
            .wait_own("none before the broker", <[ClientInfo]>::is_empty)
            .await;
        inspectors.push(inspector);
    }
    let broker = common::cluster_named(ChannelConfig::default(), &name).await;
    let (channels, subs) = subscribe_all(&broker).await;

    // On every node: the subscriber's node connection (named) and the command connection's.
    let want = "the subscriber's and the command connection's node connections";
    let mut total = 0;
    let mut per_node = Vec::new();
    for inspector in &mut inspectors {
        let own = inspector.wait_own(want, |own| subscriber_and_command(own, &name)).await;
        total += own.iter().filter(|c| c.name == name).map(|c| c.ssub).sum::<u64>();
        per_node.push(own);
    }
    assert_eq!(
        total, CHANNELS as u64,
        "one SSUBSCRIBE per channel across the nodes ({per_node:?})"
    );

    everyone_receives(&broker, &channels, subs).await;
    for (inspector, own) in inspectors.iter_mut().zip(&per_node) {
        let after = inspector.wait_own(want, |own| subscriber_and_command(own, &name)).await;
        assert_eq!(
            ids(&after),
            ids(own),
            "publishing and reading opened no other connection"
        );
    }
}
