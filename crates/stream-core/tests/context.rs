//! StreamContext: serialization, emitting, closing, and the blocking form.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Map, Value, json};
use stream_core::conformance::broker::take;
use stream_core::memory::MemoryBroker;
use stream_core::{
    ChannelRegistry, EmitError, EventSubscriber, EventType, LogLevel, OwnerRecord, SseEmitter, StreamContext, UserId,
};

fn extra() -> Map<String, Value> {
    let v = json!({"ticket": "OPS-7", "attempt": 2, "tags": ["a", "b"], "nested": {"x": null, "y": 1.5}});
    v.as_object().unwrap().clone()
}

#[test]
fn to_dict_from_dict_round_trips_exactly_with_extra_fields() {
    let ctx = StreamContext::create(
        Some("user_123"),
        Some("myapp"),
        Some("prod"),
        Some("api"),
        true,
        extra(),
    );
    let dict = ctx.to_dict();
    assert_eq!(dict["workspace_id"], "user_123");
    assert_eq!(dict["extra"]["ticket"], "OPS-7");
    let back = StreamContext::from_dict(dict.clone()).unwrap();
    assert_eq!(back, ctx);
    assert_eq!(back.to_dict(), dict);
    let via_json = StreamContext::from_json(&ctx.to_json()).unwrap();
    assert_eq!(via_json, ctx);
    // Through a job queue's JSON text and back, twice.
    let text = serde_json::to_string(&Value::Object(dict)).unwrap();
    let again: Map<String, Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(StreamContext::from_dict(again).unwrap().to_json(), ctx.to_json());
}

#[test]
fn from_dict_refuses_bad_input_clearly() {
    let mut dict = StreamContext::builder().build().to_dict();
    dict.insert("channel_id".into(), json!("bad id\n"));
    let err = StreamContext::from_dict(dict).unwrap_err().to_string();
    assert!(err.contains("channel id"), "{err}");
    let mut dict = StreamContext::builder().build().to_dict();
    dict.insert("surprise".into(), json!(1));
    assert!(StreamContext::from_dict(dict).is_err());
}

#[test]
fn namespace_and_debug_context() {
    let ctx = StreamContext::builder()
        .workspace_id("ws")
        .project("p")
        .env("prod")
        .service("api")
        .build();
    assert_eq!(ctx.namespace(), "ws_p_prod_api");
    assert_eq!(StreamContext::builder().project("p").build().namespace(), "-_p_-_-");
    let debug = ctx.debug_context();
    assert_eq!(debug.env.as_deref(), Some("prod"));
}

#[tokio::test]
async fn emitter_sends_every_event_type_then_closes() {
    let broker = Arc::new(MemoryBroker::default());
    let ctx = StreamContext::builder()
        .workspace_id("ws")
        .project("p")
        .persist_events(true)
        .build();
    let channel = ctx.channel_id().clone();
    let mut sub = broker.subscribe(&channel, None).await.unwrap();
    let em = ctx.bind(broker.clone());
    em.log("Starting", LogLevel::Info).await.unwrap();
    em.progress(140, Some("building"), Some("clamped")).await.unwrap();
    em.error("retrying", Some(json!({"attempt": 2}))).await.unwrap();
    em.data(json!({"k": "v"}).as_object().unwrap().clone()).await.unwrap();
    em.deploy_start("prod", 2).await.unwrap();
    em.deploy_success("10.0.0.1", "api-1", Some("http://x")).await.unwrap();
    em.deploy_failure("10.0.0.2", "timeout").await.unwrap();
    assert!(!em.is_closed());
    em.complete(true, None, json!({"deployment_id": "abc"}).as_object().unwrap().clone())
        .await
        .unwrap();
    assert!(em.is_closed());
    assert!(matches!(
        em.log("late", LogLevel::Info).await,
        Err(EmitError::Closed(_))
    ));
    assert!(matches!(
        em.complete(true, None, Map::new()).await,
        Err(EmitError::Closed(_))
    ));

    let got = take(&mut sub, 8).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "log",
            "progress",
            "error",
            "data",
            "deploy_start",
            "deploy_success",
            "deploy_failure",
            "done"
        ]
    );
    assert_eq!(got[0].payload["level"], "info");
    assert_eq!(got[1].payload["percent"], 100);
    assert_eq!(got[2].payload["details"]["attempt"], 2);
    assert_eq!(got[7].payload["deployment_id"], "abc");
    assert_eq!(got[7].payload["success"], true);
    assert!(got.iter().all(|e| e.persist));
    assert!(got.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(got[0].context.as_ref().unwrap().namespace, "ws_p_-_-");
    assert!(sub.next().await.is_none(), "the subscription ends after done");
}

