//! The SSE pipeline: framing, injection safety, pings, idle timeout, done, Last-Event-ID,
//! errors, shutdown, and leases.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use serde_json::{Map, Value, json};
use stream_core::memory::{MemoryBroker, MemoryLeaseStore};
use stream_core::sse::{self, SseOptions, SseReply, SseResponse};
use stream_core::{
    CancellationToken, ChannelConfig, ChannelId, Event, EventId, EventPublisher, EventType, InvalidEventId, LeaseStore,
    StreamLease, StreamLeaseConfig, Streaming, UserId,
};

fn channel() -> ChannelId {
    ChannelId::generate()
}

fn log(ch: &ChannelId, msg: &str) -> Event {
    Event::data(ch.clone(), "message", msg).unwrap()
}

/// Parses SSE text into frames of (field, value) lines, as a browser would.
fn parse(text: &str) -> Vec<Vec<(String, String)>> {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    normalized
        .split("\n\n")
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.lines()
                .map(|l| match l.split_once(':') {
                    Some((k, v)) => (k.to_owned(), v.strip_prefix(' ').unwrap_or(v).to_owned()),
                    None => (l.to_owned(), String::new()),
                })
                .collect()
        })
        .collect()
}

const HOSTILE: &str = "a\n\ndata: {\"type\":\"done\"}\r\nid: 666\revent: pwn\n\nretry: 1\r\r: x\u{2028}\u{0}end";

#[test]
fn hostile_payload_values_and_keys_stay_inside_one_data_line() {
    let ch = channel();
    let mut payload = Map::new();
    payload.insert("message".into(), json!(HOSTILE));
    payload.insert(HOSTILE.into(), json!([HOSTILE, {"k": HOSTILE}]));
    let event = Event::new(ch, EventType::Log, payload).unwrap();
    let frame = sse::encode_event(&event);
    let text = std::str::from_utf8(&frame).unwrap();
    assert!(text.ends_with("\n\n"));
    assert_eq!(
        text.matches('\n').count(),
        3,
        "exactly id, data and the blank line: {text:?}"
    );
    assert!(!text.contains('\r'));
    let frames = parse(text);
    assert_eq!(frames.len(), 1);
    let fields: Vec<&str> = frames[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(fields, ["id", "data"]);
    assert_eq!(frames[0][0].1, event.id.to_string());
    let back: Value = serde_json::from_str(&frames[0][1].1).unwrap();
    assert_eq!(back["message"], HOSTILE);
    assert_eq!(back[HOSTILE][1]["k"], HOSTILE);
    assert_eq!(Event::from_json(&frames[0][1].1).unwrap(), event);
}

#[test]
fn raw_fields_cannot_add_lines() {
    let mut buf = Vec::new();
    sse::push_field(&mut buf, "data", "one\ntwo\r\nthree\rfour");
    assert_eq!(
        std::str::from_utf8(&buf).unwrap(),
        "data: one\ndata: two\ndata: three\ndata: four\n"
    );
    let mut buf = Vec::new();
    sse::push_field(&mut buf, "id", "12\r\n\ndata: x");
    assert_eq!(std::str::from_utf8(&buf).unwrap(), "id: 12data: x\n");
}

#[test]
fn last_event_id_prefers_the_header_and_validates() {
    let id = EventId::generate();
    let s = id.to_string();
    assert_eq!(sse::last_event_id(Some(&s), None), Ok(Some(id)));
    assert_eq!(sse::last_event_id(None, Some(&s)), Ok(Some(id)));
    assert_eq!(sse::last_event_id(Some(""), Some(&s)), Ok(Some(id)));
    assert_eq!(sse::last_event_id(None, None), Ok(None));
    assert!(sse::last_event_id(Some("junk\n"), None).is_err());
}

#[test]
fn last_event_id_from_request_reads_raw_header_bytes_and_the_query_string() {
    let [a, b] = [EventId::generate(), EventId::generate()];
    let read = sse::last_event_id_from_request;
    assert_eq!(read(Some(a.to_string().as_bytes()), None), Ok(Some(a)));
    assert_eq!(read(None, Some(&format!("x=1&last_event_id={a}"))), Ok(Some(a)));
    // The header wins; an empty or blank one counts as absent.
    assert_eq!(
        read(Some(a.to_string().as_bytes()), Some(&format!("last_event_id={b}"))),
        Ok(Some(a))
    );
    assert_eq!(read(Some(b" "), Some(&format!("last_event_id={b}"))), Ok(Some(b)));
    // Query values are form-decoded; the last of several wins; none, or an empty one, is absent.
    assert_eq!(read(None, Some(&format!("last_event_id=+{a}%20"))), Ok(Some(a)));
    assert_eq!(
        read(None, Some(&format!("last_event_id={a}&last_event_id={b}"))),
        Ok(Some(b))
    );
    assert_eq!(read(None, Some("last_event_id=&other=1")), Ok(None));
    assert_eq!(read(None, Some("")), Ok(None));
    assert_eq!(read(None, None), Ok(None));
    // A header byte that is not visible ASCII is refused, even with a good query.
    let refused = Err(InvalidEventId("<not ASCII>".into()));
    assert_eq!(read(Some("é".as_bytes()), Some(&format!("last_event_id={a}"))), refused);
    assert_eq!(read(Some(b"01\x7f"), None), refused);
    assert_eq!(read(Some(b"\tjunk"), None), Err(InvalidEventId("junk".into())));
}

async fn collect(body: sse::SseBody) -> String {
    let chunks: Vec<Result<Bytes, Infallible>> = body.collect().await;
    chunks
        .into_iter()
        .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
        .collect()
}

fn opts() -> SseOptions {
    SseOptions {
        ping_interval: Duration::from_secs(15),
        max_idle_time: Duration::from_secs(300),
        ..SseOptions::default()
    }
}

fn ok_stream(events: Vec<Event>) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    stream::iter(events.into_iter().map(Ok))
}

