//! HTTP: `GET /status` says what the agent knows (redis health, etcd connection,
//! registration, last trigger); `GET /healthz` and the JSON 404/405 come from
//! [`service::http::with_conventions`]. `/healthz` answers as long as the agent
//! runs, whatever redis and etcd do: the agent retrying is the agent working.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::agent::Status;

#[derive(Clone)]
struct Shared {
    status: watch::Receiver<Status>,
    cluster: String,
    node: String,
    key: String,
}

pub fn router(status: watch::Receiver<Status>, cluster: String, node: String, key: String) -> Router {
    let routes = Router::new()
        .route("/status", get(status_handler))
        .with_state(Shared { status, cluster, node, key });
    service::http::with_conventions(routes)
}

async fn status_handler(State(shared): State<Shared>) -> Json<Value> {
    let status = shared.status.borrow().clone();
    let mut body = json!({ "status": "ok", "cluster": shared.cluster, "node": shared.node, "key": shared.key });
    if let (Some(map), Ok(Value::Object(fields))) = (body.as_object_mut(), serde_json::to_value(status)) {
        map.extend(fields);
    }
    Json(body)
}
