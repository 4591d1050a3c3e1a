//! The web adapter suite: what every adapter must answer, written once and run in process by
//! `stream-axum` and `stream-actix` through two small conversions of their own. The HTTP
//! behaviour over a real socket is in `integration-tests/tests/adapters.rs`.

use std::time::Duration;

use crate::event::{EventId, InvalidEventId};
use crate::ids::{ChannelId, UserId};
use crate::lease::{LeaseError, StreamLimitExceeded};
use crate::sse::StreamError;
use crate::subscribe::SubscribeError;

/// An HTTP answer as plain data, whatever the framework.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// Every header as `name: value`, the name in lower case. The suite sorts them before
    /// comparing (actix keeps no order).
    pub headers: Vec<String>,
    /// The body.
    pub body: String,
}

/// Runs every check.
///
/// - `answer` turns a [`StreamError`] into the adapter's error response (through its error type)
///   and reads that back as an [`Answer`].
/// - `read` runs the adapter's Last-Event-ID extractor on a `GET` of `uri` (a path and query)
///   with the `Last-Event-ID` header bytes `header`, and gives the resume point, or the rejection
///   read back as an [`Answer`].
pub async fn run<A, R>(answer: A, read: R)
where
    A: AsyncFn(StreamError) -> Answer,
    R: AsyncFn(Option<&[u8]>, &str) -> Result<Option<EventId>, Answer>,
{
    the_limit_is_429_with_retry_after_at_least_one_second(&answer).await;
    failures_are_503_and_bad_ids_400(&answer).await;
    last_event_id_from_the_header_then_the_query(&read).await;
    invalid_last_event_ids_are_rejected_with_400_json(&read).await;
}

fn sorted(mut answer: Answer) -> Answer {
    answer.headers.sort();
    answer
}

/// An adapter's error answer, checked for its request id (a ULID in the body's `request_id`,
/// the same in `X-Request-Id`) and then without it, so that the rest compares byte for byte.
fn received(answer: Answer) -> Answer {
    let mut body: serde_json::Value = serde_json::from_str(&answer.body).expect("a JSON error body");
    let id = body
        .as_object_mut()
        .and_then(|b| b.remove("request_id"))
        .and_then(|id| id.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no request_id in {}", answer.body));
    assert!(id.parse::<ulid::Ulid>().is_ok(), "request id {id:?} is not a ULID");
    let header = format!("x-request-id: {id}");
    assert!(answer.headers.contains(&header), "{:?} lacks {header}", answer.headers);
    sorted(Answer {
        status: answer.status,
        headers: answer.headers.into_iter().filter(|h| *h != header).collect(),
        body: body.to_string(),
    })
}

/// An error answer: `status`, a JSON `body`, `Cache-Control: no-store` and the `extra` headers.
fn json_error(status: u16, extra: &[&str], body: String) -> Answer {
    let headers = ["cache-control: no-store", "content-type: application/json"]
        .iter()
        .chain(extra);
    sorted(Answer {
        status,
        headers: headers.map(|h| h.to_string()).collect(),
        body,
    })
}

/// `StreamLimitExceeded`: `429`, `Retry-After` (at least 1), `Cache-Control: no-store`, and the
/// JSON body with `limit` and `retry_after`, byte for byte.
pub async fn the_limit_is_429_with_retry_after_at_least_one_second(answer: &impl AsyncFn(StreamError) -> Answer) {
    let limit = StreamLimitExceeded {
        user_id: UserId::new("u1").expect("valid user id"),
        limit: 2,
        retry_after: Duration::from_millis(300),
    };
    let body = concat!(
        r#"{"error":"stream_limit_exceeded","limit":2,"#,
        r#""message":"user u1 already has 2 concurrent streams; retry in 1 s","retry_after":1}"#
    );
    let expected = json_error(429, &["retry-after: 1"], body.into());
    assert_eq!(received(answer(limit.into()).await), expected);
}

/// A failed lease store or subscription: `503`, with a generic message that does not repeat the
/// backend's error; an invalid event id: `400`; a malformed channel id: `404`. All with
/// `Cache-Control: no-store`, no `Retry-After`, and
/// `{"error": <code>, "message": <text>, "request_id": <id>}`.
pub async fn failures_are_503_and_bad_ids_400(answer: &impl AsyncFn(StreamError) -> Answer) {
    let bad_channel = ChannelId::new("not a channel").expect_err("a space is not allowed");
    let cases: [(StreamError, u16, &str); 4] = [
        (LeaseError::Backend("down".into()).into(), 503, "stream_unavailable"),
        (SubscribeError::Closed("slow".into()).into(), 503, "stream_unavailable"),
        (InvalidEventId("x".into()).into(), 400, "invalid_last_event_id"),
        (StreamError::InvalidChannelId(bad_channel), 404, "not_found"),
    ];
    for (error, status, code) in cases {
        let message = serde_json::Value::from(if status == 503 {
            crate::sse::BACKEND_UNAVAILABLE.to_owned()
        } else {
            error.to_string()
        });
        let expected = json_error(status, &[], format!(r#"{{"error":"{code}","message":{message}}}"#));
        assert_eq!(received(answer(error).await), expected);
    }
}

/// The header gives the resume point; failing that (absent or empty), the `last_event_id` query
/// parameter, form-decoded; neither: none.
pub async fn last_event_id_from_the_header_then_the_query(
    read: &impl AsyncFn(Option<&[u8]>, &str) -> Result<Option<EventId>, Answer>,
) {
    let [a, b] = [EventId::generate(), EventId::generate()];
    let header = a.to_string();
    let header = Some(header.as_bytes());
    let query = format!("/s?last_event_id={b}");
    assert_eq!(read(header, "/s").await, Ok(Some(a)));
    assert_eq!(read(None, &query).await, Ok(Some(b)));
    assert_eq!(read(header, &query).await, Ok(Some(a)), "the header wins");
    assert_eq!(read(Some(b""), &query).await, Ok(Some(b)), "an empty header is absent");
    assert_eq!(read(None, &format!("/s?x=1&last_event_id=%20{b}+")).await, Ok(Some(b)));
    assert_eq!(read(None, "/s?last_event_id=").await, Ok(None));
    assert_eq!(read(None, "/s").await, Ok(None));
}

/// An id that does not parse, in the header or the query, or a header that is not ASCII: `400`
/// with the `invalid_last_event_id` JSON body.
pub async fn invalid_last_event_ids_are_rejected_with_400_json(
    read: &impl AsyncFn(Option<&[u8]>, &str) -> Result<Option<EventId>, Answer>,
) {
    let good = format!("/s?last_event_id={}", EventId::generate());
    let requests: [(Option<&[u8]>, &str, &str); 3] = [
        (
            Some(b"not-an-id"),
            "/s",
            r#""invalid event id \"not-an-id\": expected a 26-character ULID""#,
        ),
        (
            None,
            "/s?last_event_id=nope",
            r#""invalid event id \"nope\": expected a 26-character ULID""#,
        ),
        (
            Some("\u{e9}".as_bytes()),
            &good,
            r#""invalid event id \"<not ASCII>\": expected a 26-character ULID""#,
        ),
    ];
    for (header, uri, message) in requests {
        let body = format!(r#"{{"error":"invalid_last_event_id","message":{message}}}"#);
        let expected = json_error(400, &[], body);
        let rejection = read(header, uri).await.expect_err("an invalid id is rejected");
        assert_eq!(received(rejection), expected, "{uri} {header:?}");
    }
}
