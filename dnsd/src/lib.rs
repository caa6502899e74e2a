//! dnsd: the authoritative DNS server that tells clients and HAProxy where each
//! cluster's master and slaves are, backed by etcd so that every replica answers the
//! same.
//!
//! Flow: `PUT /dns` ([`api`]) checks a topology and resolves its members to registered
//! nodes or IP addresses ([`publish`]), stores it at `/dns/<cluster>` in etcd and
//! applies it locally. Every replica follows `/dns/` and `/nodes/` in etcd ([`store`]:
//! list, then watch; reconnect and list again after any failure), folds each change
//! into its [`state::Records`] (where a late event can never undo a newer one), builds a whole
//! new [`zone`] (every answer precomputed) and swaps it in atomically ([`live`]). The
//! DNS [`authority`] answers each query from the current zone with one atomic load and
//! one hash lookup, and keeps answering from the last zone while etcd is away.
//!
//! - [`zone`]: pure: etcd state to a zone of ready answers, and lookups in it;
//! - [`state`]: pure: the registrations and topologies, and the revision rules;
//! - [`publish`]: pure: a PUT topology to the `{host, port, node}` members stored;
//! - [`live`]: the zone being served and the one path that replaces it;
//! - [`store`]: turns etcd keys into zone changes (the list/watch loop itself is
//!   `service::etcd::follow`);
//! - [`authority`]: the hickory-server request handler, the UDP loops in front of
//!   it and the TCP listener;
//! - [`wire`]: pure: the fast path, answers encoded once per zone and sent with the
//!   query's ID, flags and question patched in;
//! - [`sentinel`]: pure: the read-only Sentinel protocol, (state, command) to reply;
//! - [`sentinel_server`]: the `--sentinel-listen` TCP listener around it, and this
//!   replica's `/sentinels/<run id>` registration;
//! - [`api`]: the axum routes;
//! - [`domain`]: records `--domain` in etcd (`/domain`), so others check against it;
//! - [`haproxy`]: pushes the published master and slaves to HAProxy's runtime API
//!   (`--haproxy-runtime`) the moment the zone changes.

pub mod api;
pub mod authority;
pub mod domain;
pub mod haproxy;
pub mod live;
pub mod publish;
pub mod sentinel;
pub mod sentinel_server;
pub mod state;
pub mod store;
pub mod wire;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use service::cli::EtcdArgs;
use service::Shutdown;
use topology::Names;

use crate::authority::Listeners;
use crate::live::Live;
use crate::zone::ZoneConfig;

/// Everything `dnsd` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP API address.
    pub listen: SocketAddr,
    /// Its tokens, TLS and limits.
    pub http: service::http::HttpSettings,
    /// DNS address, UDP and TCP.
    pub dns_listen: SocketAddr,
    pub names: Names,
    pub ttl: u32,
    /// Cluster of the original `PUT /dns`.
    pub cluster: String,
    /// UDP sockets sharing the DNS port (SO_REUSEPORT), each with its own receive loop.
    pub udp_sockets: usize,
    pub etcd: EtcdArgs,
    /// Where to answer the Sentinel protocol, if anywhere.
    pub sentinel: Option<SentinelConfig>,
    /// Where to push the topology of one cluster (no targets: push nothing).
    pub haproxy: haproxy::HaproxyConfig,
}

/// The Sentinel listener: where it binds, and the address other replicas and
/// clients are told (`SENTINEL sentinels`); the bound address when `None`.
#[derive(Debug, Clone)]
pub struct SentinelConfig {
    pub listen: SocketAddr,
    pub announce: Option<SocketAddr>,
}

