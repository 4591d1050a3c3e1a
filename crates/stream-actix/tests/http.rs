//! The adapter over a real socket: a tiny actix app on the in-memory backends, a real HTTP client.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{App, HttpResponse, HttpServer, web};
use futures_util::StreamExt;
use stream_actix::{LastEventId, SseError, direct_sse_response, sse_response, sse_response_with_lease};
use stream_core::sse::SseOptions;
use stream_core::{
    CancellationToken, ChannelConfig, ChannelId, Event, EventType, LogLevel, StreamContext, StreamLeaseConfig,
    Streaming, UserId,
};

#[derive(Clone)]
struct AppState {
    streaming: Streaming,
    shutdown: CancellationToken,
    generator_dropped: Arc<AtomicBool>,
}

#[derive(serde::Deserialize)]
struct UserQuery {
    user: String,
}

fn options(state: &AppState, last: LastEventId) -> SseOptions {
    SseOptions::from_config(&state.streaming.channel_config)
        .last_event_id(last.0)
        .shutdown(state.shutdown.clone())
}

async fn leased(
    state: web::Data<AppState>,
    channel: web::Path<String>,
    q: web::Query<UserQuery>,
    last: LastEventId,
) -> Result<HttpResponse, SseError> {
    let channel = ChannelId::new(channel.into_inner()).unwrap();
    let mut extra = HeaderMap::new();
    extra.insert(HeaderName::from_static("x-demo"), HeaderValue::from_static("yes"));
    let options = options(&state, last);
    let user = UserId::new(&q.user).unwrap();
    sse_response_with_lease(&channel, user, &state.streaming, options, Some(extra)).await
}

async fn plain(
    state: web::Data<AppState>,
    channel: web::Path<String>,
    last: LastEventId,
) -> Result<HttpResponse, SseError> {
    let channel = ChannelId::new(channel.into_inner()).unwrap();
    let options = options(&state, last);
    sse_response(&channel, &state.streaming, options, None).await
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn direct(state: web::Data<AppState>, q: web::Query<UserQuery>) -> Result<HttpResponse, SseError> {
    let flag = DropFlag(state.generator_dropped.clone());
    let channel = ChannelId::generate();
    // An endless token generator: only a disconnect or shutdown ends it.
    let tokens = futures_util::stream::unfold((0u64, flag), move |(n, flag)| {
        let channel = channel.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let payload = serde_json::json!({"token": format!("t{n}")});
            let event = Event::new(channel, EventType::Data, payload.as_object().unwrap().clone()).unwrap();
            Some((Ok::<_, std::convert::Infallible>(event), (n + 1, flag)))
        }
    });
    let options = SseOptions::from_config(&state.streaming.channel_config).shutdown(state.shutdown.clone());
    let user = UserId::new(&q.user).unwrap();
    direct_sse_response(tokens, Some(user), true, &state.streaming, options, None).await
}

struct Server {
    base: String,
    state: AppState,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let channel_config = ChannelConfig {
        ping_interval: Duration::from_secs(30),
        ..ChannelConfig::default()
    };
    let lease_config = StreamLeaseConfig {
        limit: 1,
        ..StreamLeaseConfig::default()
    };
    let state = AppState {
        streaming: Streaming::in_memory(channel_config, lease_config),
        shutdown: CancellationToken::new(),
        generator_dropped: Arc::new(AtomicBool::new(false)),
    };
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/leased/{channel}", web::get().to(leased))
            .route("/plain/{channel}", web::get().to(plain))
            .route("/direct", web::get().to(direct))
    })
    .workers(1)
    // Notice a client's disconnect when it happens, not at the next write.
    .h1_allow_half_closed(false)
    .shutdown_signal(state.shutdown.clone().cancelled_owned())
    .shutdown_timeout(10)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let base = format!("http://{}", server.addrs()[0]);
    let served = actix_web::rt::spawn(server.run());
    Server { base, state, served }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A finished job on a fresh channel: three events and `done`. Returns the channel and the ids.
async fn finished_job(streaming: &Streaming) -> (ChannelId, Vec<String>) {
    let emitter = StreamContext::builder().build().bind(streaming.publisher.clone());
    let ids = [
        emitter.log("one", LogLevel::Info).await.unwrap(),
        emitter.progress(50, Some("half"), None).await.unwrap(),
        emitter.log("two", LogLevel::Info).await.unwrap(),
        emitter.complete(true, None, Default::default()).await.unwrap(),
    ];
    (
        emitter.channel_id().clone(),
        ids.iter().map(ToString::to_string).collect(),
    )
}

