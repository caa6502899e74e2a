//! HTTP API: `PUT /master` (the original endpoint, for `--cluster`) and
//! `PUT /clusters/{cluster}/master`, each with `?force=true` and `?dry_run=true`.
//!
//! The only place that knows status codes: [`status`] maps each [`ApplyError`].
//! `?revision=N` is checked by [`Revisions`] during the cluster's turn (see [`crate::revision`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use service::auth::{AuditCluster, Caller};
use service::http::{topology_from_body, with_conventions};
use service::resolve::ResolveError;
use service::ApiError;
use topology::revision::RevisionQuery;

use crate::apply::{ApplyError, ApplyOptions, Dictator};
use crate::execute::Failure;
use crate::plan::Refusal;
use crate::revision::{RevisionError, Revisions};

struct AppState {
    dictator: Dictator,
    default_cluster: String,
    revisions: Revisions,
}

/// The dictator's routes; `default_cluster` is what `PUT /master` applies to.
pub fn router(dictator: Dictator, default_cluster: String, revisions: Revisions) -> Router {
    let state = Arc::new(AppState { dictator, default_cluster, revisions });
    let routes = Router::new()
        .route("/master", put(put_default_master))
        .route("/clusters/{cluster}/master", put(put_cluster_master))
        .with_state(state);
    with_conventions(routes)
}

async fn put_default_master(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    options: Result<Query<ApplyOptions>, QueryRejection>,
    revision: Result<Query<RevisionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let cluster = state.default_cluster.clone();
    let mut response = apply(state, caller, cluster.clone(), options, revision, body).await;
    response.extensions_mut().insert(AuditCluster(cluster));
    response
}

async fn put_cluster_master(
    State(state): State<Arc<AppState>>,
    caller: Option<Extension<Caller>>,
    Path(cluster): Path<String>,
    options: Result<Query<ApplyOptions>, QueryRejection>,
    revision: Result<Query<RevisionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = topology::validate_label("cluster", &cluster) {
        return ApiError::not_found(e).into_response();
    }
    apply(state, caller, cluster, options, revision, body).await
}

async fn apply(
    state: Arc<AppState>,
    caller: Option<Extension<Caller>>,
    cluster: String,
    options: Result<Query<ApplyOptions>, QueryRejection>,
    revision: Result<Query<RevisionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (Query(options), Query(RevisionQuery { revision })) = match (options, revision) {
        (Ok(o), Ok(r)) => (o, r),
        (Err(e), _) => return ApiError::bad_request(format!("query: {}", e.body_text())).into_response(),
        (_, Err(e)) => return ApiError::bad_request(format!("query: {}", e.body_text())).into_response(),
    };
    let topology = match topology_from_body(body) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    // The revision is checked during the cluster's turn, which the apply keeps.
    let turn = match state.dictator.wait_turn(&cluster).await {
        Ok(turn) => turn,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = state.revisions.admit(&cluster, revision, options.dry_run).await {
        return revision_refused(&e);
    }
    // axum drops this future when the client goes away; an apply stopped between
    // two steps would leave a fence or a half-moved group for no reason. Its own
    // task finishes it whoever is still listening, holding the turn.
    let labels = cluster.clone();
    let force = options.force;
    let task = tokio::spawn(async move { state.dictator.apply_in_turn(&turn, &cluster, &topology, options).await });
    match task.await {
        Ok(Ok(report)) => {
            if force && !report.dry_run {
                // What force skipped: the refusals of a move that discards
                // acknowledged writes, the quarantine of a returning master.
                let caller = caller.map_or_else(|| "?".to_string(), |Extension(c)| c.to_string());
                tracing::warn!(target: "audit", caller, cluster = labels, revision, master = %report.master,
                    overrode = ?report.forced, changed = report.changed, "forced apply (force=true)");
            }
            let result = record_metrics(&labels, &report);
            if !report.dry_run {
                service::systemd::status(&format!("last apply: cluster {labels}, {result}, master {}", report.master));
            }
            Json(report).into_response()
        }
        Ok(Err(e)) => {
            let result = error_result(status(&e));
            service::systemd::status(&format!("last apply: cluster {labels}, {result}: {e}"));
            metrics::counter!("redis_topology_dictator_applies_total", "cluster" => labels, "result" => result).increment(1);
            e.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "the apply task failed");
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the apply task failed: {e}")).into_response()
        }
    }
}

/// Counts an apply that answered 2xx and times it: `ok`, `partial` (members
/// in `failed` or `quarantined`), `unchanged` (the topology already held) or
/// `dry_run`. Returns that result.
fn record_metrics(cluster: &str, report: &crate::apply::Report) -> &'static str {
    let result = if report.dry_run {
        "dry_run"
    } else if !report.outcome.failed.is_empty() || !report.quarantined.is_empty() {
        "partial"
    } else if !report.changed {
        "unchanged"
    } else {
        "ok"
    };
    metrics::counter!("redis_topology_dictator_applies_total", "cluster" => cluster.to_string(), "result" => result).increment(1);
    if !report.dry_run {
        metrics::histogram!("redis_topology_dictator_apply_duration_seconds", "cluster" => cluster.to_string()).record(report.total_ms / 1000.0);
        if report.changed {
            metrics::histogram!("redis_topology_dictator_write_pause_seconds", "cluster" => cluster.to_string())
                .record(report.outcome.write_pause_ms / 1000.0);
        }
    }
    result
}

/// The `result` label of a refused or failed apply, by its status code.
fn error_result(status: StatusCode) -> &'static str {
    match status {
        StatusCode::CONFLICT => "refused",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        _ => "failed",
    }
}

/// The status code of a failed apply.
pub fn status(error: &ApplyError) -> StatusCode {
    match error {
        ApplyError::Busy { .. }
        | ApplyError::WouldLoseData { .. }
        | ApplyError::Refused(Refusal::WouldLoseData { .. }) => StatusCode::CONFLICT,
        ApplyError::Resolve { error: ResolveError::NotFound(_) | ResolveError::Ambiguous { .. }, .. }
        | ApplyError::SameInstance { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ApplyError::Resolve { error: ResolveError::Failed { .. }, .. }
        | ApplyError::Refused(Refusal::MasterUnreachable { .. }) => StatusCode::BAD_GATEWAY,
        ApplyError::Failed { failure, .. } => match failure {
            Failure::CatchUpTimeout { .. } | Failure::VerifyTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Failure::Redis { .. }
            | Failure::Info { .. }
            | Failure::NoConnection(_)
            | Failure::NotRepointed(_) => StatusCode::BAD_GATEWAY,
        },
    }
}

/// `{"error": "...", "report": {...}}`, the report `null` unless something was done.
impl IntoResponse for ApplyError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string(), "report": self.report() });
        (status(&self), Json(body)).into_response()
    }
}

/// A request whose revision was not admitted: 409 for an older revision
/// (`{"error","revision","applied_revision","report":null}`), 502 for etcd.
fn revision_refused(error: &RevisionError) -> Response {
    let (status, mut body) = match error {
        RevisionError::Stale(stale) => (StatusCode::CONFLICT, stale.body()),
        RevisionError::Etcd { .. } | RevisionError::Invalid { .. } => {
            (StatusCode::BAD_GATEWAY, serde_json::json!({ "error": error.to_string() }))
        }
    };
    body["report"] = serde_json::Value::Null;
    (status, Json(body)).into_response()
}
