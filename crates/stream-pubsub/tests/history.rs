//! History, resume and replay on a standalone Redis and on the Redis Cluster.

mod common;

use std::time::Duration;

use serde_json::{Map, json};
use stream_core::conformance::broker::{assert_ends, assert_quiet, numbered, publish_all, publish_each, take};
use stream_core::conformance::unique_channel;
use stream_core::{
    ChannelConfig, ChannelId, ChannelRegistry, Event, EventId, EventPublisher, EventSubscriber, EventType, UserId,
};
use stream_pubsub::{ConnectError, RedisBroker, RedisSource, redis};

fn ids(events: &[Event]) -> Vec<EventId> {
    events.iter().map(|e| e.id).collect()
}

/// A worker that emits everything before the browser subscribes loses nothing.
async fn publish_before_subscribe_loses_nothing(broker: &RedisBroker) {
    let ch = unique_channel("early");
    let mut sent: Vec<Event> = (0..100).map(|n| numbered(&ch, n)).collect();
    publish_each(broker, &mut sent).await;
    let mut sub = broker.subscribe(&ch, None).await.expect("subscribe");
    let got = take(&mut sub, 100).await;
    assert_eq!(ids(&got), ids(&sent));
    assert_eq!(got[42].payload["n"], json!(42));
    let live = broker.publish(&numbered(&ch, 100)).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, live);
    assert_quiet(&mut sub).await;
}

/// A reconnecting client resumes right after its Last-Event-ID, then goes live.
async fn resume_from_a_mid_stream_id(broker: &RedisBroker) {
    let ch = unique_channel("resume");
    let mut sent: Vec<Event> = (0..50).map(|n| numbered(&ch, n)).collect();
    publish_all(broker, &mut sent[..30]).await;
    publish_each(broker, &mut sent[30..]).await;
    let mut sub = broker.subscribe(&ch, Some(sent[24].id)).await.expect("subscribe");
    assert_eq!(ids(&take(&mut sub, 25).await), ids(&sent[25..]));
    assert_quiet(&mut sub).await;
    let done = Event::done(ch.clone(), true, Map::new()).expect("done");
    let done = broker.publish(&done).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, done);
    assert_ends(&mut sub).await;
}

/// After done: the full replay then the end; a resume at or past done is finished (204).
async fn replay_after_done(broker: &RedisBroker) {
    let ch = unique_channel("replay");
    let mut sent: Vec<Event> = (0..10).map(|n| numbered(&ch, n)).collect();
    sent.push(Event::done(ch.clone(), false, Map::new()).expect("done"));
    publish_all(broker, &mut sent).await;
    // Events after done stay in history but no subscriber gets past done.
    broker.publish(&numbered(&ch, 99)).await.expect("publish");

    let mut full = broker.subscribe(&ch, None).await.expect("subscribe");
    assert!(!full.is_finished());
    let got = take(&mut full, 11).await;
    assert_eq!(ids(&got), ids(&sent));
    assert_eq!(got[10].kind, EventType::Done);
    assert_eq!(got[10].payload["success"], json!(false));
    assert_ends(&mut full).await;

    let mut mid = broker.subscribe(&ch, Some(sent[5].id)).await.expect("subscribe");
    assert_eq!(ids(&take(&mut mid, 5).await), ids(&sent[6..]));
    assert_ends(&mut mid).await;

    for after in [sent[10].id, EventId::generate()] {
        let fin = broker.subscribe(&ch, Some(after)).await.expect("subscribe");
        assert!(fin.is_finished(), "a subscription at or after done is finished");
    }
    assert_eq!(
        broker.local_channel_count(),
        0,
        "finished and dropped subscriptions leave no channel behind"
    );
}

