//! The JSON the harness writes: one array of [`Record`]s per invocation.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::latency::LatencySummary;
use crate::procstat::CpuUse;

/// One measurement of one server (or baseline) in one scenario run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The scenario (`fanout-1000-fixed`, `lease`, ...).
    pub scenario: String,
    /// What was measured (`stream-axum`, `nchan`, `bare-publish`, ...).
    pub server: String,
    /// Run number, from 1.
    pub run: u32,
    /// The figures.
    #[serde(flatten)]
    pub measurement: Measurement,
}

/// The figures of one kind of measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Measurement {
    /// Publishing to subscribers (over HTTP/SSE, or in process for baseline (b)).
    Load(Box<LoadResult>),
    /// A closed loop of operations (baselines (a) and (c)).
    Ops(OpsResult),
    /// Archive writes (baseline (d)).
    Bulk(BulkResult),
}

/// What a load run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// Subscriptions asked for.
    pub subscribers: usize,
    /// Subscriptions that were open when publishing started.
    pub subscribed: usize,
    /// Channels the subscriptions are spread over.
    pub channels: usize,
    /// Publishing workers (keep-alive connections).
    pub publishers: usize,
    /// Offered publish rate, messages/s.
    pub offered_rate: f64,
    /// Publishing time, seconds.
    pub duration_s: f64,
    /// Successful publishes.
    pub published: u64,
    /// Failed publishes.
    pub publish_errors: u64,
    /// Successful publishes per second of publishing.
    pub achieved_publish_rate: f64,
    /// Deliveries expected: every successful publish times the subscriptions of its channel.
    pub expected: u64,
    /// Distinct deliveries received.
    pub received: u64,
    /// Expected deliveries never received (after the drain wait).
    pub lost: u64,
    /// Deliveries received twice.
    pub duplicates: u64,
    /// Deliveries received out of a worker's order.
    pub out_of_order: u64,
    /// Subscriptions that failed to open, or broke before the end.
    pub subscription_errors: u64,
    /// Distinct deliveries per second, from the first publish to the last delivery.
    pub deliveries_per_s: f64,
    /// Publish-to-receive latency.
    pub latency: LatencySummary,
    /// Publish request latency (send to answer).
    pub publish_latency: LatencySummary,
    /// CPU per named process group over the publishing and drain window.
    pub cpu: BTreeMap<String, CpuUse>,
    /// RSS per named process group, bytes, before the subscriptions were opened.
    pub rss_before: BTreeMap<String, u64>,
    /// RSS per named process group, bytes, with the subscriptions open.
    pub rss_after: BTreeMap<String, u64>,
    /// Redis connections per named process group, with the subscriptions open.
    pub redis_connections: BTreeMap<String, usize>,
    /// A few error messages, for the report.
    pub errors: Vec<String>,
}

/// A closed loop of operations at a fixed concurrency.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpsResult {
    /// Concurrent callers.
    pub concurrency: usize,
    /// Operations completed.
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Latency of one operation.
    pub latency: LatencySummary,
    /// What one operation is.
    pub operation: String,
    /// Redis's own CPU time (`INFO cpu`, user plus system) per operation, µs, when measured.
    #[serde(default)]
    pub redis_cpu_us_per_op: Option<f64>,
}

/// Archive writes: a raw `_bulk` loop and the store's writer, from the same events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkResult {
    /// Events written by each side.
    pub events: u64,
    /// Events per `_bulk` request.
    pub batch: u64,
    /// The raw loop's events/s.
    pub raw_events_per_s: f64,
    /// The store writer's events/s (append to flush).
    pub store_events_per_s: f64,
}

/// Writes `records` as a JSON array to `path`.
pub fn write_records(path: &Path, records: &[Record]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let json = serde_json::to_vec_pretty(records).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

/// Reads every `*.json` file of `dir` (each an array of records), sorted by file name.
pub fn read_records(dir: &Path) -> std::io::Result<Vec<Record>> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut records = Vec::new();
    for path in paths {
        let text = std::fs::read(&path)?;
        let mut batch: Vec<Record> = serde_json::from_slice(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        records.append(&mut batch);
    }
    Ok(records)
}
