//! The index template, daily index names, refused events and the process-wide store.

mod common;

use std::sync::Arc;

use serde_json::{Map, Value, json};
use stream_core::conformance::unique_channel;
use stream_core::{Event, EventId, EventQuery, EventStore, EventType, LogLevel, StreamContext};
use stream_store_opensearch::daily_index_name;
use stream_store_opensearch::opensearch::http::Method;
use time::macros::datetime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_shapes_every_daily_index() {
    let mut config = common::test_config("template");
    config.number_of_shards = 2;
    let store = common::connect(config).await;
    let prefix = store.config().index_prefix.clone();

    let (status, template) = common::request(&store, Method::Get, &format!("/_index_template/{prefix}"), None).await;
    assert_eq!(status, 200, "{template}");
    assert_eq!(
        template["index_templates"][0]["index_template"]["index_patterns"],
        json!([format!("{prefix}-*")])
    );

    let ch = unique_channel("template");
    let mut payload = Map::new();
    payload.insert("message".into(), json!("deploying to prod"));
    payload.insert("level".into(), json!("warning"));
    payload.insert(
        "some arbitrary key".into(),
        json!({"deep": {"er": [1, 2, {"x": true}]}}),
    );
    let event = Event::new(ch.clone(), EventType::Log, payload).unwrap();
    store.append(&event).unwrap();
    store.flush().await.unwrap();

    let index = daily_index_name(&prefix, event.timestamp);
    let (status, mapping) = common::request(&store, Method::Get, &format!("/{index}/_mapping"), None).await;
    assert_eq!(status, 200, "{mapping}");
    let props = &mapping[&index]["mappings"]["properties"];
    assert_eq!(mapping[&index]["mappings"]["dynamic"], "false");
    for field in ["id", "type", "channel_id", "level"] {
        assert_eq!(props[field]["type"], "keyword", "{field}: {props}");
    }
    for field in ["namespace", "workspace_id", "project", "env", "service"] {
        assert_eq!(
            props["context"]["properties"][field]["type"], "keyword",
            "context.{field}: {props}"
        );
    }
    assert_eq!(props["timestamp"]["type"], "date_nanos");
    assert_eq!(props["message"]["type"], "text");
    assert_eq!(props["payload"]["enabled"], false);
    assert!(
        props["payload"].get("properties").is_none(),
        "payload keys are not mapped: {props}"
    );
    assert!(props.get("some arbitrary key").is_none());

    let (_, settings) = common::request(&store, Method::Get, &format!("/{index}/_settings"), None).await;
    let index_settings = &settings[&index]["settings"]["index"];
    assert_eq!(index_settings["number_of_shards"], "2");
    assert_eq!(index_settings["number_of_replicas"], "0");

    // The stored document: searchable fields on top, the payload whole.
    let (_, doc) = common::request(&store, Method::Get, &format!("/{index}/_doc/{}", event.id), None).await;
    assert_eq!(doc["_source"]["message"], "deploying to prod");
    assert_eq!(doc["_source"]["level"], "warning");
    assert_eq!(
        doc["_source"]["payload"]["some arbitrary key"]["deep"]["er"][2]["x"],
        true
    );

    let got = store.query(&EventQuery::channel(ch)).await.unwrap();
    assert_eq!(got.events, vec![event]);

    common::cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_the_index_of_their_utc_day() {
    let store = common::connect(common::test_config("daily")).await;
    let prefix = store.config().index_prefix.clone();
    let ch = unique_channel("daily");
    let stamps = [
        datetime!(2024-03-01 23:59:59.999999999 UTC),
        datetime!(2024-03-02 00:00:00 UTC),
        datetime!(2024-03-02 01:30 +02:00), // 2024-03-01 23:30 UTC
        datetime!(2024-03-02 12:00 UTC),
    ];
    let mut sent = Vec::new();
    for (n, at) in stamps.iter().enumerate() {
        let mut e = Event::data(ch.clone(), "n", n).unwrap();
        e.timestamp = *at;
        store.append(&e).unwrap();
        sent.push(e);
    }
    store.flush().await.unwrap();

    let (status, cat) = common::request(
        &store,
        Method::Get,
        &format!("/_cat/indices/{prefix}-*?format=json&h=index,docs.count"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{cat}");
    let mut indices: Vec<(String, String)> = cat
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["index"].as_str().unwrap().to_owned(),
                i["docs.count"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    indices.sort();
    assert_eq!(
        indices,
        vec![
            (format!("{prefix}-2024.03.01"), "2".to_owned()),
            (format!("{prefix}-2024.03.02"), "2".to_owned())
        ]
    );

    // One query spans both days, in time order.
    let got = store.query(&EventQuery::channel(ch)).await.unwrap();
    let want: Vec<EventId> = [2, 0, 1, 3].iter().map(|&n| sent[n].id).collect();
    assert_eq!(got.events.iter().map(|e| e.id).collect::<Vec<_>>(), want);
    assert_eq!(got.events[0].timestamp, stamps[2], "the timestamp comes back exactly");

    common::cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_cluster_refuses_are_dropped_and_counted() {
    let store = common::connect(common::test_config("refused")).await;
    let prefix = store.config().index_prefix.clone();
    // A write-blocked index for one day: every event of that day gets a 403 item.
    let blocked = format!("{prefix}-2023.05.05");
    let (status, answer) = common::request(
        &store,
        Method::Put,
        &format!("/{blocked}"),
        Some(json!({"settings": {"index": {"blocks": {"write": true}}}})),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let ch = unique_channel("refused");
    let mut refused = Event::data(ch.clone(), "n", 1).unwrap();
    refused.timestamp = datetime!(2023-05-05 10:00 UTC);
    let mut fine = Event::data(ch.clone(), "n", 2).unwrap();
    fine.timestamp = datetime!(2023-05-06 10:00 UTC);
    store.append(&refused).unwrap();
    store.append(&fine).unwrap();
    store.flush().await.unwrap();

    let stats = store.stats();
    assert_eq!((stats.accepted, stats.written, stats.dropped), (2, 1, 1), "{stats:?}");
    let got = store.query(&EventQuery::channel(ch)).await.unwrap();
    assert_eq!(got.events, vec![fine]);

    let _ = common::request(
        &store,
        Method::Put,
        &format!("/{blocked}/_settings"),
        Some(json!({"index": {"blocks": {"write": false}}})),
    )
    .await;
    common::cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_wide_store_persists_what_contexts_ask_for() {
    let store = stream_store_opensearch::compat::init_event_storage(common::test_config("global"))
        .await
        .unwrap_or_else(|e| panic!("cannot use OpenSearch at {}: {e}", common::opensearch_url()));
    let core_store = stream_store_opensearch::compat::get_event_storage().expect("installed");
    assert!(std::ptr::addr_eq(Arc::as_ptr(&core_store), Arc::as_ptr(&store)));
    // Installed once: a second call fails and installs nothing.
    assert!(matches!(
        stream_store_opensearch::compat::init_event_storage(common::test_config("global")).await,
        Err(stream_store_opensearch::ConnectError::AlreadyInstalled(_))
    ));

    let streaming = stream_core::get_default();
    let kept = StreamContext::builder()
        .workspace_id("ws1")
        .project("p")
        .persist_events(true)
        .build();
    let not_kept = StreamContext::builder().workspace_id("ws1").project("p").build();
    let emitter = kept.clone().bind(streaming.publisher.clone());
    emitter.log("kept in the archive", LogLevel::Info).await.unwrap();
    emitter.progress(50, Some("halfway"), None).await.unwrap();
    not_kept
        .clone()
        .bind(streaming.publisher.clone())
        .log("not archived", LogLevel::Info)
        .await
        .unwrap();
    core_store.flush().await.unwrap();

    let page = store
        .query(&EventQuery::channel(kept.channel_id().clone()))
        .await
        .unwrap();
    let kinds: Vec<&str> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["log", "progress"]);
    assert_eq!(page.events[0].message(), Some("kept in the archive"));
    let context = page.events[0].context.as_ref().expect("debug context stored");
    assert_eq!(context.workspace_id.as_deref(), Some("ws1"));
    let level: Value = page.events[0].payload["level"].clone();
    assert_eq!(level, json!("info"));
    let none = store
        .query(&EventQuery::channel(not_kept.channel_id().clone()))
        .await
        .unwrap();
    assert!(none.events.is_empty());

    // Level and namespace are searchable keywords: check through a raw term query.
    let prefix = store.config().index_prefix.clone();
    let (_, hits) = common::request(
        &store,
        Method::Post,
        &format!("/{prefix}-*/_search"),
        Some(json!({"query": {"bool": {"filter": [
            {"term": {"level": "info"}},
            {"term": {"context.workspace_id": "ws1"}},
            {"term": {"channel_id": kept.channel_id().as_str()}},
        ]}}})),
    )
    .await;
    assert_eq!(hits["hits"]["hits"].as_array().map(Vec::len), Some(1), "{hits}");

    store.shutdown().await.unwrap();
    common::cleanup(&store).await;
}

/// A read may ask for a flush at any time: concurrent flushes coalesce into few writes and
/// refreshes, and a flush request never takes a slot of the event queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_flushes_coalesce_and_take_no_queue_slot() {
    let mut config = common::test_config("flushes");
    config.queue_capacity = 100;
    // Only the flushes write.
    config.flush_interval = std::time::Duration::from_secs(60);
    let store = Arc::new(common::connect(config).await);
    let prefix = store.config().index_prefix.clone();
    let ch = unique_channel("flushes");
    let events: Vec<Event> = (0..100).map(|n| Event::data(ch.clone(), "n", n).unwrap()).collect();

    let flushes: Vec<_> = (0..200)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.flush().await })
        })
        .collect();
    for event in &events {
        store
            .append(event)
            .expect("a flush request takes no slot of the event queue");
    }
    for flush in flushes {
        flush.await.unwrap().expect("flush");
    }
    store.flush().await.expect("the last flush");

    let stats = store.stats();
    assert_eq!(
        (stats.accepted, stats.written, stats.dropped),
        (100, 100, 0),
        "{stats:?}"
    );
    let mut query = EventQuery::channel(ch);
    query.limit = 100;
    assert_eq!(store.query(&query).await.unwrap().events, events);

    // One refresh answers every flush waiting at the time: far fewer than 200.
    let (status, answer) = common::request(&store, Method::Get, &format!("/{prefix}-*/_stats/refresh"), None).await;
    assert_eq!(status, 200, "{answer}");
    let refreshes = answer["_all"]["primaries"]["refresh"]["external_total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no refresh count in {answer}"));
    assert!(refreshes < 50, "{refreshes} refreshes for 201 flushes");
    common::cleanup(&store).await;
}