/// One batch across channels: one round trip, each channel in order, control events skipped.
async fn a_batch_across_channels(broker: &RedisBroker) {
    let (a, b) = (unique_channel("batch-a"), unique_channel("batch-b"));
    let mut sub_a = broker.subscribe(&a, None).await.expect("subscribe");
    let mut sub_b = broker.subscribe(&b, None).await.expect("subscribe");
    let gap = Event::new(a.clone(), EventType::Gap, Map::new()).expect("gap");
    let ping = Event::new(b.clone(), EventType::Ping, Map::new()).expect("ping");
    let batch = vec![
        numbered(&a, 0),
        numbered(&a, 1),
        numbered(&b, 0),
        gap,
        numbered(&a, 2),
        ping,
        numbered(&b, 1),
    ];
    let given = broker.publish_batch(&batch).await.expect("publish batch");
    let batch: Vec<Event> = batch
        .into_iter()
        .zip(given)
        .map(|(mut e, id)| {
            e.id = id;
            e
        })
        .collect();
    let want_a = [batch[0].id, batch[1].id, batch[4].id];
    let want_b = [batch[2].id, batch[6].id];
    assert_eq!(ids(&take(&mut sub_a, 3).await), want_a);
    assert_eq!(ids(&take(&mut sub_b, 2).await), want_b);
    assert_quiet(&mut sub_a).await;
    assert_quiet(&mut sub_b).await;
    // A control event alone publishes nothing at all.
    broker
        .publish(&Event::new(a.clone(), EventType::Ping, Map::new()).expect("ping"))
        .await
        .expect("publish");
    assert_quiet(&mut sub_a).await;
}

/// The history is capped (approximately: `MAXLEN ~`) and expires; the keys share a hash tag.
async fn history_is_capped_and_expires(broker: &RedisBroker, admin_url: &str) {
    let ch = unique_channel("cap");
    let mut sent: Vec<Event> = (0..700).map(|n| numbered(&ch, n)).collect();
    for chunk in sent.chunks_mut(100) {
        publish_all(broker, chunk).await;
    }
    let mut conn = common::admin(admin_url).await;
    let prefix = &broker.config().key_prefix;
    let hist = format!("{prefix}{{{ch}}}:h");
    let done_key = format!("{prefix}{{{ch}}}:d");
    // One entry per chunk of a publish call, its events one per line in `e`: count the events.
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(&hist)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .expect("XRANGE");
    let len = entries
        .iter()
        .flat_map(|(_, fields)| fields.iter().filter(|(k, _)| k == "e"))
        .map(|(_, body)| body.lines().count())
        .sum::<usize>();
    let max = broker.config().history_max_len;
    assert!(
        len >= max && len < 700,
        "history length {len} should be trimmed to about {max}"
    );
    // The done marker is written with the done event and expires with the history.
    let done = Event::done(ch.clone(), true, Map::new()).expect("done");
    let done = broker.publish(&done).await.expect("publish");
    let marker: String = redis::cmd("GET")
        .arg(&done_key)
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(marker, done.to_string());
    let seq_key = format!("{prefix}{{{ch}}}:n");
    // TTLs are renewed once per tenth of the TTL, to the TTL plus that tenth: each key lives at
    // least the TTL after the last event, and at most a tenth more.
    for key in [&hist, &done_key, &seq_key] {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(&mut conn).await.expect("PTTL");
        assert!(
            ttl > 54_000 && ttl <= 66_000,
            "{key} should expire within the history TTL and a tenth, PTTL {ttl}"
        );
    }
    // The newest events are all kept, so a late subscriber gets the tail.
    let mut sub = broker.subscribe(&ch, Some(sent[649].id)).await.expect("subscribe");
    assert_eq!(ids(&take(&mut sub, 50).await), ids(&sent[650..]));
}

/// Redis lost a channel's history (evicted, say) while its owner record stayed: a resume is told
/// at once with a `gap` (its size unknown), and then gets the channel's next events.
async fn a_lost_history_is_announced(broker: &RedisBroker, admin_url: &str) {
    let ch = unique_channel("lost");
    let owner = UserId::new("owner").expect("user id");
    broker
        .register(&ch, &owner, Duration::from_secs(60))
        .await
        .expect("register");
    let mut sent: Vec<Event> = (0..5).map(|n| numbered(&ch, n)).collect();
    publish_all(broker, &mut sent).await;
    let prefix = &broker.config().key_prefix;
    let mut conn = common::admin(admin_url).await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{prefix}{{{ch}}}:h"))
        .arg(format!("{prefix}{{{ch}}}:n"))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let mut sub = broker.subscribe(&ch, Some(sent[2].id)).await.expect("subscribe");
    let gap = take(&mut sub, 1).await.remove(0);
    assert_eq!(gap.kind, EventType::Gap, "{gap:?}");
    assert!(gap.payload.get("missed").is_none(), "the size of the loss is unknown");
    let next = broker.publish(&numbered(&ch, 5)).await.expect("publish");
    assert_eq!(take(&mut sub, 1).await[0].id, next, "then the channel goes on, once");
    assert_quiet(&mut sub).await;
}

