//! Why an SSE response could not be made, and the HTTP answer for it, written once for every web
//! adapter. The adapters only convert [`StreamError::status`], [`StreamError::headers`] and
//! [`StreamError::json_body`] into their framework's response.
//!
//! Plain numbers and strings, no `http` types: actix speaks http 0.2 and axum http 1, and
//! stream-core keeps out of both.

use serde_json::{Value, json};

use crate::event::InvalidEventId;
use crate::ids::InvalidId;
use crate::lease::{AcquireError, LeaseError, StreamLimitExceeded};
use crate::subscribe::SubscribeError;

/// Why an SSE response could not be made. Every variant is answered with a JSON body
/// `{"error": <code>, "message": <text>, …}` ([`json_body`](Self::json_body)) and
/// `Cache-Control: no-store`.
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

    /// The JSON body: `{"error": <code>, "message": <text>}`, plus `limit` and `retry_after`
    /// (seconds) for [`LimitExceeded`](Self::LimitExceeded).
    pub fn json_body(&self) -> Value {
        let mut body = json!({"error": self.code(), "message": self.to_string()});
        if let (Self::LimitExceeded(e), Some(secs)) = (self, self.retry_after_secs()) {
            body["limit"] = e.limit.into();
            body["retry_after"] = secs.into();
        }
        body
    }

    /// The headers the answer carries besides its `Content-Type: application/json`, in order,
    /// as (lower-case name, value): `retry-after` (only for
    /// [`LimitExceeded`](Self::LimitExceeded)), then `cache-control: no-store`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::with_capacity(2);
        if let Some(secs) = self.retry_after_secs() {
            headers.push(("retry-after", secs.to_string()));
        }
        headers.push(("cache-control", "no-store".to_owned()));
        headers
    }
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
            e.json_body().to_string(),
            r#"{"error":"stream_limit_exceeded","limit":2,"message":"user u1 already has 2 concurrent streams; retry in 5 s","retry_after":5}"#
        );
        let headers: Vec<_> = e.headers().iter().map(|(n, v)| format!("{n}: {v}")).collect();
        assert_eq!(headers, ["retry-after: 5", "cache-control: no-store"]);
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let e = limit(Duration::from_millis(300));
        assert_eq!(e.retry_after_secs(), Some(1));
        assert_eq!(e.json_body()["retry_after"], 1);
        assert_eq!(e.headers()[0], ("retry-after", "1".to_owned()));
    }

    #[test]
    fn store_and_subscription_failures_are_503() {
        for e in unavailable() {
            assert_eq!(e.status(), 503);
            assert_eq!(e.code(), "stream_unavailable");
            assert_eq!(e.retry_after_secs(), None);
            assert_eq!(
                e.json_body(),
                json!({"error": "stream_unavailable", "message": e.to_string()})
            );
            assert_eq!(e.headers(), [("cache-control", "no-store".to_owned())]);
        }
        let e = StreamError::from(AcquireError::Store(LeaseError::Backend("x".into())));
        assert!(matches!(e, StreamError::Lease(_)));
    }

    #[test]
    fn an_invalid_last_event_id_is_400() {
        let e = StreamError::from(InvalidEventId("nope".into()));
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.json_body().to_string(),
            r#"{"error":"invalid_last_event_id","message":"invalid event id \"nope\": expected a 26-character ULID"}"#
        );
        assert_eq!(e.headers().len(), 1);
    }
}