/// An empty context puts no `context` on the wire: not even a namespace of dashes.
#[tokio::test]
async fn an_empty_context_is_left_out_of_the_events() {
    let broker = Arc::new(MemoryBroker::default());
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let mut sub = broker.subscribe(&channel, None).await.unwrap();
    let em = ctx.bind(broker.clone()).with_heartbeat(None);
    em.log("hello", LogLevel::Info).await.unwrap();
    let got = sub.next_shared().await.unwrap().unwrap();
    assert!(got.event().context.is_none());
    let frame = String::from_utf8(got.frame().to_vec()).unwrap();
    assert!(!frame.contains("\"context\""), "{frame}");
}

#[tokio::test]
async fn control_types_and_reserved_keys_are_refused() {
    let broker = Arc::new(MemoryBroker::default());
    let em = StreamContext::builder().build().bind(broker);
    assert!(matches!(
        em.emit(EventType::Ping, Map::new()).await,
        Err(EmitError::ControlType(_))
    ));
    let bad = json!({"id": "x"}).as_object().unwrap().clone();
    assert!(matches!(em.data(bad).await, Err(EmitError::ReservedKey(_))));
}

/// A publisher that fails its first `failures` publishes, then forwards.
struct Flaky {
    inner: Arc<MemoryBroker>,
    failures: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl stream_core::EventPublisher for Flaky {
    async fn publish(&self, event: &stream_core::Event) -> Result<stream_core::EventId, stream_core::PublishError> {
        use std::sync::atomic::Ordering;
        if self
            .failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(stream_core::PublishError::Backend("redis went away".into()));
        }
        self.inner.publish(event).await
    }
}

#[tokio::test]
async fn a_failed_complete_can_be_retried_and_the_stream_still_gets_done() {
    let broker = Arc::new(MemoryBroker::default());
    let publisher = Arc::new(Flaky {
        inner: broker.clone(),
        failures: 1.into(),
    });
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let em = ctx.bind(publisher);
    // A payload the envelope refuses, then a publisher error: neither closes the emitter.
    let bad = json!({"type": "x"}).as_object().unwrap().clone();
    assert!(matches!(
        em.complete(true, None, bad).await,
        Err(EmitError::ReservedKey(_))
    ));
    assert!(!em.is_closed());
    assert!(matches!(
        em.complete(true, None, Map::new()).await,
        Err(EmitError::Publish(_))
    ));
    assert!(!em.is_closed());
    em.complete(true, None, Map::new()).await.unwrap();
    assert!(em.is_closed());
    assert!(matches!(
        em.complete(true, None, Map::new()).await,
        Err(EmitError::Closed(_))
    ));
    let events = take(&mut broker.subscribe(&channel, None).await.unwrap(), 1).await;
    assert_eq!(events[0].kind, EventType::Done);
}

#[test]
fn blocking_emit_works_from_a_plain_thread_without_a_runtime() {
    let broker = Arc::new(MemoryBroker::default());
    let ctx = StreamContext::builder().project("p").build();
    let channel = ctx.channel_id().clone();
    let job = ctx.to_json();
    let publisher = broker.clone();
    std::thread::spawn(move || {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "no runtime on this thread"
        );
        let em = StreamContext::from_json(&job).unwrap().bind_blocking(publisher);
        em.log("from a thread", LogLevel::Info).unwrap();
        em.progress(50, Some("halfway"), None).unwrap();
        em.complete(true, None, Map::new()).unwrap();
        assert!(em.is_closed());
        assert!(em.log("late", LogLevel::Info).is_err());
    })
    .join()
    .unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut sub = broker.subscribe(&channel, None).await.unwrap();
        let got = take(&mut sub, 3).await;
        assert_eq!(got[0].message(), Some("from a thread"));
        assert_eq!(got[2].kind, EventType::Done);
    });
}

#[tokio::test]
async fn legacy_sse_emitter_publishes_to_its_own_channel() {
    let broker = Arc::new(MemoryBroker::default());
    let emitter = SseEmitter::new(broker.clone());
    emitter.log("Starting...", LogLevel::Info).await.unwrap();
    let mut sub = broker.subscribe(emitter.channel_id(), None).await.unwrap();
    assert_eq!(take(&mut sub, 1).await[0].message(), Some("Starting..."));
}

/// A publisher that forwards to a memory broker and records every heartbeat call.
struct Recording {
    inner: Arc<MemoryBroker>,
    beats: std::sync::Mutex<Vec<Option<std::time::Duration>>>,
}

#[async_trait::async_trait]
impl stream_core::EventPublisher for Recording {
    async fn publish(&self, event: &stream_core::Event) -> Result<stream_core::EventId, stream_core::PublishError> {
        self.inner.publish(event).await
    }
    async fn heartbeat(
        &self,
        channel: &stream_core::ChannelId,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), stream_core::PublishError> {
        self.beats.lock().unwrap().push(ttl);
        self.inner.heartbeat(channel, ttl).await
    }
}

