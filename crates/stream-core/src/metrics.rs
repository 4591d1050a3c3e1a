//! The metrics every crate of the workspace records, through the [`metrics`](https://docs.rs/metrics)
//! facade: nothing is recorded (and it costs next to nothing) until the application installs a
//! recorder, such as `metrics-exporter-prometheus`'s (the demo apps serve it at `GET /metrics`).
//!
//! Names follow the Prometheus conventions: the `stream_` prefix, `_total` for counters, base
//! units (`_seconds`). Labels have a small, fixed set of values (a backend, an outcome, a reason);
//! no metric is labelled by channel or user, so the number of series stays bounded.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `stream_events_published_total` | counter | `backend` | events a broker accepted (ids given) |
//! | `stream_events_delivered_total` | counter | | event frames handed to SSE response bodies |
//! | `stream_duplicates_dropped_total` | counter | | events a subscriber dropped as already seen (history and live overlap) |
//! | `stream_gaps_total` | counter | | `gap` notices sent to subscribers |
//! | `stream_resyncs_total` | counter | | slow subscribers refilled from the history |
//! | `stream_open_streams` | gauge | | SSE streams open now (the AI SDK's UI message streams too, as in every stream metric) |
//! | `stream_opens_total` | counter | `answer` | stream requests by answer: `200`, `204`, `4xx`, `429`, `503` (and `5xx` for any other server error) |
//! | `stream_closes_total` | counter | `reason` | streams ended: `done`, `client_gone`, `idle`, `lease_lost`, `producer_lost`, `shutdown`, `error` |
//! | `stream_publish_to_deliver_seconds` | histogram | | an event's timestamp to its frame's hand-over to the body |
//! | `stream_leases_acquired_total` | counter | `backend` | leases granted |
//! | `stream_leases_denied_total` | counter | `backend` | leases refused at the limit (429) |
//! | `stream_leases_refreshed_total` | counter | `backend` | lease refreshes that found the lease |
//! | `stream_leases_lost_total` | counter | `backend` | lease refreshes that found it gone (expired or released elsewhere) |
//! | `stream_leases_released_total` | counter | `backend` | leases released |
//! | `stream_lease_acquire_seconds` | histogram | `backend` | the latency of an acquire call |
//! | `stream_redis_subscriber_reconnects_total` | counter | | reconnects of the broker's subscriber connection |
//! | `stream_redis_subscribe_confirm_seconds` | histogram | | `SUBSCRIBE` to its confirmation |
//! | `stream_redis_script_calls_total` | counter | `script` | Lua script calls (`EVALSHA`) by script |
//! | `stream_redis_timeouts_total` | counter | | Redis commands that got no reply within the response timeout |
//! | `stream_redis_retries_total` | counter | | Redis commands sent again after a failure (within the retry window) |
//! | `stream_opensearch_queue_depth` | gauge | | events waiting for the bulk writer |
//! | `stream_opensearch_batches_total` | counter | `outcome` | bulk requests: `ok`, `partial`, `failed` |
//! | `stream_opensearch_events_written_total` | counter | | events indexed |
//! | `stream_opensearch_events_dropped_total` | counter | `reason` | events not archived: `queue_full`, `rejected`, `retries_exhausted`, `closed` |
//! | `stream_opensearch_events_retried_total` | counter | | events sent again after a failed or partial bulk request |
//! | `stream_opensearch_bulk_seconds` | histogram | | the latency of a bulk request |
//!
//! [`describe`] registers each metric's unit and help text with the installed recorder; call it
//! once after installing one.

