//! `GET /metrics`: the crates' metrics ([`stream_core::metrics`]) in the Prometheus text format,
//! through `metrics-exporter-prometheus`'s recorder, installed once per process.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The content type of [`render`]'s answer.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bucket bounds of every `_seconds` histogram, in seconds: 1 ms to 10 s.
const SECONDS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's metrics recorder (once; later calls reuse
/// it) and starts its upkeep task (every 5 s), which needs a tokio runtime. Returns false when
/// another recorder was installed first: `/metrics` then answers with an empty text.
pub fn install() -> bool {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
                .expect("bucket bounds are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    stream_core::metrics::describe();
                    let upkeep = handle.clone();
                    tokio::spawn(async move {
                        let mut every = tokio::time::interval(Duration::from_secs(5));
                        loop {
                            every.tick().await;
                            upkeep.run_upkeep();
                        }
                    });
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics stays empty");
                    None
                }
            }
        })
        .is_some()
}

/// The `GET /metrics` body: every metric in the Prometheus text format (empty before [`install`]).
pub fn render() -> String {
    HANDLE
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}
