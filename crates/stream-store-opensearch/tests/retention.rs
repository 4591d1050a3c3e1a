//! Archive retention on the real node: the writer task deletes the daily indices dated more than
//! `retention_days` back, at start-up and then every `retention_interval`, and nothing else.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use stream_core::conformance::unique_channel;
use stream_core::{Event, EventQuery, EventStore};
use stream_store_opensearch::opensearch::OpenSearch;
use stream_store_opensearch::opensearch::http::Method;
use stream_store_opensearch::opensearch::http::headers::HeaderMap;
use stream_store_opensearch::{OpenSearchConfig, build_client, daily_index_name, index_template};
use time::OffsetDateTime;

/// How long a sweep may take to show: the first one runs at start, the next every 300 ms.
const WAIT: Duration = Duration::from_secs(30);

async fn send(client: &OpenSearch, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| serde_json::to_vec(&b).unwrap());
    let response = client
        .send::<Vec<u8>, ()>(method, path, HeaderMap::new(), None, body, None)
        .await
        .unwrap_or_else(|e| {
            panic!("{path}: {e}\n(is the test node up? `scripts/opensearch.sh start`; OPENSEARCH_URL)")
        });
    let status = response.status_code().as_u16();
    let bytes = response.bytes().await.expect("answer body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Installs the store's index template before the store starts, so that the indices made ahead
/// of it have the store's mapping (queries sort on `timestamp` across all of them).
async fn install_template(client: &OpenSearch, config: &OpenSearchConfig) {
    let (status, answer) = send(
        client,
        Method::Put,
        &format!("/_index_template/{}", config.template_name()),
        Some(index_template(config)),
    )
    .await;
    assert_eq!(status, 200, "template: {answer}");
}

/// Creates `index` with one document in it.
async fn create_index_with_a_doc(client: &OpenSearch, index: &str) {
    let (status, answer) = send(
        client,
        Method::Put,
        &format!("/{index}"),
        Some(json!({"settings": {"number_of_replicas": 0}})),
    )
    .await;
    assert_eq!(status, 200, "create {index}: {answer}");
    let (status, answer) = send(
        client,
        Method::Put,
        &format!("/{index}/_doc/1?refresh=true"),
        Some(json!({"note": "old"})),
    )
    .await;
    assert!((200..300).contains(&status), "{index}/_doc/1: {answer}");
}

/// The indices matching `{prefix}-*`, sorted.
async fn indices(client: &OpenSearch, prefix: &str) -> Vec<String> {
    let (status, answer) = send(
        client,
        Method::Get,
        &format!("/_cat/indices/{prefix}-*?format=json&h=index"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let mut names: Vec<String> = answer
        .as_array()
        .expect("a list")
        .iter()
        .map(|i| i["index"].as_str().expect("a name").to_owned())
        .collect();
    names.sort();
    names
}

/// Waits until none of `gone` exists any more, or fails the test.
async fn wait_until_deleted(client: &OpenSearch, prefix: &str, gone: &[&str]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = indices(client, prefix).await;
        if !gone.iter().any(|g| now.iter().any(|n| n == g)) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still there after {WAIT:?}: {gone:?} (indices: {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn days_ago(days: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::days(days)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_daily_indices_are_deleted_at_start_and_then_periodically() {
    let prefix = common::unique_prefix("retention");
    // Configured as an app would be, from the variables (a map here, not the process env).
    let vars = HashMap::from([
        ("OPENSEARCH_URL", common::opensearch_url()),
        ("OPENSEARCH_INDEX_PREFIX", prefix.clone()),
        ("OPENSEARCH_INDEX_REPLICAS", "0".to_owned()),
        ("OPENSEARCH_RETENTION_DAYS", "35".to_owned()),
    ]);
    let mut config = OpenSearchConfig::from_lookup(|name| vars.get(name).cloned()).expect("config");
    assert_eq!(config.retention_days, 35);
    config.retention_interval = Duration::from_millis(300);
    config.flush_interval = Duration::from_millis(100);
    let client = build_client(&config).expect("client");
    install_template(&client, &config).await;

    // 40 and 36 days back expire; 34 days back and today stay (a day of margin each side, so
    // that a run across midnight UTC cannot flip them). Names that are not `{prefix}-YYYY.MM.DD`
    // stay whatever their date, and so does another prefix's index.
    let old_40 = daily_index_name(&prefix, days_ago(40));
    let old_36 = daily_index_name(&prefix, days_ago(36));
    let kept_34 = daily_index_name(&prefix, days_ago(34));
    let kept_today = daily_index_name(&prefix, days_ago(0));
    let not_daily = format!("{}-restored", old_40);
    let other_prefix = daily_index_name(&format!("{prefix}_other"), days_ago(40));
    for index in [&old_40, &old_36, &kept_34, &kept_today, &not_daily, &other_prefix] {
        create_index_with_a_doc(&client, index).await;
    }
    assert_eq!(
        indices(&client, &prefix).await.len(),
        5,
        "the five indices of the prefix exist"
    );

    // The writer's first sweep, at start-up.
    let store = common::connect(config).await;
    wait_until_deleted(&client, &prefix, &[&old_40, &old_36]).await;
    let mut expected = vec![kept_34.clone(), kept_today.clone(), not_daily.clone()];
    expected.sort();
    assert_eq!(indices(&client, &prefix).await, expected);

    // Later sweeps: an event stored 40 days back re-creates the old daily index, and the next
    // sweep deletes it again; the event of today stays.
    let channel = unique_channel("retention");
    let mut old_event = Event::data(channel.clone(), "message", "forty days back").unwrap();
    old_event.timestamp = days_ago(40);
    let new_event = Event::data(channel.clone(), "message", "today").unwrap();
    store.append(&old_event).unwrap();
    store.append(&new_event).unwrap();
    store.flush().await.expect("flush");
    let stats = store.stats();
    assert_eq!((stats.written, stats.dropped), (2, 0), "both were written: {stats:?}");
    wait_until_deleted(&client, &prefix, &[&old_40]).await;
    let got = store.query(&EventQuery::channel(channel)).await.unwrap();
    assert_eq!(got.events, vec![new_event]);

    // Several more sweeps change nothing else.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(indices(&client, &prefix).await, expected);
    let (status, _) = send(&client, Method::Head, &format!("/{other_prefix}"), None).await;
    assert_eq!(status, 200, "another prefix's index is not touched");

    store.shutdown().await.expect("shutdown");
    common::cleanup(&store).await;
    let _ = send(&client, Method::Delete, &format!("/{other_prefix}"), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_zero_keeps_every_index() {
    let mut config = common::test_config("keep_forever");
    config.retention_days = 0;
    config.retention_interval = Duration::from_millis(100);
    let prefix = config.index_prefix.clone();
    let client = build_client(&config).expect("client");
    install_template(&client, &config).await;
    let ancient = daily_index_name(&prefix, days_ago(3650));
    create_index_with_a_doc(&client, &ancient).await;

    let store = common::connect(config).await;
    let channel = unique_channel("keep_forever");
    let mut old_event = Event::data(channel.clone(), "message", "ten years back").unwrap();
    old_event.timestamp = days_ago(3650);
    store.append(&old_event).unwrap();
    store.flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(1000)).await;

    assert_eq!(indices(&client, &prefix).await, vec![ancient]);
    let got = store.query(&EventQuery::channel(channel)).await.unwrap();
    assert_eq!(got.events, vec![old_event]);

    store.shutdown().await.expect("shutdown");
    common::cleanup(&store).await;
}
