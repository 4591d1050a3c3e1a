//! Compares the store's write throughput with a raw `_bulk` loop of the same batch size.
//!
//! ```sh
//! scripts/opensearch.sh start
//! cargo run --release -p stream-store-opensearch --example bulk_throughput -- [EVENTS] [BATCH] [--json FILE]
//! ```
//!
//! With `--json FILE` it also writes the three rounds as the benchmark harness's records
//! (`scenario` `archive-bulk`, `kind` `bulk`; see `crates/stream-bench`), which `scripts/bench.sh`
//! puts in `docs/benchmarks.md`. `OPENSEARCH_URL` picks the node (default `http://127.0.0.1:9250`).
//!
//! Both sides start from the same `Event`s and include their serialization. The raw loop sends
//! one `_bulk` request after another and stops when the last one is answered; the store's time
//! runs from the first `append` until `flush` returns (which includes one `_refresh`). Each side
//! writes into its own fresh index prefix; everything is deleted afterwards.

use std::time::{Duration, Instant};

use serde_json::{Map, json};
use stream_core::{ChannelId, Event, EventStore, EventType};
use stream_store_opensearch::opensearch::http::Method;
use stream_store_opensearch::opensearch::http::headers::{CONTENT_TYPE, HeaderMap, HeaderValue};
use stream_store_opensearch::{OpenSearchConfig, OpenSearchEventStore, daily_index_name};

fn events(count: usize) -> Vec<Event> {
    let channel = ChannelId::new(format!("bench-{}", ulid::Ulid::new())).unwrap();
    (0..count)
        .map(|i| {
            let mut payload = Map::new();
            payload.insert(
                "message".into(),
                json!(format!("deploying step {i} of the pipeline to production")),
            );
            payload.insert("level".into(), json!("info"));
            payload.insert("percent".into(), json!(i % 100));
            payload.insert(
                "details".into(),
                json!({"server": format!("web-{}", i % 16), "attempt": 1}),
            );
            Event::new(channel.clone(), EventType::Log, payload).unwrap()
        })
        .collect()
}

async fn raw_loop(store: &OpenSearchEventStore, prefix: &str, events: &[Event], batch: usize) -> Duration {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    let started = Instant::now();
    for chunk in events.chunks(batch) {
        let mut body = Vec::with_capacity(chunk.len() * 600);
        for e in chunk {
            let action = json!({"index": {"_index": daily_index_name(prefix, e.timestamp), "_id": e.id.to_string()}});
            serde_json::to_writer(&mut body, &action).unwrap();
            body.push(b'\n');
            serde_json::to_writer(&mut body, e).unwrap();
            body.push(b'\n');
        }
        let response = store
            .client()
            .send::<_, ()>(Method::Post, "/_bulk", headers.clone(), None, Some(body), None)
            .await
            .expect("raw _bulk");
        assert!(response.status_code().is_success());
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["errors"], false, "raw _bulk item errors");
    }
    started.elapsed()
}

async fn through_store(config: OpenSearchConfig, events: &[Event]) -> (Duration, OpenSearchEventStore) {
    let store = OpenSearchEventStore::connect(config).await.expect("connect");
    let started = Instant::now();
    for e in events {
        store.append(e).expect("append");
    }
    store.flush().await.expect("flush");
    let took = started.elapsed();
    let stats = store.stats();
    assert_eq!((stats.written, stats.dropped), (events.len() as u64, 0), "{stats:?}");
    (took, store)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut json_out = None;
    let mut positional = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--json" {
            json_out = Some(args.next().expect("--json FILE"));
        } else {
            positional.push(arg);
        }
    }
    let mut positional = positional.into_iter();
    let count: usize = positional.next().map_or(100_000, |a| a.parse().expect("EVENTS"));
    let batch: usize = positional.next().map_or(1_000, |a| a.parse().expect("BATCH"));
    let mut records = Vec::new();
    let url = std::env::var("OPENSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9250".into());
    let config = |name: &str| {
        let mut c = OpenSearchConfig::new(url.clone());
        c.index_prefix = format!("bench_{name}_{}", ulid::Ulid::new().to_string().to_lowercase());
        c.number_of_replicas = 0;
        c.queue_capacity = count + 1;
        c.bulk_max_events = batch;
        c.bulk_max_bytes = 64 << 20;
        c
    };

    for round in 1..=3 {
        let raw_config = config("raw");
        let raw_prefix = raw_config.index_prefix.clone();
        // The raw loop borrows a store only for its client and template.
        let helper = OpenSearchEventStore::connect(raw_config).await.expect("connect");
        let raw = raw_loop(&helper, &raw_prefix, &events(count), batch).await;
        let (stored, store) = through_store(config("store"), &events(count)).await;
        let rate = |d: Duration| count as f64 / d.as_secs_f64();
        println!(
            "round {round}: {count} events, batch {batch}: raw _bulk loop {:.0} ev/s, store {:.0} ev/s, ratio {:.2}",
            rate(raw),
            rate(stored),
            rate(stored) / rate(raw)
        );
        records.push(json!({
            "scenario": "archive-bulk",
            "server": "opensearch",
            "run": round,
            "kind": "bulk",
            "events": count,
            "batch": batch,
            "raw_events_per_s": rate(raw),
            "store_events_per_s": rate(stored),
        }));
        for (s, prefix) in [(&helper, raw_prefix), (&store, store.config().index_prefix.clone())] {
            let _ = s
                .client()
                .send::<(), ()>(
                    Method::Delete,
                    &format!("/{prefix}-*"),
                    HeaderMap::new(),
                    None,
                    None,
                    None,
                )
                .await;
            let _ = s
                .client()
                .send::<(), ()>(
                    Method::Delete,
                    &format!("/_index_template/{prefix}"),
                    HeaderMap::new(),
                    None,
                    None,
                    None,
                )
                .await;
        }
    }
    if let Some(path) = json_out {
        let json = serde_json::to_vec_pretty(&records).expect("records serialize");
        std::fs::write(&path, json).expect("write --json file");
    }
}
