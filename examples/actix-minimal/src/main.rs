//! The smallest actix-web server on the crates, in memory: `POST /jobs` starts a task that
//! publishes three progress events and `done` to a new channel; `GET /streams/{channel_id}`
//! streams that channel over SSE (its history first, so nothing is missed, then live, then it
//! closes after `done`; `Last-Event-ID` resumes). `LISTEN` sets the address (default
//! 127.0.0.1:3002).

use std::time::Duration;

use actix_web::web::{Data, Json};
use actix_web::{App, HttpServer, web};
use serde_json::{Map, Value, json};
use stream_actix::{ChannelIdPath, LastEventId, Sse, SseError, SseResponse};
use stream_core::{ChannelId, Streaming};

async fn start_job(streaming: Data<Streaming>) -> Json<Value> {
    let channel = ChannelId::generate();
    let emitter = streaming.emitter(channel.clone());
    actix_web::rt::spawn(async move {
        for step in 1..=3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = emitter.progress(step * 33, Some("working"), None).await;
        }
        let _ = emitter.complete(true, None, Map::new()).await;
    });
    Json(json!({ "stream_url": format!("/streams/{channel}") }))
}

async fn stream(
    streaming: Data<Streaming>,
    ChannelIdPath(channel): ChannelIdPath,
    LastEventId(last): LastEventId,
) -> Result<Sse, SseError> {
    Ok(SseResponse::channel(&streaming, channel).resume(last).await?.into())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let streaming = Data::new(Streaming::builder().build());
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:3002".into());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(streaming.clone())
            .route("/jobs", web::post().to(start_job))
            .route("/streams/{channel_id}", web::get().to(stream))
    })
    .h1_allow_half_closed(false)
    .bind(addr)?;
    println!("listening on http://{}", server.addrs()[0]);
    server.run().await
}
