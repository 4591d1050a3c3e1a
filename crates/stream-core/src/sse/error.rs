//! Why an SSE response could not be made, and the HTTP answer for it, written once for every web
//! adapter. The adapters only convert an [`ErrorAnswer`] ([`StreamError::answer`]) into their
//! framework's response.
//!
//! No backend internals reach a client: a failed backend is answered with a code, a generic
//! message and a request id, and the backend's own error (which may name hosts and URLs) goes only
//! to the log, with that request id.
//!
//! Plain numbers and strings, no `http` types: actix speaks http 0.2 and axum http 1, and
//! stream-core keeps out of both.

use serde_json::{Value, json};

use crate::event::InvalidEventId;
use crate::ids::InvalidId;
use crate::lease::{AcquireError, LeaseError, StreamLimitExceeded};
use crate::subscribe::SubscribeError;

/// Why an SSE response could not be made. Every variant is answered with a JSON body
/// `{"error": <code>, "message": <text>, "request_id": <id>, …}` and the headers
/// `Cache-Control: no-store` and `X-Request-Id` ([`answer`](Self::answer)).
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The user is at the stream cap: `429 Too Many Requests`, with `Retry-After` and the fields
    /// `limit` and `retry_after` in the body.
    #[error(transparent)]
    LimitExceeded(#[from] StreamLimitExceeded),
    /// The lease store failed: `503 Service Unavailable`.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The subscription failed: `503 Service Unavailable`.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// The `Last-Event-ID` header or `last_event_id` query is not an event id: `400 Bad Request`.
    #[error(transparent)]
    InvalidLastEventId(#[from] InvalidEventId),
    /// The channel id in the path is malformed: `404 Not Found`, as for a channel that does not
    /// exist (the adapters' channel id extractors answer it).
    /// (No `From`: an [`InvalidId`] may name a user or a lease.)
    #[error("no such channel: {0}")]
    InvalidChannelId(InvalidId),
}

impl From<AcquireError> for StreamError {
    fn from(e: AcquireError) -> Self {
        match e {
            AcquireError::LimitExceeded(e) => Self::LimitExceeded(e),
            AcquireError::Store(e) => Self::Lease(e),
        }
    }
}

impl StreamError {
    /// The HTTP status code this error is answered with: 429, 503, 400 or 404.
    pub fn status(&self) -> u16 {
        match self {
            Self::LimitExceeded(_) => 429,
            Self::Lease(_) | Self::Subscribe(_) => 503,
            Self::InvalidLastEventId(_) => 400,
            Self::InvalidChannelId(_) => 404,
        }
    }

    /// The machine-readable `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::LimitExceeded(_) => "stream_limit_exceeded",
            Self::Lease(_) | Self::Subscribe(_) => "stream_unavailable",
            Self::InvalidLastEventId(_) => "invalid_last_event_id",
            Self::InvalidChannelId(_) => "not_found",
        }
    }

    /// For [`LimitExceeded`](Self::LimitExceeded), the `Retry-After` seconds: the limit's
    /// `retry_after`, at least 1, so that clients back off. `None` for the other variants.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::LimitExceeded(e) => Some(e.retry_after.as_secs().max(1)),
            _ => None,
        }
    }

    /// Whether a backend failed (`503`): its message is then generic, and its error is logged.
    pub fn is_backend_failure(&self) -> bool {
        self.status() >= 500
    }

    /// The `message` of the body: the error itself for what the client can fix (its own input,
    /// its stream cap), a generic sentence when a backend failed.
    pub fn public_message(&self) -> String {
        if self.is_backend_failure() {
            BACKEND_UNAVAILABLE.to_owned()
        } else {
            self.to_string()
        }
    }

    /// The JSON body: `{"error": <code>, "message": <public message>, "request_id": <id>}`, plus
    /// `limit` and `retry_after` (seconds) for [`LimitExceeded`](Self::LimitExceeded).
    pub fn json_body(&self, request_id: &str) -> Value {
        let mut body = json!({"error": self.code(), "message": self.public_message(), "request_id": request_id});
        if let (Self::LimitExceeded(e), Some(secs)) = (self, self.retry_after_secs()) {
            body["limit"] = e.limit.into();
            body["retry_after"] = secs.into();
        }
        body
    }

    /// The headers the answer carries besides its `Content-Type: application/json`, in order,
    /// as (lower-case name, value): `retry-after` (only for
    /// [`LimitExceeded`](Self::LimitExceeded)), `cache-control: no-store`, `x-request-id`.
    pub fn headers(&self, request_id: &str) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(3);
        if let Some(secs) = self.retry_after_secs() {
            headers.push(("retry-after", secs.to_string()));
        }
        headers.push(("cache-control", "no-store".to_owned()));
        headers.push(("x-request-id", request_id.to_owned()));
        headers
    }

    /// The whole answer, under a fresh request id. A backend failure is logged here (`warn`,
    /// with its error chain and the request id), so that the id a client reports finds the cause.
    pub fn answer(&self) -> ErrorAnswer {
        let request_id = new_request_id();
        if self.is_backend_failure() {
            tracing::warn!(request_id = %request_id, code = self.code(), error = %ErrorChain(self), "stream request failed");
        }
        ErrorAnswer {
            status: self.status(),
            headers: self.headers(&request_id),
            body: self.json_body(&request_id),
            request_id,
        }
    }
}