/// Serves DNS and HTTP and follows etcd until `shutdown` completes, then stops
/// gracefully. Fails if a listener cannot be bound.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    // /metrics: hickory's query counters, and the zone's etcd revision at scrape time.
    // Installed first: what the DNS listeners and the etcd follower record from
    // their first moment must not go to a recorder that is not there yet.
    let metrics = service::metrics::install(&[])?;
    metrics::describe_counter!("redis_topology_dnsd_queries_total", "DNS queries answered, by record type and response code.");
    metrics::describe_gauge!("redis_topology_dnsd_etcd_connected", "1 once dnsd listed etcd and follows it, 0 after a failed attempt (it serves the last zone meanwhile).");
    metrics::describe_gauge!("redis_topology_dnsd_zone_revision", "The newest etcd revision the served zone includes.");
    // hickory-server's own counters, which dnsd counts itself for UDP (hickory-server
    // describes them only once it answers over TCP).
    metrics::describe_counter!("hickory_request_protocols_total", "Number of requests by transport protocol.");
    metrics::describe_counter!("hickory_request_operations_total", "Number of requests by opcode.");
    metrics::describe_counter!("hickory_request_flags_total", "Number of requests by header flags.");
    metrics::describe_counter!("hickory_response_flags_total", "Number of responses by header flags.");
    metrics::describe_counter!("hickory_response_codes_total", "Number of responses by response code.");
    let listeners = Listeners::bind(config.dns_listen, config.udp_sockets)
        .with_context(|| format!("bind DNS (UDP and TCP) on {}", config.dns_listen))?;
    let dns_address = listeners.local_addr().context("DNS listener address")?;
    let zone = ZoneConfig { names: config.names.clone(), ttl: config.ttl, ns_address: Some(dns_address.ip()) };
    let live = Arc::new(Live::new(zone));
    let mut dns = listeners.serve(live.clone()).context("start the DNS listeners")?;
    tracing::info!(address = %dns_address, domain = config.names.domain(), ttl = config.ttl,
        udp_sockets = config.udp_sockets, "DNS listening (UDP and TCP)");

    let mut sentinel_tasks = Vec::new();
    if let Some(sentinel) = &config.sentinel {
        let listener = tokio::net::TcpListener::bind(sentinel.listen)
            .await
            .with_context(|| format!("bind Sentinel (TCP) on {}", sentinel.listen))?;
        let bound = listener.local_addr().context("Sentinel listener address")?;
        let announce = sentinel.announce.unwrap_or(bound);
        anyhow::ensure!(!announce.ip().is_unspecified(),
            "--sentinel-listen {bound} is not an address clients can use: give --sentinel-announce");
        let run_id = sentinel_server::new_run_id();
        let me = sentinel::Identity { run_id: run_id.clone(), port: announce.port() };
        let record = topology::records::SentinelRecord { address: announce.ip().to_string(), port: announce.port() };
        sentinel_tasks.push(tokio::spawn(sentinel_server::serve(listener, live.clone(), me, shutdown.clone())));
        sentinel_tasks.push(tokio::spawn(sentinel_server::register(config.etcd.clone(), run_id.clone(), record, shutdown.clone())));
        tracing::info!(address = %bound, %announce, run_id, "Sentinel listening (TCP)");
    }

    let (listed_tx, listed) = tokio::sync::oneshot::channel();
    tokio::spawn(domain::record(config.etcd.clone(), config.names.domain().to_string(), shutdown.clone()));
    let follower = tokio::spawn(store::follow(config.etcd.clone(), live.clone(), shutdown.clone(), Some(listed_tx)));
    let pushers = haproxy::start(live.clone(), config.haproxy, config.etcd.clone(), &shutdown);
    let scraped = live.clone();
    let metrics = service::metrics::routes(metrics, move || {
        metrics::gauge!("redis_topology_dnsd_zone_revision").set(scraped.state().revision() as f64);
    });
    let app = api::router(live, config.etcd, config.cluster).merge(metrics);
    let (http_bound_tx, http_bound) = tokio::sync::oneshot::channel();
    let mut http = tokio::spawn(service::http::serve_then(config.listen, app, config.http, shutdown.requested(), |address| {
        let _ = http_bound_tx.send(address);
    }));
    // systemd: ready once DNS and HTTP are bound and the first etcd list was tried
    // (a failed one is retried in the background; the zone fills in when etcd answers).
    let readiness = tokio::spawn(async move {
        let (Ok(http_address), Ok(etcd_listed)) = (http_bound.await, listed.await) else { return };
        let etcd = if etcd_listed { "etcd listed" } else { "etcd unavailable, retrying" };
        service::systemd::ready(&format!("serving DNS on {dns_address}, HTTP on {http_address}; {etcd}"));
    });

    let http_result = tokio::select! {
        () = shutdown.requested() => None,
        result = &mut http => Some(result),
    };
    // An HTTP server that failed takes the rest down with it.
    shutdown.trigger();
    readiness.abort();
    let http_result = match http_result {
        Some(result) => result,
        None => http.await,
    };
    if let Err(error) = dns.shutdown_gracefully().await {
        tracing::warn!(%error, "DNS server did not stop cleanly");
    }
    let _ = follower.await;
    for task in sentinel_tasks {
        let _ = task.await;
    }
    for pusher in pushers {
        let _ = pusher.await;
    }
    http_result
        .context("HTTP task")?
        .with_context(|| format!("serve HTTP on {}", config.listen))?;
    tracing::info!("stopped");
    Ok(())
}

