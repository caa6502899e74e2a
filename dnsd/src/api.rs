//! HTTP API: `PUT /dns` (the original endpoint, for `--cluster`) and
//! `PUT /clusters/{cluster}/dns` publish a topology; `GET` on either returns what is
//! published. Plus `/healthz` and the JSON error conventions of DESIGN.md.
//!
//! `?revision=N` (the topology's etcd revision, sent by the observer) is checked
//! against the floor stored in `/dns/<cluster>` ([`publish::decide`]): older is 409, a
//! duplicate is 200 without a write. The write is a compare-and-set on the value read,
//! so two replicas publishing at once cannot lower the floor.
//!
//! A PUT answers only after etcd stored the topology, and after this replica swapped
//! in a zone that serves it: a client that gets the 200 and then asks this dnsd sees
//! the new records. Other replicas follow within one etcd watch round trip.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::{Json, Router};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use serde::Serialize;
use service::cli::EtcdArgs;
use service::http::{topology_from_body, with_conventions};
use service::ApiError;
use topology::keys::Key;
use topology::records::{NodeRecord, PublishedMember, PublishedTopology};
use topology::revision::RevisionQuery;
use topology::Keys;
use service::etcd::LazyClient;

use crate::live::Live;
use crate::publish::{self, Decision};
use crate::state::Change;

/// The API starts, and `/healthz` answers, while etcd is down; each request then
/// fails with 502 until it is back.
struct Etcd(LazyClient);

impl Etcd {
    async fn client(&self) -> Result<etcd_client::Client, ApiError> {
        self.0.client().await.map_err(|e| unreachable(self.0.args(), &e))
    }

    async fn reset(&self) {
        self.0.reset().await;
    }
}

fn unreachable(args: &EtcdArgs, error: &etcd_client::Error) -> ApiError {
    ApiError::bad_gateway(format!("etcd ({}) unreachable: {error}", args.etcd_endpoints.join(",")))
}

struct AppState {
    live: Arc<Live>,
    etcd: Etcd,
    keys: Keys,
    default_cluster: String,
}

/// What `PUT` and `GET` return: the published topology, its cluster and revision.
#[derive(Debug, Serialize)]
struct Published<'a> {
    cluster: &'a str,
    master: &'a PublishedMember,
    slaves: &'a [PublishedMember],
    /// etcd revision of `/dns/<cluster>`; `version.<cluster>.<domain>` serves it too.
    revision: i64,
    /// The newest `?revision=` published (older ones are refused), once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    topology_revision: Option<i64>,
}

impl<'a> Published<'a> {
    fn of(cluster: &'a str, topology: &'a PublishedTopology, revision: i64) -> Published<'a> {
        let PublishedTopology { master, slaves, topology_revision } = topology;
        Published { cluster, master, slaves, revision, topology_revision: *topology_revision }
    }
}

/// dnsd's routes; `default_cluster` is what `PUT /dns` publishes.
pub fn router(live: Arc<Live>, etcd: EtcdArgs, default_cluster: String) -> Router {
    let keys = etcd.keys();
    let state = Arc::new(AppState {
        live,
        etcd: Etcd(LazyClient::new(etcd)),
        keys,
        default_cluster,
    });
    let routes = Router::new()
        .route("/dns", put(put_default).get(get_default))
        .route("/clusters/{cluster}/dns", put(put_cluster).get(get_cluster))
        .with_state(state);
    with_conventions(routes)
}

async fn put_default(
    State(state): State<Arc<AppState>>,
    revision: Result<Query<RevisionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let cluster = state.default_cluster.clone();
    let mut response = match revision {
        Ok(Query(RevisionQuery { revision })) => respond(publish(&state, &cluster, revision, body).await),
        Err(e) => ApiError::bad_request(format!("query: {}", e.body_text())).into_response(),
    };
    response.extensions_mut().insert(service::auth::AuditCluster(cluster));
    response
}

async fn put_cluster(
    State(state): State<Arc<AppState>>,
    Path(cluster): Path<String>,
    revision: Result<Query<RevisionQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if let Err(e) = topology::validate_label("cluster", &cluster) {
        return ApiError::not_found(e).into_response();
    }
    let revision = match revision {
        Ok(Query(RevisionQuery { revision })) => revision,
        Err(e) => return ApiError::bad_request(format!("query: {}", e.body_text())).into_response(),
    };
    respond(publish(&state, &cluster, revision, body).await)
}

async fn get_default(State(state): State<Arc<AppState>>) -> Response {
    let cluster = state.default_cluster.clone();
    respond(published(&state, &cluster).await)
}

