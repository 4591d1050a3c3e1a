//! Producers run detached from their request ([`SseResponse::spawn`](crate::sse::SseResponse::spawn)):
//! the producer keeps emitting when its client goes, under one lease of its user, until it ends,
//! is cancelled ([`EventPublisher::request_cancel`]) or runs out of time.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::context::{Emitter, StreamContext};
use crate::lease::StreamLease;
use crate::publish::EventPublisher;

/// How long a spawned producer may run before it is stopped with `done`
/// `{"success": false, "reason": "timeout"}`: 10 minutes.
pub const DEFAULT_MAX_RUN_TIME: Duration = Duration::from_secs(600);

/// How often a spawned producer's task checks for a cancel request: a cancel reaches the producer
/// within this (plus one backend round trip).
pub const CANCEL_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// A producer's future, boxed, with its error as text.
pub(crate) type ProducerFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A producer: made from the emitter of its channel.
pub(crate) type Producer = Box<dyn FnOnce(Arc<Emitter>) -> ProducerFuture + Send>;

/// Boxes a producer closure.
pub(crate) fn boxed<F, Fut, E>(producer: F) -> Producer
where
    F: FnOnce(Arc<Emitter>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    Box::new(move |emitter| {
        let work = producer(emitter);
        Box::pin(async move { work.await.map_err(|e| e.to_string()) })
    })
}

/// A producer to spawn, and its limits.
pub(crate) struct Spawn {
    pub(crate) ctx: StreamContext,
    pub(crate) producer: Producer,
    pub(crate) max_run_time: Duration,
}

/// How a producer ended.
enum End {
    Finished,
    Failed(String),
    Cancelled,
    TimedOut,
}

/// Starts `producer` on a task of its own, detached from any request: what
/// [`SseResponse::spawn`](crate::sse::SseResponse::spawn) does before it answers, for callers that
/// answer in another format (the AI SDK's, say: [`crate::ai_sdk`]). The producer gets the emitter
/// of `ctx`'s channel through `publisher`; `lease` (if any) is held until it ends; it is stopped
/// after `max_run_time` or on a cancel request, as [`SseResponse::spawn`](crate::sse::SseResponse::spawn)
/// describes. Needs a tokio runtime.
pub fn spawn_producer<F, Fut, E>(
    publisher: Arc<dyn EventPublisher>,
    ctx: StreamContext,
    producer: F,
    lease: Option<StreamLease>,
    max_run_time: Duration,
) where
    F: FnOnce(Arc<Emitter>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Display + Send + 'static,
{
    start(
        publisher,
        Spawn {
            ctx,
            producer: boxed(producer),
            max_run_time,
        },
        lease.map(StreamLease::auto_refresh),
    );
}

/// Starts `spawn`'s producer on a task of its own, holding `lease` until it ends. When it ends
/// without having emitted `done` itself, the task emits one: `{"success": true}` after a
/// producer that returned `Ok`, `{"success": false, "error": …}` after an error,
/// `{"success": false, "cancelled": true}` after a cancel request, and
/// `{"success": false, "reason": "timeout"}` after the maximum run time. On a cancel or a timeout
/// the producer's future is dropped first, so whatever it awaited (a model call) stops.
pub(crate) fn start(publisher: Arc<dyn EventPublisher>, spawn: Spawn, lease: Option<StreamLease>) {
    let Spawn {
        ctx,
        producer,
        max_run_time,
    } = spawn;
    let channel = ctx.channel_id().clone();
    let emitter = Arc::new(ctx.bind(publisher.clone()));
    let work = producer(emitter.clone());
    let span = tracing::debug_span!("spawned_producer", channel = %channel);
    let task = async move {
        // Released when the producer's task ends, however it ends.
        let _lease = lease;
        let cancelled = async {
            let mut tick = tokio::time::interval(CANCEL_POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match publisher.cancel_requested(&channel).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "cancel check failed; checking again"),
                }
            }
        };
        let end = tokio::select! {
            result = work => match result {
                Ok(()) => End::Finished,
                Err(e) => End::Failed(e),
            },
            () = cancelled => End::Cancelled,
            () = tokio::time::sleep(max_run_time) => End::TimedOut,
        };
        if emitter.is_closed() {
            tracing::debug!("producer finished");
            return;
        }
        let object = |value: Value| match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        let done = match &end {
            End::Finished => emitter.complete(true, None, Map::new()).await,
            End::Failed(e) => {
                tracing::warn!(error = %e, "producer failed");
                emitter.complete(false, Some(e), Map::new()).await
            }
            End::Cancelled => {
                tracing::debug!("producer cancelled");
                emitter.complete(false, None, object(json!({"cancelled": true}))).await
            }
            End::TimedOut => {
                tracing::warn!(max_run_time = ?max_run_time, "producer ran out of time");
                emitter
                    .complete(false, None, object(json!({"reason": "timeout"})))
                    .await
            }
        };
        if let Err(e) = done {
            tracing::warn!(error = %e, "could not end the spawned stream with done");
        }
    };
    tokio::spawn(tracing::Instrument::instrument(task, span));
}
