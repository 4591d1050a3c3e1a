#![doc = include_str!("../README.md")]

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use serde_json::{Map, Value, json};
use stream_core::memory::MemoryLeaseStore;
use stream_core::{ChannelConfig, ChannelId, EventId, StreamContext, StreamLeaseConfig, Streaming};
use stream_pubsub::RedisBroker;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "The benchmark's SSE server on the stream-rs crates")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Serve with actix-web through stream-actix instead of axum through stream-axum.
    #[arg(long)]
    actix: bool,
    /// Use the in-memory backends instead of the Redis broker from `REDIS_URL`.
    #[arg(long)]
    memory: bool,
}

/// Why a publish request was refused or failed.
#[derive(Debug)]
enum PubError {
    /// Bad channel id or a body that is not a JSON object: 400.
    BadRequest(String),
    /// The publisher failed: 503.
    Publish(String),
}

impl PubError {
    fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Publish(_) => 503,
        }
    }

    fn body(&self) -> String {
        let (code, message) = match self {
            Self::BadRequest(m) => ("bad_request", m),
            Self::Publish(m) => ("publish_failed", m),
        };
        json!({"error": code, "message": message}).to_string()
    }
}

fn channel(raw: &str) -> Result<ChannelId, PubError> {
    ChannelId::new(raw).map_err(|e| PubError::BadRequest(e.to_string()))
}

/// `POST /pub/{ch}`, shared by both frameworks: one `data` event through an emitter.
async fn publish(streaming: &Streaming, raw_channel: &str, body: &[u8]) -> Result<String, PubError> {
    let channel = channel(raw_channel)?;
    let payload: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| PubError::BadRequest(format!("body is not a JSON object: {e}")))?;
    let emitter = StreamContext::builder()
        .channel_id(channel)
        .build()
        .bind(streaming.publisher.clone());
    let id: EventId = emitter
        .data(payload)
        .await
        .map_err(|e| PubError::Publish(e.to_string()))?;
    Ok(json!({"id": id.to_string()}).to_string())
}

/// The axum app.
mod axum_app {
    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, post};
    use stream_axum::{Sse, SseError, SseResponse};
    use stream_core::Streaming;

    use super::{PubError, channel, publish};

    fn json_response(status: u16, body: String) -> Response {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    }

    impl IntoResponse for PubError {
        fn into_response(self) -> Response {
            json_response(self.status(), self.body())
        }
    }

    async fn sub(State(streaming): State<Streaming>, Path(raw): Path<String>) -> Response {
        let channel = match channel(&raw) {
            Ok(channel) => channel,
            Err(e) => return e.into_response(),
        };
        match SseResponse::channel(&streaming, channel).await {
            Ok(reply) => Sse::from(reply).into_response(),
            Err(e) => SseError::from(e).into_response(),
        }
    }

    async fn publish_route(State(streaming): State<Streaming>, Path(raw): Path<String>, body: Bytes) -> Response {
        match publish(&streaming, &raw, &body).await {
            Ok(body) => json_response(200, body),
            Err(e) => e.into_response(),
        }
    }

    /// The floor an idle stream cannot go below on this server: a bare `text/event-stream`
    /// response whose body never yields, with no broker, no replay and no pipeline. The benchmark's
    /// idle-memory scenario measures it next to `/sub/{ch}` (as the server `bare-axum`).
    async fn bare(Path(_): Path<String>) -> Response {
        let body = axum::body::Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
    }

    /// `GET /sub/{ch}`, `POST /pub/{ch}`, and the floor `GET /bare/sub/{ch}`.
    pub(super) fn router(streaming: Streaming) -> Router {
        Router::new()
            .route("/sub/{ch}", get(sub))
            .route("/bare/sub/{ch}", get(bare))
            .route("/pub/{ch}", post(publish_route))
            .with_state(streaming)
    }
}

/// The actix-web app.
mod actix_app {
    use actix_web::Responder;
    use actix_web::http::StatusCode;
    use actix_web::web::{Bytes, Data, Path};
    use actix_web::{HttpResponse, web};
    use stream_actix::{Sse, SseError, SseResponse};
    use stream_core::Streaming;

    use super::{PubError, channel, publish};

    fn error_response(e: PubError) -> HttpResponse {
        HttpResponse::build(StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .content_type("application/json")
            .body(e.body())
    }

    async fn sub(streaming: Data<Streaming>, raw: Path<String>, req: actix_web::HttpRequest) -> HttpResponse {
        let channel = match channel(&raw) {
            Ok(channel) => channel,
            Err(e) => return error_response(e),
        };
        match SseResponse::channel(&streaming, channel).await {
            Ok(reply) => Sse::from(reply).respond_to(&req),
            Err(e) => actix_web::ResponseError::error_response(&SseError::from(e)),
        }
    }

    async fn publish_route(streaming: Data<Streaming>, raw: Path<String>, body: Bytes) -> HttpResponse {
        match publish(&streaming, &raw, &body).await {
            Ok(body) => HttpResponse::Ok().content_type("application/json").body(body),
            Err(e) => error_response(e),
        }
    }

    /// Adds `GET /sub/{ch}` and `POST /pub/{ch}`.
    pub(super) fn configure(cfg: &mut web::ServiceConfig) {
        cfg.route("/sub/{ch}", web::get().to(sub))
            .route("/pub/{ch}", web::post().to(publish_route));
    }
}

/// The backends: the Redis broker from `REDIS_URL`, or everything in memory.
async fn backends(memory: bool) -> Result<Streaming, Box<dyn std::error::Error>> {
    let channel_config = ChannelConfig::default();
    if memory {
        return Ok(Streaming::in_memory(channel_config, StreamLeaseConfig::default()));
    }
    let builder = RedisBroker::from_env().ok_or("REDIS_URL is not set (or pass --memory)")?;
    let broker = Arc::new(builder.config(channel_config.clone()).connect().await?);
    Ok(Streaming::from_parts(
        broker.clone(),
        broker.clone(),
        broker,
        Arc::new(MemoryLeaseStore::new(StreamLeaseConfig::default())),
        None,
        channel_config,
    ))
}

fn announce(addr: SocketAddr, args: &Args) {
    let framework = if args.actix { "actix" } else { "axum" };
    let backend = if args.memory { "memory" } else { "redis" };
    let mut out = std::io::stdout().lock();
    // The smoke test and the bench script wait for this line.
    let _ = writeln!(out, "bench-server listening on http://{addr} ({framework}, {backend})");
    let _ = out.flush();
}

async fn run_axum(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let streaming = backends(args.memory).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    announce(listener.local_addr()?, &args);
    // As docs/operations.md advises: TCP_NODELAY, HTTP/1.1 through hyper, small idle connections.
    stream_axum::serve(listener, axum_app::router(streaming), std::future::pending()).await?;
    Ok(())
}

async fn run_actix(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let streaming = actix_web::web::Data::new(backends(args.memory).await?);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(streaming.clone())
            .configure(actix_app::configure)
    })
    .tcp_nodelay(true)
    .bind(args.listen)?;
    announce(server.addrs()[0], &args);
    server.run().await?;
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.actix {
        actix_web::rt::System::new().block_on(run_actix(args))
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            .and_then(|rt| rt.block_on(run_axum(args)))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-server: {e}");
            ExitCode::FAILURE
        }
    }
}
