//! The HTTP behaviour of the two web adapters, written once and run against each: the same tiny
//! app on the in-memory backends, once on axum (`stream-axum`) and once on actix-web
//! (`stream-actix`), and a real HTTP client over a real socket. Needs no service.
//!
//! The adapter crates keep their own tests of what is theirs: the error → response conversion and
//! the Last-Event-ID extractor.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use stream_core::sse::SseOptions;
use stream_core::{
    CancellationToken, ChannelConfig, ChannelId, Event, EventId, EventType, LogLevel, StreamContext, StreamLeaseConfig,
    Streaming, UserId,
};

/// The app's state, the same under both adapters.
#[derive(Clone)]
struct AppState {
    streaming: Streaming,
    shutdown: CancellationToken,
    generator_dropped: Arc<AtomicBool>,
}

impl AppState {
    /// In-memory backends, pings 30 s apart (so no test relies on them), one stream per user.
    fn new() -> Self {
        let channel_config = ChannelConfig {
            ping_interval: Duration::from_secs(30),
            ..ChannelConfig::default()
        };
        let lease_config = StreamLeaseConfig {
            limit: 1,
            ..StreamLeaseConfig::default()
        };
        Self {
            streaming: Streaming::in_memory(channel_config, lease_config),
            shutdown: CancellationToken::new(),
            generator_dropped: Arc::new(AtomicBool::new(false)),
        }
    }

    fn options(&self, last: Option<EventId>) -> SseOptions {
        SseOptions::from_config(&self.streaming.channel_config)
            .last_event_id(last)
            .shutdown(self.shutdown.clone())
    }

    /// An endless token generator for the direct route: only a disconnect or shutdown ends it.
    /// Dropping it sets `generator_dropped`.
    fn tokens(&self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        let flag = DropFlag(self.generator_dropped.clone());
        let channel = ChannelId::generate();
        futures_util::stream::unfold((0u64, flag), move |(n, flag)| {
            let channel = channel.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let payload = serde_json::json!({"token": format!("t{n}")});
                let event = Event::new(channel, EventType::Data, payload.as_object().unwrap().clone()).unwrap();
                Some((Ok(event), (n + 1, flag)))
            }
        })
    }
}

struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The routes' parameters.
fn channel(segment: &str) -> ChannelId {
    ChannelId::new(segment).unwrap()
}

fn user(query: &HashMap<String, String>) -> UserId {
    UserId::new(&query["user"]).unwrap()
}

/// A running app: `GET /leased/{channel}?user=` (with a lease and an `x-demo: yes` header),
/// `GET /plain/{channel}` (no lease) and `GET /direct?user=` (the token generator, with a lease).
struct Server {
    base: String,
    state: AppState,
    /// Resolves when the server has stopped (after `state.shutdown` is cancelled).
    served: Pin<Box<dyn Future<Output = ()>>>,
}

mod axum_app {
    use std::collections::HashMap;

    use axum::Router;
    use axum::extract::{Path, Query, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use stream_axum::{ChannelIdPath, LastEventId, Sse, SseError, SseResponse};

    use super::{AppState, Server, channel, user};

    type Params = Query<HashMap<String, String>>;

    async fn leased(
        State(state): State<AppState>,
        Path(id): Path<String>,
        Query(q): Params,
        LastEventId(last): LastEventId,
    ) -> Result<Response, SseError> {
        let reply = SseResponse::channel(&state.streaming, channel(&id))
            .options(state.options(last))
            .lease(user(&q))
            .await?;
        Ok(([("x-demo", "yes")], Sse::from(reply)).into_response())
    }

    async fn plain(
        State(state): State<AppState>,
        ChannelIdPath(channel): ChannelIdPath,
        LastEventId(last): LastEventId,
    ) -> Result<Sse, SseError> {
        let reply = SseResponse::channel(&state.streaming, channel)
            .options(state.options(last))
            .await?;
        Ok(reply.into())
    }

    async fn direct(State(state): State<AppState>, Query(q): Params) -> Result<Sse, SseError> {
        let reply = SseResponse::direct(&state.streaming, state.tokens())
            .options(state.options(None))
            .lease(user(&q))
            .await?;
        Ok(reply.into())
    }

    pub(super) async fn start() -> Server {
        let state = AppState::new();
        let app = Router::new()
            .route("/leased/{channel}", get(leased))
            .route("/plain/{channel}", get(plain))
            .route("/direct", get(direct))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = state.shutdown.clone();
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .unwrap();
        });
        let served = Box::pin(async move { served.await.unwrap() });
        Server { base, state, served }
    }
}

mod actix_app {
    use std::collections::HashMap;

    use actix_web::{App, CustomizeResponder, HttpServer, Responder, web};
    use stream_actix::{ChannelIdPath, LastEventId, Sse, SseError, SseResponse};

    use super::{AppState, Server, channel, user};

    type Params = web::Query<HashMap<String, String>>;

