//! What is this adapter's own, in process: stream-core's web adapter suite run through
//! [`SseError`]'s `IntoResponse` and the [`LastEventId`] extractor. The HTTP behaviour shared
//! with stream-actix runs over a real socket against both adapters in
//! `integration-tests/tests/adapters.rs`.

use axum::body::to_bytes;
use axum::extract::FromRequestParts;
use axum::http::{HeaderValue, Request};
use axum::response::{IntoResponse, Response};
use stream_axum::{LastEventId, SseError};
use stream_core::conformance::adapter::{self, Answer};
use stream_core::sse::StreamError;

/// Reads a response back as plain data.
async fn answer(response: Response) -> Answer {
    let status = response.status().as_u16();
    let headers = (response.headers().iter())
        .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
        .collect();
    let body = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    Answer { status, headers, body }
}

#[tokio::test]
async fn errors_and_the_last_event_id_extractor_conform() {
    let respond = async |error: StreamError| answer(SseError::from(error).into_response()).await;
    let read = async |header: Option<&[u8]>, uri: &str| {
        let mut request = Request::get(uri);
        if let Some(value) = header {
            request = request.header("Last-Event-ID", HeaderValue::from_bytes(value).unwrap());
        }
        let (mut head, ()) = request.body(()).unwrap().into_parts();
        match LastEventId::from_request_parts(&mut head, &()).await {
            Ok(LastEventId(id)) => Ok(id),
            Err(rejection) => Err(answer(rejection.into_response()).await),
        }
    };
    adapter::run(respond, read).await;
}

#[tokio::test]
async fn the_error_status_is_stream_cores() {
    let error = SseError::from(stream_core::InvalidEventId("x".into()));
    assert_eq!(error.status().as_u16(), error.0.status());
    assert_eq!(error.code(), "invalid_last_event_id");
    // Headers in the order they go out: the JSON type, then stream-core's error headers.
    let limit = stream_core::StreamLimitExceeded {
        user_id: stream_core::UserId::new("u1").unwrap(),
        limit: 1,
        retry_after: std::time::Duration::from_secs(5),
    };
    let names: Vec<_> = (SseError::from(limit).into_response().headers().keys())
        .map(|name| name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["content-type", "retry-after", "cache-control", "x-request-id"]);
}