#[test]
fn a_blocking_emitter_sends_heartbeats_from_its_own_thread() {
    use std::time::Duration;
    let broker = Arc::new(MemoryBroker::new(stream_core::ChannelConfig {
        heartbeat_interval: Some(Duration::from_millis(50)),
        ..Default::default()
    }));
    let recording = Arc::new(Recording {
        inner: broker.clone(),
        beats: std::sync::Mutex::new(Vec::new()),
    });
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let publisher = recording.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut sub = rt.block_on(broker.subscribe(&channel, None)).unwrap();
    let worker = std::thread::spawn(move || {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "no runtime on this thread"
        );
        let em = ctx
            .bind_blocking(publisher)
            .with_heartbeat(Some(Duration::from_millis(100)));
        em.log("started", LogLevel::Info).unwrap();
        // Quiet for many heartbeat lifetimes: the emitter's own thread keeps the record alive.
        std::thread::sleep(Duration::from_millis(1200));
        em.complete(true, None, Map::new()).unwrap();
    });
    let got = rt.block_on(take(&mut sub, 2));
    worker.join().unwrap();
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["log", "done"],
        "no producer_lost while the emitter lives: {got:?}"
    );
    assert_eq!(got[1].payload["success"], json!(true));
    std::thread::sleep(Duration::from_millis(300));
    let beats = recording.beats.lock().unwrap().clone();
    assert!(beats.len() >= 8, "about one heartbeat per 100 ms: {beats:?}");
    assert!(
        beats.iter().all(|b| *b == Some(Duration::from_millis(300))),
        "each beat keeps the record for three intervals, and a done emitter withdraws nothing: {beats:?}"
    );
}

/// A publisher that takes 20 ms per call and counts its calls (and, apart, its batch calls);
/// `groups` is what it answers to `groups_publishes`.
struct Slow {
    inner: Arc<MemoryBroker>,
    calls: std::sync::atomic::AtomicUsize,
    batches: std::sync::atomic::AtomicUsize,
    groups: bool,
}

impl Slow {
    fn new(inner: Arc<MemoryBroker>, groups: bool) -> Self {
        Self {
            inner,
            calls: 0.into(),
            batches: 0.into(),
            groups,
        }
    }
}

#[async_trait::async_trait]
impl stream_core::EventPublisher for Slow {
    async fn publish(&self, event: &stream_core::Event) -> Result<stream_core::EventId, stream_core::PublishError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.inner.publish(event).await
    }
    async fn publish_batch(
        &self,
        events: &[stream_core::Event],
    ) -> Result<Vec<stream_core::EventId>, stream_core::PublishError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.batches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.inner.publish_batch(events).await
    }
    fn groups_publishes(&self) -> bool {
        self.groups
    }
}

