//! Shared helpers for the tests against a real OpenSearch node.
//!
//! The node is `OPENSEARCH_URL` (default `http://127.0.0.1:9250`, started by
//! `scripts/opensearch.sh start`). A missing node fails the tests: nothing here skips.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use serde_json::Value;
use stream_store_opensearch::opensearch::http::Method;
use stream_store_opensearch::opensearch::http::headers::HeaderMap;
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore};

/// The node under test.
pub fn opensearch_url() -> String {
    std::env::var("OPENSEARCH_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "http://127.0.0.1:9250".into())
}

/// A fresh index prefix, so that each test has its own template and indices.
pub fn unique_prefix(name: &str) -> String {
    format!("t_{name}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

/// Test settings: the node, a unique prefix, a single-node index layout and a short interval.
/// Retention is off: some tests store events dated years back, which a retention sweep would
/// delete under them (tests/retention.rs turns it on).
pub fn test_config(name: &str) -> OpenSearchConfig {
    let mut config = OpenSearchConfig::new(opensearch_url());
    config.index_prefix = unique_prefix(name);
    config.number_of_replicas = 0;
    config.flush_interval = Duration::from_millis(100);
    config.retention_days = 0;
    config
}

/// Connects, or fails the test with a hint.
pub async fn connect(config: OpenSearchConfig) -> OpenSearchEventStore {
    let url = config.url.clone();
    match OpenSearchEventStore::connect(config).await {
        Ok(store) => store,
        Err(e) => {
            panic!("cannot use OpenSearch at {url}: {e}\n(start the test node with `scripts/opensearch.sh start`)")
        }
    }
}

/// One request to the node; returns the status and the JSON answer (Null when empty).
pub async fn request(store: &OpenSearchEventStore, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let response = store
        .client()
        .send::<Vec<u8>, ()>(method, path, HeaderMap::new(), None, body, None)
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status_code().as_u16();
    let bytes = response.bytes().await.expect("answer body");
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    (status, value)
}

/// Deletes the test's indices and template (best effort: the node is wiped on each start anyway).
pub async fn cleanup(store: &OpenSearchEventStore) {
    let prefix = store.config().index_prefix.clone();
    let _ = request(store, Method::Delete, &format!("/{prefix}-*"), None).await;
    let _ = request(store, Method::Delete, &format!("/_index_template/{prefix}"), None).await;
}