#[tokio::test(start_paused = true)]
async fn closes_after_done_even_if_the_source_goes_on() {
    let ch = channel();
    let one = log(&ch, "one");
    let done = Event::done(ch.clone(), true, Map::new()).unwrap();
    let events = vec![one, done.clone(), log(&ch, "after")];
    let source = ok_stream(events).chain(stream::pending());
    let text = collect(sse::sse_stream(source, opts())).await;
    let frames = parse(&text);
    assert_eq!(frames.len(), 2, "{text}");
    assert_eq!(frames[1][0], ("id".to_owned(), done.id.to_string()));
    assert!(frames[1][1].1.contains("\"type\":\"done\""));
}

#[tokio::test(start_paused = true)]
async fn drops_events_at_or_before_last_event_id() {
    let ch = channel();
    let events: Vec<Event> = (0..4).map(|n| log(&ch, &n.to_string())).collect();
    let options = opts().last_event_id(Some(events[1].id));
    let text = collect(sse::sse_stream(ok_stream(events.clone()), options)).await;
    let ids: Vec<String> = parse(&text).iter().map(|f| f[0].1.clone()).collect();
    assert_eq!(ids, [events[2].id.to_string(), events[3].id.to_string()]);
}

/// Frames that are ready together go out as one piece of the body (one write, one read), up to
/// `COALESCE_BYTES`; a lone frame goes as it is, and nothing waits to fill a piece.
#[tokio::test(start_paused = true)]
async fn ready_frames_go_out_together_and_a_lone_frame_alone() {
    let ch = channel();
    let burst: Vec<Event> = (0..400).map(|n| log(&ch, &format!("event {n}"))).collect();
    let frame_len = sse::encode_event(&burst[0]).len();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
    for event in &burst {
        tx.send(event.clone()).unwrap();
    }
    let source = tokio_stream_from(rx);
    let mut body = sse::sse_stream(source, opts());

    // The burst: pieces of several frames, none much over the bound, every frame whole and in order.
    let mut text = String::new();
    let mut pieces = 0;
    while text.matches("\n\n").count() < burst.len() {
        let piece = body.next().await.unwrap().unwrap();
        assert!(
            piece.len() < sse::COALESCE_BYTES + frame_len + 32,
            "{} bytes",
            piece.len()
        );
        assert!(piece.ends_with(b"\n\n"), "a piece ends with a whole frame");
        text.push_str(std::str::from_utf8(&piece).unwrap());
        pieces += 1;
    }
    let ids: Vec<String> = parse(&text).iter().map(|f| f[0].1.clone()).collect();
    let sent: Vec<String> = burst.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(ids, sent);
    // (A piece may also end early when the task's cooperative budget runs out.)
    assert!(pieces <= burst.len() / 20, "{pieces} pieces for {} frames", burst.len());

    // Then a lone event: its frame alone, at once.
    let lone = log(&ch, "lone");
    tx.send(lone.clone()).unwrap();
    let piece = body.next().await.unwrap().unwrap();
    assert_eq!(piece, sse::encode_event(&lone));
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Event>,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    stream::poll_fn(move |cx| rx.poll_recv(cx).map(|e| e.map(Ok)))
}