/// Redis lost a channel's sequence state alone (evicted) while its history stayed: the next
/// publish goes on from the history's last entry, so ids keep their order and a reader sees one
/// unbroken sequence, with no gap.
async fn a_lost_sequence_state_goes_on_from_the_history(broker: &RedisBroker, admin_url: &str) {
    let ch = unique_channel("state");
    let mut sent: Vec<Event> = (0..5).map(|n| numbered(&ch, n)).collect();
    publish_all(broker, &mut sent).await;
    let mut conn = common::admin(admin_url).await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}{{{ch}}}:n", broker.config().key_prefix))
        .query_async(&mut conn)
        .await
        .expect("DEL");
    let mut next = numbered(&ch, 5);
    next.id = broker.publish(&next).await.expect("publish");
    assert_eq!(next.id.sequence(), Some(6), "the sequence goes on");
    assert!(next.id > sent[4].id);
    sent.push(next);
    let mut sub = broker.subscribe(&ch, Some(sent[1].id)).await.expect("subscribe");
    assert_eq!(ids(&take(&mut sub, 4).await), ids(&sent[2..]), "no gap, no duplicate");
    assert_quiet(&mut sub).await;
}

/// A channel's history entries as Redis holds them: each entry's id and its fields.
async fn history_entries(
    conn: &mut redis::aio::MultiplexedConnection,
    broker: &RedisBroker,
    ch: &ChannelId,
) -> Vec<(String, Vec<(String, String)>)> {
    redis::cmd("XRANGE")
        .arg(format!("{}{{{ch}}}:h", broker.config().key_prefix))
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE")
}

/// The sequence state in each form it was ever written in (`<ms>:<seq>`, then with the renewal
/// time, then with the epoch), with its millisecond ahead of the server's clock: the next publish
/// goes on with the next sequence number, never takes an earlier millisecond, and writes the state
/// in today's form (`<ms>:<seq>:<renewed>:<epoch>`, the epoch being the old last millisecond when
/// the state had none).
async fn every_form_of_the_sequence_state_is_read(broker: &RedisBroker, admin_url: &str) {
    let mut conn = common::admin(admin_url).await;
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        + 3_600_000;
    for (form, state, epoch) in [
        ("ms:seq", format!("{ahead}:7"), ahead),
        ("ms:seq:renewed", format!("{ahead}:7:{ahead}"), ahead),
        (
            "ms:seq:renewed:epoch",
            format!("{ahead}:7:{ahead}:1700000000000"),
            1_700_000_000_000,
        ),
    ] {
        let ch = unique_channel("form");
        let key = format!("{}{{{ch}}}:n", broker.config().key_prefix);
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(&state)
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .expect("SET");
        let id = broker.publish(&numbered(&ch, 0)).await.expect("publish");
        assert_eq!(id.sequence(), Some(8), "{form}: the sequence goes on");
        assert_eq!(id.unix_ms(), ahead, "{form}: the millisecond never goes back");
        let now: String = redis::cmd("GET").arg(&key).query_async(&mut conn).await.expect("GET");
        let parts: Vec<&str> = now.split(':').collect();
        assert_eq!(parts.len(), 4, "{form}: today's form ({now})");
        assert_eq!(parts[..2], [ahead.to_string(), "8".into()], "{form}: {now}");
        assert_eq!(parts[3], epoch.to_string(), "{form}: the epoch ({now})");
        let stored = history_entries(&mut conn, broker, &ch).await;
        assert_eq!(stored.len(), 1, "{form}: one entry");
        assert_eq!(stored[0].0, format!("{epoch}-8"), "{form}: keyed <epoch>-<last seq>");
    }
}

/// The bytes that travel through Redis are the bytes of the SSE frame: the history entry holds
/// the JSON the publisher serialized after its id (so does the pub/sub message), and the frame's
/// `data:` is that, with `{"id":"<the id the script gave>` in front, framed once per process.
async fn frames_carry_the_stored_bytes(broker: &RedisBroker, admin_url: &str) {
    let ch = unique_channel("bytes");
    let mut sub = broker.subscribe(&ch, None).await.expect("subscribe");
    let mut other = broker.subscribe(&ch, None).await.expect("subscribe");
    let event = numbered(&ch, 0);
    let id = broker.publish(&event).await.expect("publish");
    let shared = sub.next_shared().await.expect("an event").expect("no error");
    let again = other.next_shared().await.expect("an event").expect("no error");
    assert_eq!(shared.frame().as_ptr(), again.frame().as_ptr(), "one frame for both");
    let mut conn = common::admin(admin_url).await;
    let entries = history_entries(&mut conn, broker, &ch).await;
    let field = |name: &str| &entries[0].1.iter().find(|(k, _)| k == name).expect("the field").1;
    let stored = field("e");
    let sent = event.to_json();
    assert_eq!(
        stored.as_str(),
        &sent[sent.find("\",").expect("the id's end")..],
        "the publisher's bytes"
    );
    assert_eq!(
        field("i"),
        &format!("{}:{}", id.unix_ms(), id.sequence().expect("a broker id"))
    );
    assert_eq!(
        shared.frame().as_ref(),
        format!("id: {id}\ndata: {{\"id\":\"{id}{stored}\n\n").as_bytes(),
        "the frame is the stored JSON behind the id the script gave"
    );
}

