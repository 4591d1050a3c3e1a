#![doc = include_str!("../README.md")]

mod config;
mod document;
mod error;
mod query;
mod retention;
mod store;
mod writer;

#[cfg(feature = "aws")]
pub use config::AwsAuth;
pub use config::{Auth, ConfigError, DEFAULT_INDEX_PREFIX, OpenSearchConfig, env};
pub use document::{daily_index_name, index_template};
pub use error::{ConnectError, OpenSearchError};
pub use query::MAX_PAGE_SIZE;
pub use store::{OpenSearchEventStore, build_client};

/// Re-exported so that users can name the client type ([`OpenSearchEventStore::client`],
/// [`OpenSearchEventStore::connect_with_client`]).
pub use opensearch;

/// Re-exported for [`AwsAuth::credentials`] (the `aws` feature).
#[cfg(feature = "aws")]
pub use aws_credential_types;

/// The Python module's storage names: [`init_event_storage`](compat::init_event_storage) and
/// `get_event_storage`, on the one process-wide slot of `stream_core`.
pub mod compat {
    use std::sync::Arc;

    use crate::{ConnectError, OpenSearchConfig, OpenSearchEventStore};

    pub use stream_core::compat::get_event_storage;

    /// Connects a store and installs it as the process-wide event store (the seed's
    /// `init_event_storage`), so that the process-wide publisher persists events whose `persist`
    /// flag is set and [`get_event_storage`] returns it. The main API passes the store to
    /// `Streaming::builder().store(..)` instead.
    ///
    /// Call it once, inside the tokio runtime that should run the writer. A second call fails
    /// with [`ConnectError::AlreadyInstalled`] and installs nothing (the store it connected stops
    /// when the error is dropped).
    pub async fn init_event_storage(config: OpenSearchConfig) -> Result<Arc<OpenSearchEventStore>, ConnectError> {
        let store = Arc::new(OpenSearchEventStore::connect(config).await?);
        stream_core::compat::init_event_store(store.clone()).map_err(ConnectError::AlreadyInstalled)?;
        Ok(store)
    }

    /// [`init_event_storage`] with settings from the environment ([`OpenSearchConfig::from_env`]).
    pub async fn init_event_storage_from_env() -> Result<Arc<OpenSearchEventStore>, ConnectError> {
        init_event_storage(OpenSearchConfig::from_env()?).await
    }
}