/// Emits `each` events from each of `tasks` concurrent tasks on one emitter; checks that each
/// task's ids grow, and returns them all.
async fn emit_from_tasks(em: &Arc<stream_core::Emitter>, tasks: usize, each: usize) -> Vec<stream_core::EventId> {
    let tasks: Vec<_> = (0..tasks)
        .map(|task| {
            let em = em.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..each {
                    let payload = json!({"task": task, "n": n}).as_object().unwrap().clone();
                    ids.push(em.data(payload).await.unwrap());
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let ids = task.await.unwrap();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each task's events keep their order"
        );
        all.extend(ids);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_emits_on_one_emitter_share_publish_calls() {
    let broker = Arc::new(MemoryBroker::default());
    let slow = Arc::new(Slow::new(broker.clone(), false));
    let ctx = StreamContext::builder().build();
    let channel = ctx.channel_id().clone();
    let em = Arc::new(ctx.bind(slow.clone()).with_heartbeat(None));
    let mut all = emit_from_tasks(&em, 8, 20).await;
    let calls = slow.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(calls < 160 / 2, "160 emits went out in {calls} publish calls");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 160, "every emit got its own id");
    let got = take(&mut broker.subscribe(&channel, None).await.unwrap(), 160).await;
    assert_eq!(
        got.iter().map(|e| e.id).collect::<Vec<_>>(),
        all,
        "readers see those ids"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_hands_each_event_to_a_publisher_that_groups_them_itself() {
    let grouping = Arc::new(Slow::new(Arc::new(MemoryBroker::default()), true));
    // Through the archive wrapper too: it says what the publisher it wraps says.
    let store = Arc::new(stream_core::memory::MemoryEventStore::default());
    let publisher = Arc::new(stream_core::PersistingPublisher::new(grouping.clone(), store));
    assert!(stream_core::EventPublisher::groups_publishes(&publisher));
    let em = Arc::new(StreamContext::builder().build().bind(publisher).with_heartbeat(None));
    emit_from_tasks(&em, 8, 10).await;
    let count = |n: &std::sync::atomic::AtomicUsize| n.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        (count(&grouping.calls), count(&grouping.batches)),
        (80, 0),
        "every emit went straight to publish, none through the emitter's own batching"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emit_queued_behind_a_dropped_publishing_task_takes_the_lead_instead_of_waiting() {
    let slow = Arc::new(Slow::new(Arc::new(MemoryBroker::default()), false));
    let em = Arc::new(StreamContext::builder().build().bind(slow).with_heartbeat(None));
    // The first emit publishes (20 ms); the second queues behind it.
    let first = {
        let em = em.clone();
        tokio::spawn(async move { em.log("first", LogLevel::Info).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = {
        let em = em.clone();
        tokio::spawn(async move { em.log("second", LogLevel::Info).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    first.abort();
    let second = tokio::time::timeout(std::time::Duration::from_secs(2), second)
        .await
        .expect("the queued emit does not hang")
        .unwrap();
    // The dropped task handed the lead on: the queued emit published itself.
    assert!(second.is_ok(), "{second:?}");
    // The emitter still works.
    em.log("third", LogLevel::Info).await.unwrap();
}

/// An emitter with an owner record renews it with each heartbeat: a registry that lost the record
/// (here: a second registry that never had it, standing for a Redis restart without persistence)
/// has it again after one beat, and a record of another owner is never taken over.
#[tokio::test(start_paused = true)]
async fn an_emitter_renews_its_channels_owner_record_with_each_heartbeat() {
    let broker = Arc::new(MemoryBroker::default());
    let registry = Arc::new(MemoryBroker::default());
    let owner = UserId::new("alice").unwrap();
    let (em, channel) = owned_emitter(&broker, &registry, &owner, Duration::from_secs(5));
    em.log("first", LogLevel::Info).await.unwrap();
    assert_eq!(
        registry.owner(&channel).await.unwrap(),
        None,
        "not before the first beat"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        registry.owner(&channel).await.unwrap(),
        Some(owner.clone()),
        "after the first beat"
    );

    // Another owner's record stays: the renewal is refused, and the emitter goes on.
    let other = StreamContext::builder().project("p").build();
    let other_channel = other.channel_id().clone();
    let mallory = UserId::new("mallory").unwrap();
    registry
        .register(&other_channel, &mallory, Duration::from_secs(3600))
        .await
        .unwrap();
    let em2 = other
        .bind(broker.clone())
        .with_heartbeat(Some(Duration::from_secs(5)))
        .with_owner(OwnerRecord {
            registry: registry.clone(),
            owner,
            ttl: Duration::from_secs(3600),
        });
    em2.log("first", LogLevel::Info).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(registry.owner(&other_channel).await.unwrap(), Some(mallory));
    em2.log("still emitting", LogLevel::Info).await.unwrap();
    drop((em, em2));
}

/// An emitter on a fresh channel of `broker` that renews `owner`'s record in `registry` with
/// each heartbeat.
fn owned_emitter(
    broker: &Arc<MemoryBroker>,
    registry: &Arc<MemoryBroker>,
    owner: &UserId,
    heartbeat: Duration,
) -> (stream_core::Emitter, stream_core::ChannelId) {
    let ctx = StreamContext::builder().project("p").build();
    let channel = ctx.channel_id().clone();
    let em = ctx
        .bind(broker.clone())
        .with_heartbeat(Some(heartbeat))
        .with_owner(OwnerRecord {
            registry: registry.clone(),
            owner: owner.clone(),
            ttl: Duration::from_secs(3600),
        });
    (em, channel)
}

/// A job that ends before its next heartbeat after the registry lost the owner record (a Redis
/// restart without persistence) renews the record with its `done`, so that the owner can still
/// resume the rest of the stream.
#[tokio::test(start_paused = true)]
async fn an_emitter_renews_its_channels_owner_record_with_done() {
    let broker = Arc::new(MemoryBroker::default());
    let registry = Arc::new(MemoryBroker::default());
    let owner = UserId::new("alice").unwrap();
    let (em, channel) = owned_emitter(&broker, &registry, &owner, Duration::from_secs(3600));
    em.log("only", LogLevel::Info).await.unwrap();
    assert_eq!(registry.owner(&channel).await.unwrap(), None, "no beat yet");
    em.complete(true, None, Map::new()).await.unwrap();
    assert_eq!(
        registry.owner(&channel).await.unwrap(),
        Some(owner),
        "renewed with done"
    );
}
