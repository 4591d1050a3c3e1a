//! The demo app on actix-web. Routing and type conversion only: the API's behaviour is in
//! `demo-service`, the SSE responses come from `stream-actix`. The HTTP API is in
//! `docs/http-api.md`.

use std::fmt;
use std::process::ExitCode;

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::web::{self, Bytes, Data};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, Responder, ResponseError};
use demo_service::{ApiError, DemoService, StreamRefusal, USER_HEADER, announce_listening, cancel_on_signal, run_main};
use stream_actix::{LastEventId, Sse, SseError, SseResponse, StreamError};

/// Either kind of error answer.
#[derive(Debug)]
enum AppError {
    Api(ApiError),
    Sse(SseError),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Api(e) => e.fmt(f),
            Self::Sse(e) => e.fmt(f),
        }
    }
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

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Api(e) => StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Self::Sse(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Api(e) => HttpResponse::build(self.status_code()).json(e.body()),
            Self::Sse(e) => e.error_response(),
        }
    }
}

type Reply = Result<HttpResponse, AppError>;

fn user_header(req: &HttpRequest) -> Option<&[u8]> {
    req.headers().get(USER_HEADER).map(|v| v.as_bytes())
}

/// A request body, read up to the `PayloadConfig` limit (`DEMO_MAX_BODY_BYTES`): a larger one is
/// the API's 413 (`payload_too_large`), one that cannot be read its 400 (`invalid_body`).
type Body = Result<Bytes, actix_web::Error>;

fn body(service: &DemoService, body: Body) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large("body", service.max_body_bytes())
        } else {
            ApiError::bad_request("invalid_body", e.to_string())
        }
    })
}

fn query(req: &HttpRequest) -> Option<&str> {
    Some(req.query_string()).filter(|q| !q.is_empty())
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(demo_service::INDEX_HTML)
}

async fn healthz(service: Data<DemoService>) -> HttpResponse {
    HttpResponse::Ok().json(service.health())
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(demo_service::metrics::METRICS_CONTENT_TYPE)
        .body(demo_service::metrics::render())
}

async fn create_deployment(service: Data<DemoService>, req: HttpRequest, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    let created = service.create_deployment(user_header(&req), &bytes).await?;
    Ok(HttpResponse::Accepted().json(created))
}

async fn deploy(service: Data<DemoService>, req: HttpRequest, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    // The lease first: a 429 starts nothing. Then subscribe (under the lease), then start the job.
    let (deployment, lease) = service.open_deployment(user_header(&req), &bytes).await?;
    let reply = SseResponse::channel(service.streaming(), deployment.ctx.channel_id().clone())
        .options(service.sse_options(None).lease(lease))
        .await?;
    service.start(deployment).await?;
    Ok(Sse::from(reply).respond_to(&req))
}

async fn stream(
    service: Data<DemoService>,
    channel: web::Path<String>,
    req: HttpRequest,
    last: Result<LastEventId, SseError>,
) -> Reply {
    // Who is asking comes first: a bad Last-Event-ID (400) waits for that.
    let (channel, user) = service
        .authorize_stream(&channel, user_header(&req), query(&req))
        .await?;
    let LastEventId(last) = last?;
    let reply = SseResponse::channel(service.streaming(), channel)
        .options(service.sse_options(last))
        .lease(user)
        .await?;
    Ok(Sse::from(reply).respond_to(&req))
}

async fn chat(service: Data<DemoService>, req: HttpRequest, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    let chat = service.open_chat(user_header(&req), &bytes).await?;
    let headers = chat.headers();
    let reply = chat.response.await?;
    Ok(with_headers(Sse::from(reply).respond_to(&req), headers))
}

/// `response` with `headers` added (a value that is not a valid header value is left out).
fn with_headers(mut response: HttpResponse, headers: impl IntoIterator<Item = (&'static str, String)>) -> HttpResponse {
    use actix_web::http::header::{HeaderName, HeaderValue};
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// An AI SDK answer: the body as SSE, with the protocol's headers.
fn ai_chat_response(chat: demo_service::AiChatStream, req: &HttpRequest) -> HttpResponse {
    let (headers, reply) = chat.into_reply();
    with_headers(Sse::from(reply).respond_to(req), headers)
}

async fn ai_chat(service: Data<DemoService>, req: HttpRequest, bytes: Body) -> Reply {
    let bytes = body(&service, bytes)?;
    let chat = service.open_ai_chat(user_header(&req), &bytes).await?;
    Ok(ai_chat_response(chat, &req))
}

async fn ai_chat_resume(service: Data<DemoService>, req: HttpRequest, chat: web::Path<String>) -> Reply {
    match service.resume_ai_chat(&chat, user_header(&req), query(&req)).await? {
        Some(chat) => Ok(ai_chat_response(chat, &req)),
        None => Ok(HttpResponse::NoContent().finish()),
    }
}

async fn cancel(service: Data<DemoService>, req: HttpRequest, channel: web::Path<String>) -> Reply {
    let body = service.cancel_stream(&channel, user_header(&req), query(&req)).await?;
    Ok(HttpResponse::Accepted().json(body))
}

async fn events(service: Data<DemoService>, req: HttpRequest) -> Reply {
    let events = service.events(user_header(&req), query(&req)).await?;
    Ok(HttpResponse::Ok().json(events))
}

#[actix_web::main]
async fn main() -> ExitCode {
    run_main(APP, run()).await
}

const APP: &str = "actix-app";

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let service = DemoService::from_env().await?;
    let config = service.config();
    let data = Data::new(service.clone());
    let body_limit = service.max_body_bytes();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            // The `Bytes` bodies' limit; `body` answers a larger one with the API's 413.
            .app_data(web::PayloadConfig::new(body_limit))
            .route("/", web::get().to(index))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .route("/deployments", web::post().to(create_deployment))
            .route("/deploy", web::post().to(deploy))
            .route("/streams/{channel_id}", web::get().to(stream))
            .route("/streams/{channel_id}/cancel", web::post().to(cancel))
            .route("/api/chat", web::post().to(ai_chat))
            .route("/api/chat/{chat_id}/stream", web::get().to(ai_chat_resume))
            .route("/chat/stream", web::post().to(chat))
            .route("/events", web::get().to(events))
    })
    // A client that goes away closes its side of the connection: drop its stream (and release its
    // lease) right then, not at the next ping.
    .h1_allow_half_closed(false)
    // SSE frames are small writes that must leave at once: no Nagle delay (docs/operations.md).
    .tcp_nodelay(true)
    // Our own signal handling: the token ends every open stream, then the server stops.
    .shutdown_signal(service.shutdown_token().clone().cancelled_owned())
    .shutdown_timeout(10)
    .bind((config.host, config.port))?;
    announce_listening(APP, server.addrs()[0], &service);
    cancel_on_signal(service.shutdown_token());
    server.run().await?;
    service.close().await;
    Ok(())
}