    async fn leased(
        state: web::Data<AppState>,
        id: web::Path<String>,
        q: Params,
        LastEventId(last): LastEventId,
    ) -> Result<CustomizeResponder<Sse>, SseError> {
        let reply = SseResponse::channel(&state.streaming, channel(&id))
            .options(state.options(last))
            .lease(user(&q))
            .await?;
        Ok(Sse::from(reply).customize().insert_header(("x-demo", "yes")))
    }

    async fn plain(
        state: web::Data<AppState>,
        ChannelIdPath(channel): ChannelIdPath,
        LastEventId(last): LastEventId,
    ) -> Result<Sse, SseError> {
        let reply = SseResponse::channel(&state.streaming, channel)
            .options(state.options(last))
            .await?;
        Ok(reply.into())
    }

    async fn direct(state: web::Data<AppState>, q: Params) -> Result<Sse, SseError> {
        let reply = SseResponse::direct(&state.streaming, state.tokens())
            .options(state.options(None))
            .lease(user(&q))
            .await?;
        Ok(reply.into())
    }

    pub(super) async fn start() -> Server {
        let state = AppState::new();
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
        let served = Box::pin(async move { served.await.unwrap().unwrap() });
        Server { base, state, served }
    }
}

/// Runs each named check against both adapters: `on_axum::<check>` under a tokio runtime and
/// `on_actix::<check>` under actix's.
macro_rules! against_both_adapters {
    ($($check:ident),* $(,)?) => {
        mod on_axum {
            $(
                #[tokio::test]
                async fn $check() {
                    super::$check(super::axum_app::start().await).await;
                }
            )*
        }
        mod on_actix {
            $(
                #[actix_web::test]
                async fn $check() {
                    super::$check(super::actix_app::start().await).await;
                }
            )*
        }
    };
}

against_both_adapters!(
    sse_headers_events_in_order_then_close,
    last_event_id_from_header_or_query_and_204_after_done,
    invalid_last_event_id_is_400_json,
    a_malformed_channel_id_is_404_json,
    over_the_cap_is_429_with_retry_after_and_a_disconnect_releases_the_lease,
    a_disconnect_drops_the_direct_generator_and_releases_its_lease,
    graceful_shutdown_ends_open_streams,
);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn get(url: String) -> reqwest::Response {
    client().get(url).send().await.unwrap()
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

async fn sse_headers_events_in_order_then_close(server: Server) {
    let (channel, ids) = finished_job(&server.state.streaming).await;
    let res = get(format!("{}/leased/{channel}?user=u-headers", server.base)).await;
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

/// The ids of the events a request's SSE body carries.
async fn ids_sent(request: reqwest::RequestBuilder) -> Vec<String> {
    frame_ids(&request.send().await.unwrap().text().await.unwrap())
}

async fn last_event_id_from_header_or_query_and_204_after_done(server: Server) {
    let (channel, ids) = finished_job(&server.state.streaming).await;
    let c = client();
    let url = format!("{}/plain/{channel}", server.base);
    let after = |id: &str| format!("{url}?last_event_id={id}");
    assert_eq!(ids_sent(c.get(&url).header("Last-Event-ID", &ids[1])).await, ids[2..]);
    assert_eq!(ids_sent(c.get(after(&ids[0]))).await, ids[1..]);
    // The header wins over the query.
    assert_eq!(
        ids_sent(c.get(after(&ids[0])).header("Last-Event-ID", &ids[2])).await,
        ids[3..]
    );
    let res = c.get(&url).header("Last-Event-ID", &ids[3]).send().await.unwrap();
    assert_eq!(res.status(), 204);
    let res = c.get(after(&ids[3])).send().await.unwrap();
    assert_eq!(res.status(), 204);
}

async fn invalid_last_event_id_is_400_json(server: Server) {
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

/// The `ChannelIdPath` extractor answers a malformed channel id itself: `404`, JSON, no-store.
async fn a_malformed_channel_id_is_404_json(server: Server) {
    let c = client();
    for segment in ["not.a.channel", "%FF", &"x".repeat(129)] {
        let res = c.get(format!("{}/plain/{segment}", server.base)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{segment}");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.headers()["cache-control"], "no-store");
        let body: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
        assert_eq!(body["error"], "not_found");
    }
}

async fn over_the_cap_is_429_with_retry_after_and_a_disconnect_releases_the_lease(server: Server) {
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

async fn a_disconnect_drops_the_direct_generator_and_releases_its_lease(server: Server) {
    let res = get(format!("{}/direct?user=u-direct", server.base)).await;
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

async fn graceful_shutdown_ends_open_streams(server: Server) {
    let channel = ChannelId::generate();
    let mut open = get(format!("{}/leased/{channel}?user=u-shutdown", server.base)).await;
    assert_eq!(open.status(), 200);
    let mut direct = get(format!("{}/direct?user=u-shutdown2", server.base)).await;
    assert_eq!(direct.status(), 200);
    server.state.shutdown.cancel();
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), server.served)
        .await
        .expect("the server did not shut down in time");
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