/// Events a broker accepted. Label [`BACKEND`].
pub const EVENTS_PUBLISHED: &str = "stream_events_published_total";
/// Event frames handed to SSE response bodies.
pub const EVENTS_DELIVERED: &str = "stream_events_delivered_total";
/// Events a subscriber dropped as already seen.
pub const DUPLICATES_DROPPED: &str = "stream_duplicates_dropped_total";
/// `gap` notices sent.
pub const GAPS: &str = "stream_gaps_total";
/// Slow subscribers refilled from the history.
pub const RESYNCS: &str = "stream_resyncs_total";
/// SSE streams open now.
pub const OPEN_STREAMS: &str = "stream_open_streams";
/// Stream requests by answer. Label [`ANSWER`].
pub const OPENS: &str = "stream_opens_total";
/// Streams ended, by reason. Label [`REASON`].
pub const CLOSES: &str = "stream_closes_total";
/// An event's timestamp to its frame's hand-over to the response body, in seconds.
pub const PUBLISH_TO_DELIVER: &str = "stream_publish_to_deliver_seconds";
/// Leases granted. Label [`BACKEND`].
pub const LEASES_ACQUIRED: &str = "stream_leases_acquired_total";
/// Leases refused at the limit. Label [`BACKEND`].
pub const LEASES_DENIED: &str = "stream_leases_denied_total";
/// Lease refreshes that found the lease. Label [`BACKEND`].
pub const LEASES_REFRESHED: &str = "stream_leases_refreshed_total";
/// Lease refreshes that found it gone. Label [`BACKEND`].
pub const LEASES_LOST: &str = "stream_leases_lost_total";
/// Leases released. Label [`BACKEND`].
pub const LEASES_RELEASED: &str = "stream_leases_released_total";
/// The latency of an acquire call, in seconds. Label [`BACKEND`].
pub const LEASE_ACQUIRE_SECONDS: &str = "stream_lease_acquire_seconds";
/// Reconnects of the Redis broker's subscriber connection.
pub const REDIS_SUBSCRIBER_RECONNECTS: &str = "stream_redis_subscriber_reconnects_total";
/// `SUBSCRIBE` to its confirmation, in seconds.
pub const REDIS_SUBSCRIBE_CONFIRM_SECONDS: &str = "stream_redis_subscribe_confirm_seconds";
/// Lua script calls. Label [`SCRIPT`].
pub const REDIS_SCRIPT_CALLS: &str = "stream_redis_script_calls_total";
/// Redis commands without a reply within the response timeout.
pub const REDIS_TIMEOUTS: &str = "stream_redis_timeouts_total";
/// Redis commands sent again after a failure.
pub const REDIS_RETRIES: &str = "stream_redis_retries_total";
/// Events waiting for the OpenSearch bulk writer.
pub const OPENSEARCH_QUEUE_DEPTH: &str = "stream_opensearch_queue_depth";
/// Bulk requests. Label [`OUTCOME`].
pub const OPENSEARCH_BATCHES: &str = "stream_opensearch_batches_total";
/// Events indexed.
pub const OPENSEARCH_EVENTS_WRITTEN: &str = "stream_opensearch_events_written_total";
/// Events not archived. Label [`REASON`].
pub const OPENSEARCH_EVENTS_DROPPED: &str = "stream_opensearch_events_dropped_total";
/// Events sent again after a failed or partial bulk request.
pub const OPENSEARCH_EVENTS_RETRIED: &str = "stream_opensearch_events_retried_total";
/// The latency of a bulk request, in seconds.
pub const OPENSEARCH_BULK_SECONDS: &str = "stream_opensearch_bulk_seconds";

/// The label naming a backend: `memory`, `redis`, or a custom backend's name.
pub const BACKEND: &str = "backend";
/// The label of [`OPENS`]: `200`, `204`, `4xx`, `429`, `503`.
pub const ANSWER: &str = "answer";
/// The label of [`CLOSES`] and [`OPENSEARCH_EVENTS_DROPPED`].
pub const REASON: &str = "reason";
/// The label of [`REDIS_SCRIPT_CALLS`]: the script's name.
pub const SCRIPT: &str = "script";
/// The label of [`OPENSEARCH_BATCHES`]: `ok`, `partial`, `failed`.
pub const OUTCOME: &str = "outcome";

/// A lease store's metric handles, labelled `backend`: registered once when the store is built
/// (so with the recorder installed then), not per call. The memory store and the Redis limiter
/// share it.
#[derive(Debug)]
pub struct LeaseMetrics {
    /// [`LEASES_ACQUIRED`].
    pub acquired: metrics::Counter,
    /// [`LEASES_DENIED`].
    pub denied: metrics::Counter,
    /// [`LEASES_REFRESHED`].
    pub refreshed: metrics::Counter,
    /// [`LEASES_LOST`].
    pub lost: metrics::Counter,
    /// [`LEASES_RELEASED`].
    pub released: metrics::Counter,
    /// [`LEASE_ACQUIRE_SECONDS`].
    pub acquire_seconds: metrics::Histogram,
}

