//! The API's errors, independent of the web framework.

use serde_json::{Value, json};

/// An error answer: an HTTP status and a JSON body `{"error": <code>, "message": <text>}` (with
/// `"limit"` too when a limit was hit). The apps convert it into their framework's response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// A machine-readable code.
    pub code: &'static str,
    /// A sentence for people.
    pub message: String,
    /// The limit that was hit (413, 429), sent as `"limit"`.
    pub limit: Option<usize>,
    /// What failed inside a backend (503): logged with the request id, never sent.
    pub detail: Option<String>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            limit: None,
            detail: None,
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// 401: no identity (neither `X-User-Id` nor a stream token).
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "unauthorized", message)
    }

    /// 403: an identity that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "forbidden", message)
    }

    /// 404: no such channel.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    /// 409 `stream_finished`: the stream already has its `done` (a cancel came too late).
    pub fn stream_finished() -> Self {
        Self::new(409, "stream_finished", "the stream has already ended")
    }

    /// 413 `payload_too_large`: a body (or a chat prompt) of more than `limit` bytes.
    pub fn payload_too_large(what: &str, limit: usize) -> Self {
        Self {
            limit: Some(limit),
            ..Self::new(
                413,
                "payload_too_large",
                format!("the {what} is larger than the limit of {limit} bytes"),
            )
        }
    }

    /// 429 `channel_limit_exceeded`: the user already has `limit` live channels.
    pub fn channel_limit_exceeded(limit: usize) -> Self {
        Self {
            limit: Some(limit),
            ..Self::new(
                429,
                "channel_limit_exceeded",
                format!("you already have {limit} live channels; wait for one to finish"),
            )
        }
    }

    /// 503: a backend (`what`) failed with `error`. The client gets a generic message; the error,
    /// which may name hosts and URLs, goes only to the log (see [`body`](Self::body)).
    pub fn unavailable(what: &str, error: impl std::fmt::Display) -> Self {
        Self {
            detail: Some(format!("{what}: {error}")),
            ..Self::new(503, "unavailable", stream_core::sse::BACKEND_UNAVAILABLE)
        }
    }

    /// The JSON body, under a fresh request id: `{"error", "message", "request_id"}` (and
    /// `"limit"`). A backend failure is logged here with the same request id, so that the id a
    /// client reports finds the cause.
    pub fn body(&self) -> Value {
        let request_id = stream_core::sse::new_request_id();
        if let Some(detail) = &self.detail {
            tracing::warn!(request_id = %request_id, code = self.code, error = %detail, "request failed");
        }
        let mut body = json!({"error": self.code, "message": self.message, "request_id": request_id});
        if let Some(limit) = self.limit {
            body["limit"] = json!(limit);
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_failure_keeps_its_details_in_the_log() {
        let e = ApiError::unavailable("event store", "connect to https://search.internal:9200 refused");
        let body = e.body();
        assert_eq!(body["error"], "unavailable");
        assert_eq!(body["message"], stream_core::sse::BACKEND_UNAVAILABLE);
        assert!(!body.to_string().contains("search.internal"), "{body}");
        let id = body["request_id"].as_str().expect("a request id");
        assert_eq!(id.len(), 26);
        assert_ne!(e.body()["request_id"], body["request_id"], "one id per answer");
    }
}
