//! Errors of this crate.

use stream_core::BoxError;

use crate::config::ConfigError;

/// An OpenSearch request failed: which request, the HTTP status when there was an answer, and
/// the reason (the server's error type and reason when it gave them). It is the `source` of
/// [`StoreError::Backend`](stream_core::StoreError::Backend) for this store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OpenSearchError {
    status: Option<u16>,
    message: String,
}

impl OpenSearchError {
    pub(crate) fn new(status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A request that got no HTTP answer (connection refused or reset, timeout, ...).
    pub(crate) fn request(what: &str, e: opensearch::Error) -> Self {
        let kind = if e.is_timeout() { "timed out" } else { "failed" };
        // The causes say what actually happened ("connection refused", ...).
        let mut message = format!("{what} request {kind}: {e}");
        let mut last = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            let text = c.to_string();
            if text != last {
                message.push_str(": ");
                message.push_str(&text);
            }
            last = text;
            cause = c.source();
        }
        Self::new(e.status_code().map(|s| s.as_u16()), message)
    }

    /// A request answered with an error status; `body` is the server's answer.
    pub(crate) fn status(what: &str, status: u16, body: &[u8]) -> Self {
        Self::new(Some(status), format!("{what} answered HTTP {status}: {}", reason(body)))
    }

    /// The HTTP status, when the server answered.
    pub fn status_code(&self) -> Option<u16> {
        self.status
    }
}

/// The server's `error.type: error.reason`, else the start of the body.
fn reason(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: serde_json::Value,
    }
    if let Ok(answer) = serde_json::from_slice::<Answer>(body) {
        let e = &answer.error;
        if let (Some(kind), Some(reason)) = (e["type"].as_str(), e["reason"].as_str()) {
            return format!("{kind}: {reason}");
        }
        if let Some(s) = e.as_str() {
            return s.to_owned();
        }
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(300).collect()
}

/// The store could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// A configuration value is wrong (the error names it).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built (a TLS setup problem, say).
    #[error("could not build the OpenSearch client: {0}")]
    Client(#[source] BoxError),
    /// The index template could not be installed (the cluster is down, or refused it).
    #[error("could not install the index template {name:?}: {source}")]
    Template {
        /// The template's name.
        name: String,
        /// Why.
        #[source]
        source: OpenSearchError,
    },
    /// No tokio runtime is running here: the writer task needs one.
    #[error("no tokio runtime: connect from inside a tokio runtime (the writer is a tokio task)")]
    NoRuntime,
    /// [`compat::init_event_storage`](crate::compat::init_event_storage) was called when the
    /// process-wide event store was already installed.
    #[error(transparent)]
    AlreadyInstalled(stream_core::SetGlobalDefaultError),
}
