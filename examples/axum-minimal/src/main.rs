//! The smallest axum server on the crates, in memory: `POST /jobs` starts a task that publishes
//! three progress events and `done` to a new channel; `GET /streams/{channel_id}` streams that
//! channel over SSE (its history first, so nothing is missed, then live, then it closes after
//! `done`; `Last-Event-ID` resumes). `LISTEN` sets the address (default 127.0.0.1:3001).

use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use stream_axum::{ChannelIdPath, LastEventId, Sse, SseError, SseResponse};
use stream_core::{ChannelId, Streaming};

async fn start_job(State(streaming): State<Streaming>) -> Json<Value> {
    let channel = ChannelId::generate();
    let emitter = streaming.emitter(channel.clone());
    tokio::spawn(async move {
        for step in 1..=3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = emitter.progress(step * 33, Some("working"), None).await;
        }
        let _ = emitter.complete(true, None, Map::new()).await;
    });
    Json(json!({ "stream_url": format!("/streams/{channel}") }))
}

async fn stream(
    State(streaming): State<Streaming>,
    ChannelIdPath(channel): ChannelIdPath,
    LastEventId(last): LastEventId,
) -> Result<Sse, SseError> {
    Ok(SseResponse::channel(&streaming, channel).resume(last).await?.into())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let app = Router::new()
        .route("/jobs", post(start_job))
        .route("/streams/{channel_id}", get(stream))
        .with_state(Streaming::builder().build());
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    stream_axum::serve(listener, app, std::future::pending()).await
}