impl LeaseMetrics {
    /// The handles of a store whose [`BACKEND`] label is `backend` (`memory`, `redis`).
    pub fn new(backend: &'static str) -> Self {
        Self {
            acquired: metrics::counter!(LEASES_ACQUIRED, BACKEND => backend),
            denied: metrics::counter!(LEASES_DENIED, BACKEND => backend),
            refreshed: metrics::counter!(LEASES_REFRESHED, BACKEND => backend),
            lost: metrics::counter!(LEASES_LOST, BACKEND => backend),
            released: metrics::counter!(LEASES_RELEASED, BACKEND => backend),
            acquire_seconds: metrics::histogram!(LEASE_ACQUIRE_SECONDS, BACKEND => backend),
        }
    }
}

/// Counts a stream request answered without a stream, by its HTTP `status`: `204`, `429`, `503`,
/// any other `4xx`, or any other `5xx`. [`SseResponse`](crate::sse::SseResponse) counts its own
/// answers (and every stream it opens as `200`); an app counts the refusals it makes before it
/// gets there (401, 403, 404, 413, ...) with this.
pub fn record_refused(status: u16) {
    let answer = match status {
        200 => "200",
        204 => "204",
        429 => "429",
        503 => "503",
        400..=499 => "4xx",
        _ => "5xx",
    };
    metrics::counter!(OPENS, ANSWER => answer).increment(1);
}

/// Registers the unit and help text of every metric above with the installed recorder (a
/// Prometheus exporter prints them as `# HELP` lines). Harmless without a recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_PUBLISHED, Unit::Count, "Events a broker accepted.");
    describe_counter!(
        EVENTS_DELIVERED,
        Unit::Count,
        "Event frames handed to SSE response bodies."
    );
    describe_counter!(DUPLICATES_DROPPED, Unit::Count, "Events dropped as already seen.");
    describe_counter!(GAPS, Unit::Count, "Gap notices sent to subscribers.");
    describe_counter!(RESYNCS, Unit::Count, "Slow subscribers refilled from the history.");
    describe_gauge!(OPEN_STREAMS, Unit::Count, "SSE streams open now.");
    describe_counter!(OPENS, Unit::Count, "Stream requests by answer.");
    describe_counter!(CLOSES, Unit::Count, "Streams ended, by reason.");
    describe_histogram!(
        PUBLISH_TO_DELIVER,
        Unit::Seconds,
        "An event's timestamp to its frame's hand-over to the response body."
    );
    describe_counter!(LEASES_ACQUIRED, Unit::Count, "Leases granted.");
    describe_counter!(LEASES_DENIED, Unit::Count, "Leases refused at the limit.");
    describe_counter!(LEASES_REFRESHED, Unit::Count, "Lease refreshes that found the lease.");
    describe_counter!(LEASES_LOST, Unit::Count, "Lease refreshes that found the lease gone.");
    describe_counter!(LEASES_RELEASED, Unit::Count, "Leases released.");
    describe_histogram!(LEASE_ACQUIRE_SECONDS, Unit::Seconds, "Latency of a lease acquire call.");
    describe_counter!(
        REDIS_SUBSCRIBER_RECONNECTS,
        Unit::Count,
        "Reconnects of the Redis subscriber connection."
    );
    describe_histogram!(
        REDIS_SUBSCRIBE_CONFIRM_SECONDS,
        Unit::Seconds,
        "SUBSCRIBE to its confirmation."
    );
    describe_counter!(REDIS_SCRIPT_CALLS, Unit::Count, "Lua script calls by script.");
    describe_counter!(REDIS_TIMEOUTS, Unit::Count, "Redis commands without a reply in time.");
    describe_counter!(REDIS_RETRIES, Unit::Count, "Redis commands sent again after a failure.");
    describe_gauge!(
        OPENSEARCH_QUEUE_DEPTH,
        Unit::Count,
        "Events waiting for the bulk writer."
    );
    describe_counter!(OPENSEARCH_BATCHES, Unit::Count, "OpenSearch bulk requests by outcome.");
    describe_counter!(OPENSEARCH_EVENTS_WRITTEN, Unit::Count, "Events indexed in OpenSearch.");
    describe_counter!(
        OPENSEARCH_EVENTS_DROPPED,
        Unit::Count,
        "Events not archived, by reason."
    );
    describe_counter!(
        OPENSEARCH_EVENTS_RETRIED,
        Unit::Count,
        "Events sent again after a failed bulk request."
    );
    describe_histogram!(OPENSEARCH_BULK_SECONDS, Unit::Seconds, "Latency of a bulk request.");
}
