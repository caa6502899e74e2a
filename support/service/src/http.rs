//! HTTP conventions every API shares: errors are `{"error": "..."}` with the status
//! codes of docs/architecture.md, routing misses are JSON too, `GET /healthz` exists,
//! and every request gets one access log line ([`access_log`]).
//!
//! Serving ([`serve_then`], [`serve_listener`]) is hyper's HTTP/1 server on our own
//! accept loop, so that every listener has the same defences whatever the service:
//! bearer tokens and the audit log ([`crate::auth`]), optional TLS and mTLS
//! ([`crate::tls`]), a cap on connections, on the request head (size, count and
//! time: slowloris), on the body ([`BODY_LIMIT`]) and on the time to answer (408).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use serde_json::json;

use crate::auth::{ApiAuth, ApiAuthArgs, TokenFileError};
use crate::tls::{ServerTls, TlsArgs, TlsError};

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

/// Header bytes a request may send (hyper's read buffer; a longer head is 431).
pub const HEADER_LIMIT: usize = 16 * 1024;
/// Header lines a request may send (more is 431).
pub const MAX_HEADERS: usize = 64;

/// The flags of every HTTP listener: tokens, TLS, limits.
#[derive(Debug, Clone, Default, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub auth: ApiAuthArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// What one client may hold of a listener.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Connections served at once; more wait in the kernel's backlog.
    #[arg(long, env = "REDIS_TOPOLOGY_HTTP_MAX_CONNECTIONS", default_value_t = 256)]
    pub http_max_connections: usize,

    /// A connection that has not sent a whole request head (or finished its TLS
    /// handshake) within this long is closed (slowloris), idle ones included (the
    /// observer drops its idle connections after 2 s: keep this above that).
    #[arg(long, env = "REDIS_TOPOLOGY_HTTP_HEADER_TIMEOUT_MS", default_value_t = 5000)]
    pub http_header_timeout_ms: u64,

    /// A request not answered within this long gets 408 (a dictator apply that
    /// started goes on in its own task).
    #[arg(long, env = "REDIS_TOPOLOGY_HTTP_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub http_request_timeout_ms: u64,
}

impl Default for LimitArgs {
    fn default() -> Self {
        LimitArgs { http_max_connections: 256, http_header_timeout_ms: 5000, http_request_timeout_ms: 60_000 }
    }
}

/// Why a listener's flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("--api-token-file {0}")]
    Tokens(#[from] TokenFileError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--http-max-connections must be at least 1")]
    NoConnections,
}

/// A listener's settings, read from [`HttpArgs`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub auth: ApiAuth,
    pub tls: Option<ServerTls>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
}

impl Default for HttpSettings {
    /// Open, plain HTTP, the default limits (tests and tools).
    fn default() -> Self {
        HttpSettings::with_limits(ApiAuth::open(), None, &LimitArgs::default())
    }
}

impl HttpSettings {
    fn with_limits(auth: ApiAuth, tls: Option<ServerTls>, limits: &LimitArgs) -> Self {
        HttpSettings {
            auth,
            tls,
            max_connections: limits.http_max_connections,
            header_timeout: Duration::from_millis(limits.http_header_timeout_ms),
            request_timeout: Duration::from_millis(limits.http_request_timeout_ms),
        }
    }
}

impl HttpArgs {
    /// Reads the token file and the TLS files now, so a bad one stops the start;
    /// re-reads them on SIGHUP from then on (needs a tokio runtime).
    pub fn settings(&self) -> Result<HttpSettings, HttpSetupError> {
        if self.limits.http_max_connections == 0 {
            return Err(HttpSetupError::NoConnections);
        }
        let auth = ApiAuth::from_args(&self.auth)?;
        auth.reload_on_sighup();
        let tls = ServerTls::load(&self.tls)?;
        match &tls {
            Some(tls) => tls.reload_on_sighup(),
            // SIGHUP's default is to end the process: a `kill -HUP` meant for a
            // reload must not take a service down.
            None if !auth.enabled() => ignore_sighup(),
            None => {}
        }
        Ok(HttpSettings::with_limits(auth, tls, &self.limits))
    }
}

/// Logs a SIGHUP instead of dying of it, for a service with nothing to re-read.
fn ignore_sighup() {
    crate::shutdown::on_sighup("nothing", "", || -> Result<(), &str> {
        tracing::info!("SIGHUP: no token file and no TLS files to re-read");
        Ok(())
    });
}

/// Binds `listen` and serves `app` until `shutdown` completes, letting requests in
/// flight finish.
pub async fn serve(
    listen: SocketAddr,
    app: Router,
    settings: HttpSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_then(listen, app, settings, shutdown, |_| {}).await
}

/// Like [`serve`], and calls `on_listening` with the bound address once the listener
/// is bound, before serving (connections made meanwhile wait in the backlog). Used to
/// tell systemd the service is ready only when it really is.
pub async fn serve_then(
    listen: SocketAddr,
    app: Router,
    settings: HttpSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let address = listener.local_addr()?;
    let scheme = if settings.tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, scheme, authenticated = settings.auth.enabled(), "HTTP API listening");
    on_listening(address);
    serve_listener(listener, app, settings, shutdown).await
}

/// Serves `app` on a bound listener until `shutdown`, then waits for the requests
/// in flight. Every request gets the access log, [`ApiAuth`]'s check and audit
/// line, and the request timeout (408); every connection hyper's HTTP/1 limits
/// (head size and count, [`HEADER_LIMIT`], [`MAX_HEADERS`]; head and TLS handshake
/// within the header timeout); at most `max_connections` are served at once.
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    app: Router,
    settings: HttpSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;

    let app = access_log(request_timeout(settings.auth.layer(app), settings.request_timeout));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_buf_size(HEADER_LIMIT)
        .max_headers(MAX_HEADERS);
    let tls = settings.tls.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: over the limit, connections wait in the backlog, unread.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pass, without spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(axum::extract::ConnectInfo(remote));
                request
            },
        ));
        // The configuration of this moment: a SIGHUP may replace it for the next one.
        let tls = tls.as_ref().map(|tls| tokio_rustls::TlsAcceptor::from(tls.current()));
        let (http1, watcher, handshake) = (http1.clone(), graceful.watcher(), settings.header_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let served = match tls {
                None => watcher.watch(http1.serve_connection(TokioIo::new(stream), service)).await,
                Some(acceptor) => match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => watcher.watch(http1.serve_connection(TokioIo::new(stream), service)).await,
                    Ok(Err(e)) => return tracing::info!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::info!(%remote, "TLS handshake timed out"),
                },
            };
            if let Err(e) = served {
                tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Answers 408 (JSON) to a request not answered within `limit`.
fn request_timeout(app: Router, limit: Duration) -> Router {
    async fn bounded(State(limit): State<Duration>, request: Request, next: Next) -> Response {
        match tokio::time::timeout(limit, next.run(request)).await {
            Ok(response) => response,
            Err(_) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request was not answered within {} ms", limit.as_millis()),
            )
            .into_response(),
        }
    }
    app.layer(axum::middleware::from_fn_with_state(limit, bounded))
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