fn small_history() -> ChannelConfig {
    ChannelConfig {
        history_max_len: 200,
        history_ttl: Duration::from_secs(60),
        ..ChannelConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_history_resume_and_replay() {
    let broker = common::standalone(ChannelConfig::default()).await;
    publish_before_subscribe_loses_nothing(&broker).await;
    resume_from_a_mid_stream_id(&broker).await;
    replay_after_done(&broker).await;
    a_batch_across_channels(&broker).await;
    a_lost_history_is_announced(&broker, &common::redis_url()).await;
    a_lost_sequence_state_goes_on_from_the_history(&broker, &common::redis_url()).await;
    every_form_of_the_sequence_state_is_read(&broker, &common::redis_url()).await;
    frames_carry_the_stored_bytes(&broker, &common::redis_url()).await;
    let capped = common::standalone(small_history()).await;
    history_is_capped_and_expires(&capped, &common::redis_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_history_resume_and_replay() {
    let broker = common::cluster(ChannelConfig::default()).await;
    publish_before_subscribe_loses_nothing(&broker).await;
    resume_from_a_mid_stream_id(&broker).await;
    replay_after_done(&broker).await;
    a_batch_across_channels(&broker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_keys_of_a_channel_share_one_slot() {
    let broker = common::cluster(small_history()).await;
    let ch = unique_channel("slot");
    broker.publish(&numbered(&ch, 0)).await.expect("publish");
    let prefix = &broker.config().key_prefix;
    let node = &common::cluster_nodes()[0];
    let mut conn = common::admin(node).await;
    let mut slots = Vec::new();
    for name in [
        format!("{prefix}{{{ch}}}"),
        format!("{prefix}{{{ch}}}:h"),
        format!("{prefix}{{{ch}}}:d"),
        format!("{prefix}{{{ch}}}:n"),
        format!("{prefix}{{{ch}}}:l"),
        format!("{prefix}{{{ch}}}:owner"),
    ] {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&name)
            .query_async(&mut conn)
            .await
            .expect("CLUSTER KEYSLOT");
        slots.push(slot);
    }
    assert!(slots.windows(2).all(|w| w[0] == w[1]), "slots {slots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused() {
    let bad_prefix = ChannelConfig {
        key_prefix: "app:{x}:".into(),
        ..ChannelConfig::default()
    };
    let err = RedisBroker::connect(&common::redis_url(), bad_prefix)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("braces"), "{err}");
    let no_nodes: [&str; 0] = [];
    assert!(
        RedisBroker::connect(RedisSource::cluster(no_nodes), ChannelConfig::default())
            .await
            .is_err()
    );
    // Nothing listens on port 1: connecting fails instead of returning a broker that never works.
    assert!(matches!(
        RedisBroker::connect("redis://127.0.0.1:1/", ChannelConfig::default()).await,
        Err(ConnectError::Connect { .. })
    ));
    assert!(matches!(
        RedisBroker::connect("not a url", ChannelConfig::default()).await,
        Err(ConnectError::InvalidConfig(_))
    ));
    // The subscriber connection needs URLs: a pool alone is refused, and so is a pool of the
    // other kind.
    let pool = stream_pubsub::deadpool_redis::Config::from_url(common::redis_url())
        .create_pool(Some(stream_pubsub::deadpool_redis::Runtime::Tokio1))
        .expect("pool");
    let err = RedisBroker::connect(pool.clone(), ChannelConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::InvalidConfig(m) if m.contains(".pool()")),
        "{err}"
    );
    let err = RedisBroker::builder(RedisSource::cluster(common::cluster_nodes()))
        .pool(pool)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::InvalidConfig(m) if m.contains("cluster_pool")),
        "{err}"
    );
}
