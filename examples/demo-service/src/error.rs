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
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            limit: None,
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

    /// 503: a backend failed.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.code, "message": self.message});
        if let Some(limit) = self.limit {
            body["limit"] = json!(limit);
        }
        body
    }
}