/// The message of every backend failure a client sees.
pub const BACKEND_UNAVAILABLE: &str = "the stream backend is unavailable; retry later";

/// A fresh request id: a ULID, unique and sortable by time.
pub fn new_request_id() -> String {
    ulid::Ulid::new().to_string()
}

/// An error and its sources, `: `-separated, for the log.
#[derive(Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            write!(f, ": {e}")?;
            source = e.source();
        }
        Ok(())
    }
}

/// The HTTP answer to a [`StreamError`], in plain types: what an adapter converts.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorAnswer {
    /// The status code.
    pub status: u16,
    /// The headers besides `Content-Type: application/json`, as (lower-case name, value).
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: Value,
    /// The request id in the body, in `X-Request-Id`, and in the log line of a backend failure.
    pub request_id: String,
}

/// Defines a web adapter's error type: a newtype over [`StreamError`] (its field `0`) that
/// converts from everything `StreamError` converts from (so `?` works on a
/// [`StreamLimitExceeded`], an [`AcquireError`], a [`SubscribeError`], …), displays as it, has
/// its source, and has its [`code`](StreamError::code). The adapter then implements its
/// framework's response trait for it, which the orphan rule allows only on a type of its own.
///
/// ```
/// stream_core::stream_error_newtype! {
///     /// My framework's error answer.
///     pub struct MyError;
/// }
///
/// let e = MyError::from(stream_core::InvalidEventId("x".into()));
/// assert_eq!(e.code(), "invalid_last_event_id");
/// assert_eq!(e.0.status(), 400);
/// ```
#[doc(hidden)]
#[macro_export]
macro_rules! stream_error_newtype {
    ($(#[$attr:meta])* $vis:vis struct $name:ident;) => {
        $(#[$attr])*
        #[derive(Debug)]
        $vis struct $name(pub $crate::sse::StreamError);

        impl<E> ::core::convert::From<E> for $name
        where
            $crate::sse::StreamError: ::core::convert::From<E>,
        {
            fn from(e: E) -> Self {
                Self(e.into())
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(&self.0, f)
            }
        }

        impl ::std::error::Error for $name {
            fn source(&self) -> ::core::option::Option<&(dyn ::std::error::Error + 'static)> {
                ::std::error::Error::source(&self.0)
            }
        }

        impl $name {
            /// The machine-readable `error` code of the JSON body.
            pub fn code(&self) -> &'static str {
                self.0.code()
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ids::UserId;

    fn limit(retry_after: Duration) -> StreamError {
        StreamError::from(AcquireError::LimitExceeded(StreamLimitExceeded {
            user_id: UserId::new("u1").unwrap(),
            limit: 2,
            retry_after,
        }))
    }

    fn unavailable() -> [StreamError; 3] {
        [
            LeaseError::Backend("down".into()).into(),
            AcquireError::Store(LeaseError::Backend("down".into())).into(),
            SubscribeError::Closed("slow".into()).into(),
        ]
    }

    #[test]
    fn limit_exceeded_is_429_with_limit_and_retry_after() {
        let e = limit(Duration::from_secs(5));
        assert_eq!(e.status(), 429);
        assert_eq!(e.retry_after_secs(), Some(5));
        assert_eq!(
            e.json_body("r1").to_string(),
            r#"{"error":"stream_limit_exceeded","limit":2,"message":"user u1 already has 2 concurrent streams; retry in 5 s","request_id":"r1","retry_after":5}"#
        );
        let headers: Vec<_> = e.headers("r1").iter().map(|(n, v)| format!("{n}: {v}")).collect();
        assert_eq!(
            headers,
            ["retry-after: 5", "cache-control: no-store", "x-request-id: r1"]
        );
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let e = limit(Duration::from_millis(300));
        assert_eq!(e.retry_after_secs(), Some(1));
        assert_eq!(e.json_body("r")["retry_after"], 1);
        assert_eq!(e.headers("r")[0], ("retry-after", "1".to_owned()));
    }

    #[test]
    fn store_and_subscription_failures_are_503() {
        for e in unavailable() {
            assert_eq!(e.status(), 503);
            assert_eq!(e.code(), "stream_unavailable");
            assert_eq!(e.retry_after_secs(), None);
            // The backend's error stays in the log.
            let answer = e.answer();
            assert_eq!(answer.status, 503);
            assert_eq!(
                answer.body,
                json!({"error": "stream_unavailable", "message": BACKEND_UNAVAILABLE, "request_id": answer.request_id})
            );
            assert!(!answer.body.to_string().contains("down") && !answer.body.to_string().contains("slow"));
            assert_eq!(
                answer.headers,
                [
                    ("cache-control", "no-store".to_owned()),
                    ("x-request-id", answer.request_id.clone())
                ]
            );
        }
        let e = StreamError::from(AcquireError::Store(LeaseError::Backend("x".into())));
        assert!(matches!(e, StreamError::Lease(_)));
    }

    #[test]
    fn an_invalid_last_event_id_is_400() {
        let e = StreamError::from(InvalidEventId("nope".into()));
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.json_body("r").to_string(),
            r#"{"error":"invalid_last_event_id","message":"invalid event id \"nope\": expected a 26-character ULID","request_id":"r"}"#
        );
        assert_eq!(e.headers("r").len(), 2);
    }
}