#[tokio::test(start_paused = true)]
async fn pings_without_ids_while_idle_then_closes_at_the_idle_timeout() {
    let options = SseOptions {
        ping_interval: Duration::from_secs(15),
        max_idle_time: Duration::from_secs(50),
        ..opts()
    };
    let source = stream::pending::<Result<Event, Infallible>>();
    let text = collect(sse::sse_stream(source, options)).await;
    let frames = parse(&text);
    assert_eq!(
        frames.len(),
        3,
        "pings at 15, 30 and 45 s, then the idle close at 50 s: {text}"
    );
    for f in &frames {
        assert_eq!(f.len(), 1, "a ping has no id: {f:?}");
        let v: Value = serde_json::from_str(&f[0].1).unwrap();
        assert_eq!(v["type"], "ping");
    }
}

#[tokio::test(start_paused = true)]
async fn events_reset_the_idle_timer() {
    let ch = channel();
    let options = SseOptions {
        ping_interval: Duration::from_secs(1000),
        max_idle_time: Duration::from_secs(10),
        ..opts()
    };
    let ch2 = ch.clone();
    let source = stream::unfold(0, move |n| {
        let ch = ch2.clone();
        async move {
            if n == 3 {
                return None;
            }
            tokio::time::sleep(Duration::from_secs(8)).await;
            Some((Ok::<_, Infallible>(log(&ch, "tick")), n + 1))
        }
    })
    .chain(stream::pending());
    let started = tokio::time::Instant::now();
    let text = collect(sse::sse_stream(source, options)).await;
    assert_eq!(parse(&text).len(), 3, "{text}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(34),
        "closed 10 s after the last event at 24 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_error_ends_with_a_fatal_error_frame() {
    let ch = channel();
    let source = stream::iter(vec![Ok(log(&ch, "one")), Err("redis went away")]).chain(stream::pending());
    let text = collect(sse::sse_stream(source, opts())).await;
    let frames = parse(&text);
    assert_eq!(frames.len(), 2);
    let v: Value = serde_json::from_str(&frames[1][0].1).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["fatal"], true);
    assert_eq!(v["error"], "stream_unavailable");
    assert!(v["request_id"].as_str().is_some_and(|id| id.len() == 26), "{v}");
    // The source's error goes to the log, not to the client.
    assert!(!text.contains("redis went away"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn retry_hint_comes_first_and_shutdown_ends_the_stream() {
    let token = CancellationToken::new();
    let options = SseOptions {
        retry: Some(Duration::from_millis(2500)),
        ..opts()
    }
    .shutdown(token.clone());
    let mut body = sse::sse_stream(stream::pending::<Result<Event, Infallible>>(), options);
    let first = body.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"retry: 2500\n\n");
    token.cancel();
    assert!(body.next().await.is_none());
}

/// A bundle of `broker` and `leases`.
fn bundle(broker: &Arc<MemoryBroker>, leases: Arc<dyn LeaseStore>) -> Streaming {
    Streaming::from_parts(
        broker.clone(),
        broker.clone(),
        broker.clone(),
        leases,
        None,
        ChannelConfig::default(),
    )
}

fn lease_store(limit: usize, ttl_seconds: u64) -> Arc<dyn LeaseStore> {
    Arc::new(MemoryLeaseStore::new(StreamLeaseConfig {
        limit,
        ttl_seconds,
        ..StreamLeaseConfig::default()
    }))
}

#[tokio::test]
async fn the_lease_is_refreshed_while_streaming_and_released_on_drop() {
    let store = lease_store(1, 1);
    let user = UserId::new("streamer").unwrap();
    let lease = StreamLease::acquire(store.clone(), user.clone()).await.unwrap();
    let options = SseOptions {
        ping_interval: Duration::from_millis(100),
        ..opts()
    }
    .lease(lease);
    let mut body = sse::sse_stream(stream::pending::<Result<Event, Infallible>>(), options);
    // 1.6 s of pings: without refreshes the 1 s lease would have expired.
    for _ in 0..16 {
        body.next().await.unwrap().unwrap();
    }
    assert_eq!(store.active_count(&user).await.unwrap(), 1);
    assert!(store.acquire(&user).await.unwrap().is_none());
    drop(body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while store.active_count(&user).await.unwrap() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "lease not released after the body was dropped"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lost_lease_ends_the_stream() {
    let store = lease_store(1, 1);
    let user = UserId::new("loser").unwrap();
    let lease = StreamLease::acquire(store.clone(), user.clone()).await.unwrap();
    let id = lease.lease_id().clone();
    let options = SseOptions {
        ping_interval: Duration::from_secs(100),
        ..opts()
    }
    .lease(lease);
    let body = sse::sse_stream(stream::pending::<Result<Event, Infallible>>(), options);
    store.release(&user, &id).await.unwrap();
    let text = tokio::time::timeout(Duration::from_secs(5), collect(body))
        .await
        .unwrap();
    assert!(text.contains("lease expired"), "{text}");
}

#[tokio::test]
async fn channel_stream_replays_then_answers_finished_after_done() {
    let broker = Arc::new(MemoryBroker::default());
    let ch = channel();
    let first = log(&ch, "first");
    let done = Event::done(ch.clone(), true, Map::new()).unwrap();
    let ids = broker.publish_batch(&[first, done]).await.unwrap();

    let SseReply::Stream(body) = SseResponse::channel(&bundle(&broker, lease_store(10, 60)), ch.clone())
        .options(opts())
        .await
        .unwrap()
    else {
        panic!("expected a stream");
    };
    let frames = parse(&collect(body).await);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0][0].1, ids[0].to_string());

    let reply = SseResponse::channel(&bundle(&broker, lease_store(10, 60)), ch.clone())
        .options(opts().last_event_id(Some(ids[1])))
        .await
        .unwrap();
    assert!(matches!(reply, SseReply::Finished));
}

#[tokio::test]
async fn channel_stream_with_lease_refuses_over_the_cap() {
    let broker = Arc::new(MemoryBroker::default());
    let store = lease_store(1, 60);
    let user = UserId::new("capped").unwrap();
    let ch = channel();
    let first = SseResponse::channel(&bundle(&broker, store.clone()), ch.clone())
        .options(opts())
        .lease(user.clone())
        .await
        .unwrap();
    let second = SseResponse::channel(&bundle(&broker, store.clone()), ch.clone())
        .options(opts())
        .lease(user.clone())
        .await;
    match second {
        Err(sse::StreamError::LimitExceeded(e)) => {
            assert_eq!(e.limit, 1);
            assert_eq!(e.retry_after, Duration::from_secs(5));
        }
        other => panic!("expected the cap, got {other:?}"),
    }
    drop(first);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        SseResponse::channel(&bundle(&broker, store), ch.clone())
            .options(opts())
            .lease(user)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_client_with_done_gets_finished_even_at_the_cap() {
    let broker = Arc::new(MemoryBroker::default());
    let store = lease_store(1, 60);
    let user = UserId::new("capped-done").unwrap();
    let ch = channel();
    let done = Event::done(ch.clone(), true, Map::new()).unwrap();
    broker.publish(&done).await.unwrap();
    let _held = StreamLease::acquire(store.clone(), user.clone()).await.unwrap();

    let reply = SseResponse::channel(&bundle(&broker, store.clone()), ch.clone())
        .options(opts().last_event_id(Some(done.id)))
        .lease(user.clone())
        .await
        .unwrap();
    assert!(matches!(reply, SseReply::Finished));
    assert_eq!(
        store.active_count(&user).await.unwrap(),
        1,
        "no lease taken for a finished stream"
    );
    // Without the done id the stream would run, so the cap applies.
    let capped = SseResponse::channel(&bundle(&broker, store), ch.clone())
        .options(opts())
        .lease(user)
        .await;
    assert!(matches!(capped, Err(sse::StreamError::LimitExceeded(_))), "{capped:?}");
}

#[tokio::test]
async fn a_channel_that_always_has_an_event_ready_does_not_starve_the_lease_refresh() {
    let store = lease_store(1, 1);
    let user = UserId::new("busy").unwrap();
    let lease = StreamLease::acquire(store.clone(), user.clone()).await.unwrap();
    let ch = channel();
    // An endless source that is always ready: the pipeline never waits for an event.
    let busy = stream::iter((0..).map(move |i| Ok::<_, Infallible>(log(&ch, &format!("event {i}")))));
    let mut body = sse::sse_stream(busy, opts().lease(lease));
    // Read for 2.5 s, more than two TTLs of the 1 s lease, with no pause between events.
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        let frame = body.next().await.unwrap().unwrap();
        assert!(!String::from_utf8_lossy(&frame).contains("lease expired"));
        tokio::task::yield_now().await;
    }
    assert_eq!(
        store.active_count(&user).await.unwrap(),
        1,
        "the lease expired under a live stream"
    );
}