async fn get_cluster(State(state): State<Arc<AppState>>, Path(cluster): Path<String>) -> Response {
    if let Err(e) = topology::validate_label("cluster", &cluster) {
        return ApiError::not_found(e).into_response();
    }
    respond(published(&state, &cluster).await)
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

/// How often a publish re-reads and tries again when `/dns/<cluster>` changed between
/// its read and its write (another replica published meanwhile).
const PUBLISH_ATTEMPTS: usize = 5;

async fn publish(
    state: &AppState,
    cluster: &str,
    revision: Option<i64>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let topology = topology_from_body(body)?;
    let mut client = state.etcd.client().await?;
    let key = state.keys.dns(cluster);
    for _ in 0..PUBLISH_ATTEMPTS {
        let registrations = match registrations(&mut client, &state.keys, cluster).await {
            Ok(r) => r,
            Err(e) => {
                state.etcd.reset().await;
                return Err(unreachable(state.etcd.0.args(), &e));
            }
        };
        // What was published before: an unregistered node keeps its address from it,
        // and it holds the revision floor. Written only if it is still what we read.
        let (previous, previous_mod) = match client.get(key.as_str(), None).await {
            Ok(got) => match got.kvs().first() {
                Some(kv) => (serde_json::from_slice::<PublishedTopology>(kv.value()).ok(), kv.mod_revision()),
                None => (None, 0),
            },
            Err(e) => {
                state.etcd.reset().await;
                return Err(unreachable(state.etcd.0.args(), &e));
            }
        };
        let names = &state.live.config().names;
        let resolved = publish::resolve(names, cluster, &topology, &registrations, previous.as_ref())
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let resolved = match publish::decide(cluster, revision, previous.as_ref(), resolved) {
            Ok(Decision::Publish(resolved)) => resolved,
            Ok(Decision::Unchanged(previous)) => {
                tracing::info!(cluster, ?revision, "duplicate publish: nothing changed");
                return Ok(Json(Published::of(cluster, &previous, previous_mod)).into_response());
            }
            Err(stale) => {
                tracing::warn!(cluster, %stale, "refused an older publish");
                return Ok((StatusCode::CONFLICT, Json(stale.body())).into_response());
            }
        };
        let value = serde_json::to_string(&resolved)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        // Absent keys compare with mod_revision 0.
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, previous_mod)])
            .and_then([TxnOp::put(key.as_str(), value, None)]);
        let done = match client.txn(txn).await {
            Ok(done) => done,
            Err(e) => {
                state.etcd.reset().await;
                return Err(unreachable(state.etcd.0.args(), &e));
            }
        };
        if !done.succeeded() {
            continue;
        }
        let revision = done.header().map(|h| h.revision()).unwrap_or_default();
        // Serve it now rather than when the watch echoes it back (see `state`).
        state.live.apply([(Change::Published { cluster: cluster.to_string(), topology: Some(resolved.clone()) }, revision)]);
        tracing::info!(cluster, revision, topology_revision = ?resolved.topology_revision,
            master = %describe(&resolved.master), slaves = resolved.slaves.len(), "published");
        return Ok(Json(Published::of(cluster, &resolved, revision)).into_response());
    }
    Err(ApiError::conflict(format!("{key} kept changing while publishing; try again")))
}

async fn published(state: &AppState, cluster: &str) -> Result<Response, ApiError> {
    let mut client = state.etcd.client().await?;
    let response = match client.get(state.keys.dns(cluster), None).await {
        Ok(r) => r,
        Err(e) => {
            state.etcd.reset().await;
            return Err(unreachable(state.etcd.0.args(), &e));
        }
    };
    let Some(kv) = response.kvs().first() else {
        return Err(ApiError::not_found(format!("nothing is published for cluster {cluster}")));
    };
    let topology: PublishedTopology = serde_json::from_slice(kv.value()).map_err(|e| {
        ApiError::bad_gateway(format!("etcd holds an invalid topology at {}: {e}", state.keys.dns(cluster)))
    })?;
    Ok(Json(Published::of(cluster, &topology, kv.mod_revision())).into_response())
}

/// The cluster's registrations, by node name.
async fn registrations(
    client: &mut etcd_client::Client,
    keys: &Keys,
    cluster: &str,
) -> Result<BTreeMap<String, NodeRecord>, etcd_client::Error> {
    let response = client.get(keys.cluster_nodes_prefix(cluster), Some(GetOptions::new().with_prefix())).await?;
    let mut nodes = BTreeMap::new();
    for kv in response.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let Some(Key::Node { node, .. }) = keys.parse(key) else { continue };
        match serde_json::from_slice::<NodeRecord>(kv.value()) {
            Ok(record) => {
                nodes.insert(node, record);
            }
            Err(error) => tracing::warn!(key, %error, "ignoring a registration that is not a node record"),
        }
    }
    Ok(nodes)
}

fn describe(member: &PublishedMember) -> String {
    match &member.node {
        Some(node) => format!("{node} ({}:{})", member.host, member.port),
        None => format!("{}:{}", member.host, member.port),
    }
}
