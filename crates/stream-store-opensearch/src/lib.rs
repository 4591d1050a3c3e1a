#![doc = include_str!("../README.md")]

mod config;
mod document;
mod error;
mod query;
mod retention;
mod store;
mod writer;

use std::sync::{Arc, OnceLock, RwLock};

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

fn slot() -> &'static RwLock<Option<Arc<OpenSearchEventStore>>> {
    static SLOT: OnceLock<RwLock<Option<Arc<OpenSearchEventStore>>>> = OnceLock::new();
    SLOT.get_or_init(|| RwLock::new(None))
}

/// Connects a store (the seed's `init_event_storage`) and installs it process-wide: here, for
/// [`get_event_storage`], and in stream-core ([`stream_core::init_event_store`]), so that the
/// process-wide publisher persists events whose `persist` flag is set.
///
/// Call it inside the tokio runtime that should run the writer. Calling it again replaces the
/// store; the old one stops once its last handle is dropped.
pub async fn init_event_storage(config: OpenSearchConfig) -> Result<Arc<OpenSearchEventStore>, ConnectError> {
    let store = Arc::new(OpenSearchEventStore::connect(config).await?);
    install_event_storage(store.clone());
    Ok(store)
}

/// [`init_event_storage`] with settings from the environment ([`OpenSearchConfig::from_env`]).
pub async fn init_event_storage_from_env() -> Result<Arc<OpenSearchEventStore>, ConnectError> {
    init_event_storage(OpenSearchConfig::from_env()?).await
}

/// Installs an existing store process-wide, as [`init_event_storage`] does.
pub fn install_event_storage(store: Arc<OpenSearchEventStore>) {
    *slot().write().unwrap_or_else(|e| e.into_inner()) = Some(store.clone());
    stream_core::init_event_store(store);
}

/// The store installed by [`init_event_storage`] (the seed's `get_event_storage`), if any.
pub fn get_event_storage() -> Option<Arc<OpenSearchEventStore>> {
    slot().read().unwrap_or_else(|e| e.into_inner()).clone()
}
