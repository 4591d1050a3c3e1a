//! Small idle streams, measured over real HTTP: the bytes an idle SSE stream holds in an axum
//! server, counted by a counting allocator, against the floor of a bare axum stream (hyper's own
//! connection cost: the connection task, its buffers, the socket). Needs Redis (`REDIS_URL`) for
//! the Redis broker's figure.
//!
//! The clients are plain blocking sockets on the test thread, which allocate nothing; the server
//! runs on its own thread. The figures are printed (`--nocapture`) and bounded generously: this
//! asserts a size, not a time.

use std::alloc::System;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use stream_axum::{ChannelIdPath, Sse, SseResponse};
use stream_core::memory::MemoryBroker;
use stream_core::{ChannelConfig, ChannelId, Streaming};
use stream_pubsub::RedisBroker;

mod support;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const STREAMS: usize = 400;

#[derive(Clone)]
struct Brokers {
    memory: Streaming,
    redis: Streaming,
}

async fn bare() -> Response {
    let body: stream_core::sse::SseBody = Box::pin(futures_util::stream::pending());
    Sse::from(stream_core::sse::SseReply::from(body)).into_response()
}

async fn stream(streaming: &Streaming, channel: ChannelId) -> Response {
    Sse::from(SseResponse::channel(streaming, channel).await.unwrap()).into_response()
}

async fn memory_stream(State(brokers): State<Brokers>, ChannelIdPath(channel): ChannelIdPath) -> Response {
    stream(&brokers.memory, channel).await
}

async fn redis_stream(State(brokers): State<Brokers>, ChannelIdPath(channel): ChannelIdPath) -> Response {
    stream(&brokers.redis, channel).await
}

/// How the app is served.
#[derive(Clone, Copy, Debug)]
enum Server {
    /// `axum::serve`.
    Axum,
    /// `stream_axum::serve`: HTTP/1.1 through hyper's connection builder.
    StreamAxum,
}

/// Starts the server on its own thread and runtime; returns its address.
fn serve(server: Server) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let redis = RedisBroker::connect(&support::redis_url(), ChannelConfig::default())
                .await
                .expect("Redis at REDIS_URL (start it with scripts/redis.sh start)");
            let brokers = Brokers {
                memory: Streaming::builder().broker(MemoryBroker::default()).build(),
                redis: Streaming::builder().broker(redis).build(),
            };
            let app = Router::new()
                .route("/bare", get(bare))
                .route("/memory/{channel}", get(memory_stream))
                .route("/redis/{channel}", get(redis_stream))
                .with_state(brokers);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            match server {
                Server::Axum => axum::serve(listener, app).await.unwrap(),
                Server::StreamAxum => stream_axum::serve(listener, app, std::future::pending()).await.unwrap(),
            }
        });
    });
    rx.recv().unwrap()
}

/// Opens one SSE request and reads its response head.
fn open(addr: SocketAddr, path: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 1024];
    let mut len = 0;
    while !head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut head[len..]).unwrap();
        assert!(n > 0, "the server closed the stream");
        len += n;
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..len])
    );
    socket
}

/// The bytes the server holds per idle stream on `path` (`{}` is replaced by a fresh channel).
fn held_per_stream(addr: SocketAddr, path: &str) -> f64 {
    // Warm up: the first requests set up what the server keeps for good (routes, pools).
    let warm: Vec<TcpStream> = (0..20)
        .map(|_| open(addr, &path.replace("{}", ChannelId::generate().as_str())))
        .collect();
    drop(warm);
    std::thread::sleep(Duration::from_millis(300));
    let paths: Vec<String> = (0..STREAMS)
        .map(|_| path.replace("{}", ChannelId::generate().as_str()))
        .collect();
    let mut sockets = Vec::with_capacity(STREAMS);
    let region = Region::new(GLOBAL);
    for path in &paths {
        sockets.push(open(addr, path));
    }
    // Let the server settle (every stream polled, every timer registered).
    std::thread::sleep(Duration::from_millis(300));
    let stats = region.change();
    drop(sockets);
    std::thread::sleep(Duration::from_millis(300));
    (stats.bytes_allocated as f64 - stats.bytes_deallocated as f64) / STREAMS as f64
}

#[test]
fn an_idle_stream_holds_little_more_than_hyper_does() {
    let kib = |bytes: f64| bytes / 1024.0;
    for server in [Server::Axum, Server::StreamAxum] {
        let addr = serve(server);
        let floor = held_per_stream(addr, "/bare");
        let memory = held_per_stream(addr, "/memory/{}");
        let redis = held_per_stream(addr, "/redis/{}");
        eprintln!(
            "{server:?}: idle stream, bytes held per stream: bare stream (the floor) {:.1} KiB; memory broker \
             {:.1} KiB ({:+.1} KiB over the floor); Redis broker {:.1} KiB ({:+.1} KiB over the floor)",
            kib(floor),
            kib(memory),
            kib(memory - floor),
            kib(redis),
            kib(redis - floor)
        );
        for (name, held) in [("memory", memory), ("redis", redis)] {
            assert!(
                held - floor <= 16.0 * 1024.0,
                "{server:?}: an idle {name} stream holds {:.1} KiB over the floor",
                kib(held - floor)
            );
        }
    }
}
