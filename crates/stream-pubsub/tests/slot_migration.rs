//! A channel's slot moves to another node mid-stream (`CLUSTER SETSLOT … MIGRATING/IMPORTING`,
//! `MIGRATE`, `CLUSTER SETSLOT … NODE`), as a resharding does. The old owner drops the sharded
//! subscription (`sunsubscribe` push); the broker subscribes the channel again on the new owner
//! and refills from the history, which moved with the slot. The subscriber gets every event once,
//! in order, and the publisher follows the slot (`MOVED`).
//!
//! It moves a slot of the shared test cluster, so it has a binary of its own; the cluster stays
//! complete (every slot served) whatever the outcome.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stream_core::conformance::broker::{numbered, publish_all, take};
use stream_core::conformance::unique_channel;
use stream_core::{ChannelConfig, Event, EventId, EventPublisher, EventSubscriber};
use stream_pubsub::redis::{self, aio::MultiplexedConnection};

/// One primary of the cluster: its id, URL and connection.
struct Node {
    id: String,
    url: String,
    conn: MultiplexedConnection,
}

/// The primaries by id, from `CLUSTER NODES`.
async fn primaries() -> Vec<Node> {
    let mut by_addr = HashMap::new();
    for url in common::cluster_nodes() {
        let mut conn = common::admin(&url).await;
        let myid: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query_async(&mut conn)
            .await
            .expect("CLUSTER MYID");
        by_addr.insert(myid, (url, conn));
    }
    let mut any = by_addr.values().next().expect("a node").1.clone();
    let table: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut any)
        .await
        .expect("CLUSTER NODES");
    let mut nodes = Vec::new();
    for line in table.lines() {
        let id = line.split_whitespace().next().expect("node id");
        if line.contains("master")
            && let Some((url, conn)) = by_addr.remove(id)
        {
            nodes.push(Node {
                id: id.to_owned(),
                url,
                conn,
            });
        }
    }
    assert!(nodes.len() >= 2, "the test cluster needs two primaries: {table}");
    nodes
}

async fn owner_of(nodes: &mut [Node], slot: u16) -> usize {
    // Each range: its start, its end, its primary, then its replicas (if the cluster has any).
    let slots: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut nodes[0].conn)
        .await
        .expect("CLUSTER SLOTS");
    for range in slots {
        let [start, end, primary, ..] = &range[..] else {
            panic!("a CLUSTER SLOTS range: {range:?}");
        };
        let start: u16 = redis::from_redis_value(start.clone()).expect("start");
        let end: u16 = redis::from_redis_value(end.clone()).expect("end");
        let primary: Vec<redis::Value> = redis::from_redis_value(primary.clone()).expect("primary");
        if (start..=end).contains(&slot) {
            let port: u16 = redis::from_redis_value(primary[1].clone()).expect("port");
            return nodes
                .iter()
                .position(|n| n.url.trim_end_matches('/').ends_with(&format!(":{port}")))
                .expect("the owner is one of the configured nodes");
        }
    }
    panic!("slot {slot} has no owner");
}

/// Moves `slot` with its keys from `nodes[from]` to `nodes[to]`, as `redis-cli --cluster
/// reshard` does.
async fn move_slot(nodes: &mut [Node], slot: u16, from: usize, to: usize) {
    let (src_id, dst_id) = (nodes[from].id.clone(), nodes[to].id.clone());
    let setslot = |state: &str, id: &str| {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SETSLOT").arg(slot).arg(state).arg(id);
        cmd
    };
    let _: () = setslot("IMPORTING", &src_id)
        .query_async(&mut nodes[to].conn)
        .await
        .expect("IMPORTING");
    let _: () = setslot("MIGRATING", &dst_id)
        .query_async(&mut nodes[from].conn)
        .await
        .expect("MIGRATING");
    let dst = nodes[to]
        .url
        .trim_end_matches('/')
        .rsplit("//")
        .next()
        .expect("host:port")
        .to_owned();
    let (host, port) = dst.rsplit_once(':').expect("host:port");
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query_async(&mut nodes[from].conn)
            .await
            .expect("GETKEYSINSLOT");
        if keys.is_empty() {
            break;
        }
        let _: () = redis::cmd("MIGRATE")
            .arg(host)
            .arg(port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query_async(&mut nodes[from].conn)
            .await
            .expect("MIGRATE");
    }
    // The new owner first, then the old one (which then drops the slot's shard subscriptions),
    // then the rest.
    let order: Vec<usize> = [to, from]
        .into_iter()
        .chain((0..nodes.len()).filter(|i| *i != to && *i != from))
        .collect();
    for i in order {
        let _: () = setslot("NODE", &dst_id)
            .query_async(&mut nodes[i].conn)
            .await
            .expect("SETSLOT NODE");
    }
}

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_keeps_streaming_when_its_slot_moves_to_another_node() {
    let broker = common::cluster(ChannelConfig::default()).await;
    let publisher = common::cluster(ChannelConfig::default()).await;
    let ch = unique_channel("slot");
    let mut sub = broker.subscribe(&ch, None).await.expect("subscribe");
    let mut before: Vec<Event> = (0..5).map(|n| numbered(&ch, n)).collect();
    publish_all(&publisher, &mut before).await;
    assert_eq!(ids(&take(&mut sub, 5).await), ids(&before));

    let mut nodes = primaries().await;
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(format!("{{{ch}}}"))
        .query_async(&mut nodes[0].conn)
        .await
        .expect("CLUSTER KEYSLOT");
    let from = owner_of(&mut nodes, slot).await;
    let to = (from + 1) % nodes.len();
    move_slot(&mut nodes, slot, from, to).await;
    assert_eq!(owner_of(&mut nodes, slot).await, to, "the slot moved");
    // The broker's subscriber follows the channel to its new owner.
    let channel = format!("stream:{{{ch}}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, count): (String, u64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(&channel)
            .query_async(&mut nodes[to].conn)
            .await
            .expect("PUBSUB SHARDNUMSUB");
        if count == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription did not move to the new owner"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut after: Vec<Event> = (5..10).map(|n| numbered(&ch, n)).collect();
    after.push(Event::done(ch.clone(), true, serde_json::Map::new()).expect("done"));
    for event in &mut after {
        event.id = publisher.publish(event).await.expect("publish after the move");
    }
    assert_eq!(
        ids(&take(&mut sub, after.len()).await),
        ids(&after),
        "lost or repeated events"
    );

    // A new subscriber, on the new owner, replays the whole channel.
    let mut late = broker.subscribe(&ch, None).await.expect("subscribe after the move");
    let all: Vec<Event> = before.iter().chain(&after).cloned().collect();
    assert_eq!(ids(&take(&mut late, all.len()).await), ids(&all));
}
