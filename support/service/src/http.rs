//! HTTP conventions every API shares: errors are `{"error": "..."}` with the status
//! codes of docs/architecture.md, routing misses are JSON too, `GET /healthz` exists,
//! and every request gets one access log line ([`access_log`]).

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// An error answered to an HTTP client: a status and a sentence naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    /// `message` is anything displayable: a sentence, or a typed error.
    pub fn new(status: StatusCode, message: impl std::fmt::Display) -> Self {
        ApiError { status, message: message.to_string() }
    }
    pub fn bad_request(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn unprocessable(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
    pub fn conflict(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn bad_gateway(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, message)
    }
    pub fn gateway_timeout(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, message)
    }
    pub fn not_found(message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<topology::SpecError> for ApiError {
    fn from(err: topology::SpecError) -> Self {
        match err {
            topology::SpecError::Malformed(_) => ApiError::bad_request(err.to_string()),
            topology::SpecError::Invalid { .. } => ApiError::unprocessable(err.to_string()),
        }
    }
}

/// Default cap on request bodies; a topology is a few hundred bytes.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Reads a topology from a request body, mapping every failure to its status:
/// 413 over the limit, 400 not JSON, 422 not a valid topology.
pub fn topology_from_body(
    body: Result<Bytes, BytesRejection>,
) -> Result<topology::Topology, ApiError> {
    let body = body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    Ok(topology::Topology::from_json(&body)?)
}

/// Adds `/healthz` and the JSON 404/405 fallbacks to a service's routes, and caps
/// request bodies at [`BODY_LIMIT`].
pub fn with_conventions(routes: Router) -> Router {
    routes
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint")
        })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
}

/// Binds `listen` and serves `app` until `shutdown` completes, letting requests in
/// flight finish.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_then(listen, app, shutdown, |_| {}).await
}

/// Like [`serve`], and calls `on_listening` with the bound address once the listener
/// is bound, before serving (connections made meanwhile wait in the backlog). Used to
/// tell systemd the service is ready only when it really is.
pub async fn serve_then(
    listen: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "HTTP API listening");
    on_listening(address);
    axum::serve(listener, access_log(app)).with_graceful_shutdown(shutdown).await
}

/// Wraps every route of `app` (added before or after [`with_conventions`]) in
/// tower-http's `TraceLayer`: one `http` span per request (method, path) and one
/// INFO line when the response is sent, with its status and latency; a 5xx or a
/// failure to answer is logged at ERROR.
pub fn access_log(app: Router) -> Router {
    use tower_http::trace::{DefaultMakeSpan, DefaultOnFailure, DefaultOnResponse, TraceLayer};
    use tracing::Level;
    app.layer(
        TraceLayer::new_for_http()
            .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
            .on_request(())
            .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(tower_http::LatencyUnit::Micros))
            .on_failure(DefaultOnFailure::new().level(Level::ERROR)),
    )
}
