//! HTTP: `GET /status` says what the agent knows (redis health, etcd connection,
//! registration, last trigger); `GET /master` and `GET /replica?lag=` are the
//! load balancers' role checks ([`crate::checks`]); `GET /healthz` and the JSON 404/405 come from
//! [`service::http::with_conventions`]. `/healthz` answers as long as the agent
//! runs, whatever redis and etcd do: the agent retrying is the agent working.
//!
//! An agent watching several instances names each by cluster and node:
//! `GET /instances` lists them all, `GET /instances/<cluster>/<node>/status`,
//! `.../master` and `.../replica?lag=` answer for one. With one instance, the
//! short paths answer for it (as they always did); with several, `/status` lists
//! them all and the short role checks answer 400, naming the long paths.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::Status;
use crate::checks::{self, Checker, LagQuery};

/// One instance as the API shows it.
pub struct Served {
    pub cluster: String,
    pub node: String,
    /// Its registration's etcd key.
    pub key: String,
    pub status: watch::Receiver<Status>,
    pub checker: Arc<Checker>,
}

type Shared = Arc<Vec<Served>>;

pub fn router(instances: Vec<Served>) -> Router {
    let shared: Shared = Arc::new(instances);
    let routes = Router::new()
        .route("/status", get(status_handler))
        .route("/master", get(master_short))
        .route("/replica", get(replica_short))
        .route("/instances", get(list_handler))
        .route("/instances/{cluster}/{node}/status", get(instance_status))
        .route("/instances/{cluster}/{node}/master", get(instance_master))
        .route("/instances/{cluster}/{node}/replica", get(instance_replica))
        .with_state(shared);
    service::http::with_conventions(routes)
}

/// The only instance, or why the short path is ambiguous.
fn only<'a>(shared: &'a Shared, path: &str) -> Result<&'a Served, service::ApiError> {
    match shared.as_slice() {
        [one] => Ok(one),
        all => Err(service::ApiError::bad_request(format!(
            "this agent watches {} instances: ask /instances/<cluster>/<node>{path}",
            all.len()
        ))),
    }
}

fn named<'a>(shared: &'a Shared, cluster: &str, node: &str) -> Result<&'a Served, service::ApiError> {
    shared.iter().find(|s| s.cluster == cluster && s.node == node).ok_or_else(|| {
        service::ApiError::not_found(format!("this agent watches no instance {cluster}/{node}"))
    })
}

async fn master_short(State(shared): State<Shared>) -> Response {
    match only(&shared, "/master") {
        Ok(served) => master_check(&served.checker).await,
        Err(error) => error.into_response(),
    }
}

async fn replica_short(State(shared): State<Shared>, lag: Result<Query<LagQuery>, QueryRejection>) -> Response {
    match only(&shared, "/replica") {
        Ok(served) => replica_check(&served.checker, lag).await,
        Err(error) => error.into_response(),
    }
}

async fn instance_master(State(shared): State<Shared>, Path((cluster, node)): Path<(String, String)>) -> Response {
    match named(&shared, &cluster, &node) {
        Ok(served) => master_check(&served.checker).await,
        Err(error) => error.into_response(),
    }
}

async fn instance_replica(
    State(shared): State<Shared>,
    Path((cluster, node)): Path<(String, String)>,
    lag: Result<Query<LagQuery>, QueryRejection>,
) -> Response {
    match named(&shared, &cluster, &node) {
        Ok(served) => replica_check(&served.checker, lag).await,
        Err(error) => error.into_response(),
    }
}

/// `GET /master` (see [`crate::checks`]): 200 or 503, with the reason.
async fn master_check(checker: &Checker) -> Response {
    let facts = checker.facts().await;
    check_answer(checks::master(&checker.me, &facts))
}

/// `GET /replica?lag=<bytes>` (see [`crate::checks`]).
async fn replica_check(checker: &Checker, lag: Result<Query<LagQuery>, QueryRejection>) -> Response {
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

/// One instance's status body.
fn status_body(served: &Served) -> Value {
    let status = served.status.borrow().clone();
    let mut body = json!({ "status": "ok", "cluster": served.cluster, "node": served.node, "key": served.key });
    if let (Some(map), Ok(Value::Object(fields))) = (body.as_object_mut(), serde_json::to_value(status)) {
        map.extend(fields);
    }
    body
}

fn list_body(shared: &Shared) -> Value {
    json!({ "status": "ok", "instances": shared.iter().map(status_body).collect::<Vec<_>>() })
}

async fn status_handler(State(shared): State<Shared>) -> Json<Value> {
    match shared.as_slice() {
        [one] => Json(status_body(one)),
        _ => Json(list_body(&shared)),
    }
}

async fn list_handler(State(shared): State<Shared>) -> Json<Value> {
    Json(list_body(&shared))
}

async fn instance_status(State(shared): State<Shared>, Path((cluster, node)): Path<(String, String)>) -> Response {
    match named(&shared, &cluster, &node) {
        Ok(served) => Json(status_body(served)).into_response(),
        Err(error) => error.into_response(),
    }
}