fn frame_ids(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(str::to_owned)
        .collect()
}

async fn active(state: &AppState, user: &str) -> usize {
    state
        .streaming
        .leases
        .active_count(&UserId::new(user).unwrap())
        .await
        .unwrap()
}

async fn wait_for_no_leases(state: &AppState, user: &str) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while active(state, user).await > 0 {
        assert!(Instant::now() < deadline, "the lease was not released within a second");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn sse_headers_events_in_order_then_close() {
    let server = start().await;
    let (channel, ids) = finished_job(&server.state.streaming).await;
    let res = client()
        .get(format!("{}/leased/{channel}?user=u-headers", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache");
    assert_eq!(h["x-accel-buffering"], "no");
    assert_eq!(h["x-demo"], "yes");
    let body = tokio::time::timeout(Duration::from_secs(5), res.text())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frame_ids(&body), ids);
    assert!(body.contains("\"type\":\"done\""));
    wait_for_no_leases(&server.state, "u-headers").await;
}

#[actix_web::test]
async fn last_event_id_from_header_or_query_and_204_after_done() {
    let server = start().await;
    let (channel, ids) = finished_job(&server.state.streaming).await;
    let c = client();
    let url = format!("{}/plain/{channel}", server.base);
    let body = c
        .get(&url)
        .header("Last-Event-ID", &ids[1])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(frame_ids(&body), ids[2..]);
    let body = c
        .get(format!("{url}?last_event_id={}", ids[0]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(frame_ids(&body), ids[1..]);
    // The header wins over the query.
    let body = c
        .get(format!("{url}?last_event_id={}", ids[0]))
        .header("Last-Event-ID", &ids[2])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(frame_ids(&body), ids[3..]);
    let res = c.get(&url).header("Last-Event-ID", &ids[3]).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = c.get(format!("{url}?last_event_id={}", ids[3])).send().await.unwrap();
    assert_eq!(res.status(), 204);
}

#[actix_web::test]
async fn invalid_last_event_id_is_400_json() {
    let server = start().await;
    let c = client();
    let url = format!("{}/plain/somechannel", server.base);
    for res in [
        c.get(&url).header("Last-Event-ID", "not-an-id").send().await.unwrap(),
        c.get(format!("{url}?last_event_id=nope")).send().await.unwrap(),
    ] {
        assert_eq!(res.status(), 400);
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "invalid_last_event_id");
    }
}

#[actix_web::test]
async fn over_the_cap_is_429_with_retry_after_and_a_disconnect_releases_the_lease() {
    let server = start().await;
    let c = client();
    // An open channel: no done, so the stream stays open.
    let channel = ChannelId::generate();
    let url = format!("{}/leased/{channel}?user=u-cap", server.base);
    let first = c.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(active(&server.state, "u-cap").await, 1);
    let res = c.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "5");
    let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    assert_eq!(body["error"], "stream_limit_exceeded");
    assert_eq!(body["limit"], 1);
    assert_eq!(body["retry_after"], 5);
    // The client goes away. Pings are 30 s apart, so the server must notice the closed
    // connection itself, not through a failed write.
    drop(first);
    wait_for_no_leases(&server.state, "u-cap").await;
    let again = c.get(&url).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

#[actix_web::test]
async fn a_disconnect_drops_the_direct_generator_and_releases_its_lease() {
    let server = start().await;
    let res = client()
        .get(format!("{}/direct?user=u-direct", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut frames = res.bytes_stream();
    let first = frames.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("\"token\":\"t0\""));
    assert_eq!(active(&server.state, "u-direct").await, 1);
    drop(frames);
    wait_for_no_leases(&server.state, "u-direct").await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while !server.state.generator_dropped.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the generator was not dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_web::test]
async fn graceful_shutdown_ends_open_streams() {
    let server = start().await;
    let c = client();
    let channel = ChannelId::generate();
    let mut open = c
        .get(format!("{}/leased/{channel}?user=u-shutdown", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    let mut direct = c
        .get(format!("{}/direct?user=u-shutdown2", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    server.state.shutdown.cancel();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), server.served)
        .await
        .expect("the server did not shut down in time")
        .unwrap()
        .unwrap();
    // Both bodies end cleanly.
    for res in [&mut open, &mut direct] {
        while let Some(_chunk) = tokio::time::timeout(Duration::from_secs(1), res.chunk())
            .await
            .unwrap()
            .unwrap()
        {}
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    wait_for_no_leases(&server.state, "u-shutdown").await;
    wait_for_no_leases(&server.state, "u-shutdown2").await;
}
