//! The demo app on axum. Routing and type conversion only: the API's behaviour is in
//! `demo-service`, the SSE responses come from `stream-axum`. The HTTP API is in
//! `docs/http-api.md`.

use std::process::ExitCode;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use demo_service::{ApiError, DemoService, StreamRefusal, USER_HEADER, announce_listening, cancel_on_signal, run_main};
use stream_axum::{LastEventId, Sse, SseError, SseResponse, StreamError};

/// Either kind of error answer.
enum AppError {
    Api(ApiError),
    Sse(SseError),
}

impl From<ApiError> for AppError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<SseError> for AppError {
    fn from(e: SseError) -> Self {
        Self::Sse(e)
    }
}

impl From<StreamError> for AppError {
    fn from(e: StreamError) -> Self {
        Self::Sse(e.into())
    }
}

impl From<StreamRefusal> for AppError {
    fn from(e: StreamRefusal) -> Self {
        match e {
            StreamRefusal::Api(e) => Self::Api(e),
            StreamRefusal::Lease(e) => e.into(),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, Json(e.body())).into_response()
            }
            Self::Sse(e) => e.into_response(),
        }
    }
}

type Reply = Result<Response, AppError>;

fn user_header(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(USER_HEADER).map(|v| v.as_bytes())
}

/// A request body, read up to the `DefaultBodyLimit` (`DEMO_MAX_BODY_BYTES`): a larger one is the
/// API's 413 (`payload_too_large`), one that cannot be read its 400 (`invalid_body`).
type Body = Result<Bytes, BytesRejection>;

fn body(service: &DemoService, body: Body) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large("body", service.max_body_bytes())
        } else {
            ApiError::bad_request("invalid_body", rejection.body_text())
        }
    })
}

async fn index() -> Html<&'static str> {
    Html(demo_service::INDEX_HTML)
}

async fn healthz(State(service): State<DemoService>) -> Json<serde_json::Value> {
    Json(service.health())
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            demo_service::metrics::METRICS_CONTENT_TYPE,
        )],
        demo_service::metrics::render(),
    )
}

async fn create_deployment(State(service): State<DemoService>, headers: HeaderMap, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    let created = service.create_deployment(user_header(&headers), &bytes).await?;
    Ok((StatusCode::ACCEPTED, Json(created)).into_response())
}

async fn deploy(State(service): State<DemoService>, headers: HeaderMap, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    // The lease first: a 429 starts nothing. Then subscribe (under the lease), then start the job.
    let (deployment, lease) = service.open_deployment(user_header(&headers), &bytes).await?;
    let reply = SseResponse::channel(service.streaming(), deployment.ctx.channel_id().clone())
        .options(service.sse_options(None).lease(lease))
        .await?;
    service.start(deployment).await?;
    Ok(Sse::from(reply).into_response())
}

async fn stream(
    State(service): State<DemoService>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
    last: Result<LastEventId, SseError>,
) -> Reply {
    // A segment that does not even decode (`%FF`) is a malformed channel id, as empty is: 404 once
    // the caller is known, as for any other. A bad Last-Event-ID (400) also waits for that.
    let channel = channel.map(|Path(channel)| channel).unwrap_or_default();
    let (channel, user) = service
        .authorize_stream(&channel, user_header(&headers), uri.query())
        .await?;
    let LastEventId(last) = last?;
    let reply = SseResponse::channel(service.streaming(), channel)
        .options(service.sse_options(last))
        .lease(user)
        .await?;
    Ok(Sse::from(reply).into_response())
}

async fn chat(State(service): State<DemoService>, headers: HeaderMap, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    let chat = service.open_chat(user_header(&headers), &bytes).await?;
    let headers = chat.headers();
    let reply = chat.response.await?;
    Ok(with_headers(Sse::from(reply).into_response(), headers))
}

/// `response` with `headers` added (a value that is not a valid header value is left out).
fn with_headers(mut response: Response, headers: impl IntoIterator<Item = (&'static str, String)>) -> Response {
    for (name, value) in headers {
        if let Ok(value) = value.parse() {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// An AI SDK answer: the body as SSE, with the protocol's headers.
fn ai_chat_response(chat: demo_service::AiChatStream) -> Response {
    let (headers, reply) = chat.into_reply();
    with_headers(Sse::from(reply).into_response(), headers)
}

async fn ai_chat(State(service): State<DemoService>, headers: HeaderMap, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    let chat = service.open_ai_chat(user_header(&headers), &bytes).await?;
    Ok(ai_chat_response(chat))
}

async fn ai_chat_resume(
    State(service): State<DemoService>,
    chat: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Reply {
    let chat = chat.map(|Path(chat)| chat).unwrap_or_default();
    match service
        .resume_ai_chat(&chat, user_header(&headers), uri.query())
        .await?
    {
        Some(chat) => Ok(ai_chat_response(chat)),
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

async fn cancel(
    State(service): State<DemoService>,
    channel: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    uri: Uri,
) -> Reply {
    let channel = channel.map(|Path(channel)| channel).unwrap_or_default();
    let body = service
        .cancel_stream(&channel, user_header(&headers), uri.query())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

async fn events(State(service): State<DemoService>, headers: HeaderMap, uri: Uri) -> Reply {
    let events = service.events(user_header(&headers), uri.query()).await?;
    Ok(Json(events).into_response())
}

fn router(service: DemoService) -> Router {
    let body_limit = DefaultBodyLimit::max(service.max_body_bytes());
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/deployments", post(create_deployment))
        .route("/deploy", post(deploy))
        .route("/streams/{channel_id}", get(stream))
        .route("/streams/{channel_id}/cancel", post(cancel))
        .route("/api/chat", post(ai_chat))
        .route("/api/chat/{chat_id}/stream", get(ai_chat_resume))
        .route("/chat/stream", post(chat))
        .route("/events", get(events))
        .layer(body_limit)
        .with_state(service)
}

#[tokio::main]
async fn main() -> ExitCode {
    run_main(APP, run()).await
}

const APP: &str = "axum-app";

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let service = DemoService::from_env().await?;
    let config = service.config();
    let listener = tokio::net::TcpListener::bind((config.host, config.port)).await?;
    announce_listening(APP, listener.local_addr()?, &service);
    // SIGINT/SIGTERM ends every open stream, so the graceful shutdown does not wait on them.
    cancel_on_signal(service.shutdown_token());
    let shutdown = service.shutdown_token().clone();
    // SSE-tuned: TCP_NODELAY, HTTP/1.1 through hyper, small idle connections (docs/operations.md).
    stream_axum::serve(listener, router(service.clone()), shutdown.cancelled_owned()).await?;
    service.close().await;
    Ok(())
}
