//! HTTP: `GET /status` says what the agent knows (redis health, etcd connection,
//! registration, last trigger); `GET /master` and `GET /replica?lag=` are the
//! load balancers' role checks ([`crate::checks`]); `GET /healthz` and the JSON 404/405 come from
//! [`service::http::with_conventions`]. `/healthz` answers as long as the agent
//! runs, whatever redis and etcd do: the agent retrying is the agent working.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::Status;
use crate::checks::{self, Checker, LagQuery};

#[derive(Clone)]
struct Shared {
    status: watch::Receiver<Status>,
    cluster: String,
    node: String,
    key: String,
}

pub fn router(status: watch::Receiver<Status>, cluster: String, node: String, key: String, checker: Arc<Checker>) -> Router {
    let checks = Router::new().route("/master", get(master_check)).route("/replica", get(replica_check)).with_state(checker);
    let routes = Router::new()
        .route("/status", get(status_handler))
        .with_state(Shared { status, cluster, node, key })
        .merge(checks);
    service::http::with_conventions(routes)
}

/// `GET /master` (see [`crate::checks`]): 200 or 503, with the reason.
async fn master_check(State(checker): State<Arc<Checker>>) -> Response {
    let facts = checker.facts().await;
    check_answer(checks::master(&checker.me, &facts))
}

/// `GET /replica?lag=<bytes>` (see [`crate::checks`]).
async fn replica_check(State(checker): State<Arc<Checker>>, lag: Result<Query<LagQuery>, QueryRejection>) -> Response {
    let lag = match lag {
        Ok(Query(query)) => query.lag,
        Err(e) => return service::ApiError::bad_request(format!("query: {}", e.body_text())).into_response(),
    };
    let mut facts = checker.facts().await;
    if lag.is_some() {
        facts.master_offset = Some(checker.master_offset(&facts).await);
    }
    check_answer(checks::replica(&checker.me, &facts, lag))
}

fn check_answer(decision: Result<(), String>) -> Response {
    match decision {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ok" }))).into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": reason }))).into_response(),
    }
}

async fn status_handler(State(shared): State<Shared>) -> Json<Value> {
    let status = shared.status.borrow().clone();
    let mut body = json!({ "status": "ok", "cluster": shared.cluster, "node": shared.node, "key": shared.key });
    if let (Some(map), Ok(Value::Object(fields))) = (body.as_object_mut(), serde_json::to_value(status)) {
        map.extend(fields);
    }
    Json(body)
}
