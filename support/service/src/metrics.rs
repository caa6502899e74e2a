//! Prometheus `GET /metrics` for every service. Services record through the
//! `metrics` facade (`metrics::counter!`, `gauge!`, `histogram!`; hickory-server
//! does too), and one process-wide recorder from metrics-exporter-prometheus
//! renders the text format. Names follow Prometheus' conventions: a
//! `redis_topology_<service>_` prefix, `_total` on counters, base units
//! (`_seconds`, `_bytes`); histograms ending in `_seconds` get [`SECONDS_BUCKETS`].

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of every `_seconds` histogram: write pauses of a millisecond up to
/// applies that wait out a catch-up timeout.
pub const SECONDS_BUCKETS: [f64; 14] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process's recorder; call once, in `main`. Until then every
/// `metrics::` call is a no-op, so library code and its unit tests need none.
/// `labels` go on every metric (the node-agent's `cluster` and `node`, so a
/// replica's lag can be computed against its cluster's master).
pub fn install(labels: &[(&str, &str)]) -> Result<PrometheusHandle, MetricsError> {
    let builder = labels.iter().fold(PrometheusBuilder::new(), |b, (k, v)| b.add_global_label(*k, *v));
    builder
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), &SECONDS_BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .install_recorder()
        .map_err(|e| MetricsError(e.to_string()))
}

/// `GET /metrics`: `refresh` sets the gauges that are computed at scrape time
/// (ages, "seconds since"), then the text format is rendered.
pub fn routes(handle: PrometheusHandle, refresh: impl Fn() + Clone + Send + Sync + 'static) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            refresh();
            let text = handle.render();
            async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response() }
        }),
    )
}

/// Seconds since `ms` (milliseconds since the Unix epoch), as a gauge value.
pub fn seconds_since(ms: u64, now_ms: u64) -> f64 {
    now_ms.saturating_sub(ms) as f64 / 1000.0
}
