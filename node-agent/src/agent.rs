//! Wiring: per instance, a probe loop (redis → [`Tracker`] → wanted state); one
//! [`Registry`] (wanted states → etcd, under one lease) and one HTTP API for all
//! instances, with one shutdown for everything.
//!
//! The probe loops and the registry are separate tasks joined by `watch`
//! channels, so a slow or absent etcd never delays a probe, and a slow or dead
//! redis never delays another instance's probe: each tracker keeps seeing its
//! redis (and noticing restarts) while the registry retries, and the registry
//! always writes the latest states when etcd answers again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use service::Shutdown;
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::config::{Config, Instance};
use crate::probe::Prober;
use crate::registry::{Desired, Registry, Slot};
use crate::self_fence;
use crate::tracker::{role_name, Event, Probe, Tracker};

/// What the agent knows right now, for `GET /status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub redis_healthy: bool,
    /// Why the last probe failed.
    pub redis_error: Option<String>,
    pub run_id: Option<String>,
    pub role: Option<&'static str>,
    pub etcd_connected: bool,
    /// Why the last etcd round failed.
    pub etcd_error: Option<String>,
    /// The registration is in etcd (false while etcd is away or after the grace period).
    pub registered: bool,
    /// The last trigger uuid written.
    pub last_trigger: Option<String>,
}

/// Runs the agent until `shutdown`, then deregisters and returns. Fails only when
/// it cannot start (bad settings, the HTTP address is taken) or its HTTP server
/// fails, which stops the rest too.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    crate::config::check_instances(&config.instances)?;
    let keys = config.keys();
    for instance in &config.instances {
        if is_loopback(&instance.advertise_address) {
            tracing::warn!(
                cluster = %instance.cluster, node = %instance.node, address = %instance.advertise_address,
                "advertising a loopback address: only clients on this host can reach it (set the advertised address)"
            );
        }
    }

    // Bound before anything is registered: an agent that cannot start must not
    // have written a registration or a trigger.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot serve HTTP on {}", config.listen))?;
    // The cluster and node are labels of each gauge: one agent may watch several.
    let metrics = service::metrics::install(&[])?;
    metrics::describe_gauge!("redis_topology_node_agent_redis_up", "1 while redis answers the agent's probe.");
    metrics::describe_gauge!("redis_topology_node_agent_redis_role", "1 on the role redis reports (master, slave, unknown when down).");
    metrics::describe_gauge!("redis_topology_node_agent_replication_offset_bytes", "master_repl_offset on a master, slave_repl_offset on a replica.");
    metrics::describe_gauge!("redis_topology_node_agent_etcd_connected", "1 while etcd answers the agent.");
    metrics::describe_gauge!("redis_topology_node_agent_registered", "1 while the registration is in etcd under the agent's lease.");

    let wake = Arc::new(Notify::new());
    // Counted from the start until etcd first answers: a master the control plane
    // never saw is fenced too.
    let (reached_tx, reached_rx) = watch::channel(Instant::now());
    // The role checks of all instances share one etcd client, connected on first use.
    let check_etcd = Arc::new(service::etcd::LazyClient::new(config.etcd.clone()));
    let mut slots = Vec::new();
    let mut served = Vec::new();
    let mut loops = Vec::new();
    for instance in &config.instances {
        let node_key = keys.node(&instance.cluster, &instance.node);
        let prober = Prober::new(&instance.redis, &config.credentials, config.redis_timeout)
            .with_context(|| format!("cannot set up the redis client of {}/{}", instance.cluster, instance.node))?;
        let tracker =
            Tracker::new(instance.advertise_address.clone(), instance.advertise_port, config.down_grace).on_host(&config.host);
        let (status_tx, status_rx) = watch::channel(Status::default());
        let (desired_tx, desired_rx) = watch::channel(Desired::default());
        slots.push(Slot {
            node_key: node_key.clone(),
            trigger_key: keys.trigger(&instance.cluster),
            desired: desired_rx,
            status: status_tx.clone(),
        });
        let me = crate::checks::Identity {
            cluster: instance.cluster.clone(),
            node: instance.node.clone(),
            address: instance.advertise_address.clone(),
            port: instance.advertise_port,
        };
        let checker = crate::checks::Checker::new(me, instance.redis.clone(), config.credentials.clone(), check_etcd.clone());
        served.push(crate::api::Served {
            cluster: instance.cluster.clone(),
            node: instance.node.clone(),
            key: node_key,
            status: status_rx,
            checker,
        });
        let fencing = SelfFence { after: config.self_fence_after, reached: reached_rx.clone() };
        let sinks = Sinks { desired: desired_tx, status: status_tx, wake: wake.clone() };
        loops.push((instance.clone(), prober, tracker, fencing, sinks));
    }
    let statuses: Vec<_> = served.iter().map(|s| (s.key.clone(), s.status.clone())).collect();
    let readiness = tokio::spawn(announce(statuses.clone()));
    let scraped = statuses.iter().map(|(_, rx)| rx.clone()).zip(&config.instances).map(|(rx, i)| (i.cluster.clone(), i.node.clone(), rx));
    let scraped: Arc<Vec<_>> = Arc::new(scraped.collect());
    let metrics = service::metrics::routes(metrics, move || {
        for (cluster, node, status) in scraped.iter() {
            record_registration(cluster, node, &status.borrow());
        }
    });
    let app = crate::api::router(served).merge(metrics);
    tracing::info!(address = %config.listen, scheme = if config.http.tls.is_some() { "https" } else { "http" },
        authenticated = config.http.auth.enabled(), instances = config.instances.len(), "HTTP API listening");
    let mut http = tokio::spawn(service::http::serve_listener(listener, app, config.http.clone(), shutdown.requested()));
    let registry = Registry::new(config.etcd.clone(), config.lease_ttl, slots, wake, reached_tx);
    let registering = tokio::spawn(registry.run(shutdown.clone()));
    let mut probing = Vec::new();
    for (instance, prober, tracker, fencing, sinks) in loops {
        let span = tracing::info_span!("agent", cluster = %instance.cluster, node = %instance.node);
        span.in_scope(|| {
            tracing::info!(
                redis = %instance.redis,
                key = %keys.node(&instance.cluster, &instance.node),
                address = %instance.advertise_address,
                port = instance.advertise_port,
                interval_ms = config.interval.as_millis() as u64,
                self_fence_after_ms = config.self_fence_after.as_millis() as u64,
                "watching redis"
            )
        });
        let gauges = Gauges::new(&instance);
        probing.push(tokio::spawn(
            probe_loop(prober, tracker, config.interval, fencing, sinks, gauges, shutdown.clone()).instrument(span),
        ));
    }

    // The HTTP server stops on the same shutdown, so it ending is only a failure
    // when nobody asked for a shutdown.
    let http_ended = tokio::select! {
        () = shutdown.requested() => None,
        result = &mut http => Some(result),
    };
    let asked_to_stop = shutdown.is_triggered();
    shutdown.trigger();
    readiness.abort();
    for probe in probing {
        let _ = probe.await;
    }
    let _ = registering.await;
    let result = match http_ended {
        Some(result) => result,
        None => http.await,
    };
    match result {
        Ok(Ok(())) if asked_to_stop => Ok(()),
        Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped by itself")),
        Ok(Err(e)) => Err(anyhow::Error::new(e).context(format!("HTTP server on {}", config.listen))),
        Err(e) => Err(anyhow::Error::new(e).context("the HTTP server task failed")),
    }
}

/// systemd: ready once every instance's first registration is in etcd (the
/// HTTP API is bound); from then on `STATUS=` follows redis and the registrations.
async fn announce(mut statuses: Vec<(String, watch::Receiver<Status>)>) {
    for (_, status) in &mut statuses {
        if status.wait_for(|s| s.registered).await.is_err() {
            return;
        }
    }
    let keys: Vec<&str> = statuses.iter().map(|(key, _)| key.as_str()).collect();
    service::systemd::ready(&format!("registered at {}", keys.join(", ")));
    let mut shown = String::new();
    loop {
        let line = match statuses.as_mut_slice() {
            [(key, status)] => status_line(&status.borrow_and_update(), key),
            all => {
                let now: Vec<Status> = all.iter_mut().map(|(_, s)| s.borrow_and_update().clone()).collect();
                summary_line(&now)
            }
        };
        if line != shown {
            service::systemd::status(&line);
            shown = line;
        }
        let changes = statuses.iter_mut().map(|(_, s)| Box::pin(s.changed()));
        if futures::future::select_all(changes).await.0.is_err() {
            return;
        }
    }
}

/// Where a probe loop hands what it found: the wanted etcd state (and a wake-up
/// for the registry), and the status for the API.
struct Sinks {
    desired: watch::Sender<Desired>,
    status: watch::Sender<Status>,
    wake: Arc<Notify>,
}

/// When to fence redis: `after` without etcd answering, counted from `reached`.
struct SelfFence {
    after: std::time::Duration,
    reached: watch::Receiver<Instant>,
}

/// Probes redis every `interval`, fences it when the agent has lost etcd, feeds
/// the tracker, logs what changed and hands the wanted etcd state to the registry.
async fn probe_loop(
    mut prober: Prober,
    mut tracker: Tracker,
    interval: std::time::Duration,
    fencing: SelfFence,
    sinks: Sinks,
    gauges: Gauges,
    shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut triggers = 0u64;
    loop {
        tokio::select! {
            () = shutdown.requested() => break,
            _ = ticker.tick() => {}
        }
        let mut probe = tokio::select! {
            () = shutdown.requested() => break,
            probe = prober.probe() => probe,
        };
        if let Probe::Up(state) = &mut probe {
            let reached = *fencing.reached.borrow();
            if self_fence::due(reached, Instant::now(), fencing.after, state) {
                let unreached_ms = reached.elapsed().as_millis() as u64;
                match prober.fence().await {
                    Ok(offset) => {
                        state.fenced = true;
                        tracing::error!(unreached_ms, offset, "etcd out of reach: fenced this master, it takes no writes until an apply lifts the fence");
                    }
                    Err(error) => tracing::error!(unreached_ms, %error, "etcd out of reach, and fencing this master failed; trying again"),
                }
            }
        }
        let (error, up) = match &probe {
            Probe::Down { error } => (Some(error.clone()), None),
            Probe::Up(state) => (None, Some((state.run_id.clone(), role_name(state.role)))),
        };
        gauges.record(&probe);
        let decision = tracker.observe(probe, Instant::now(), unix_ms());
        for event in &decision.events {
            match event {
                Event::Unhealthy { .. } | Event::Removed { .. } => tracing::warn!("{event}"),
                _ => tracing::info!("{event}"),
            }
        }
        if let Some(reason) = &decision.trigger {
            triggers += 1;
            tracing::info!(%reason, "asking the observer to re-apply the topology");
        }
        sinks.status.send_modify(|s| {
            s.redis_healthy = up.is_some();
            s.redis_error = error;
            if let Some((run_id, role)) = up {
                s.run_id = Some(run_id);
                s.role = Some(role);
            }
        });
        sinks.desired.send_replace(Desired { registration: Some(decision.registration), triggers });
        sinks.wake.notify_one();
    }
}

/// systemd's `STATUS=` line for what the agent knows now.
pub fn status_line(status: &Status, key: &str) -> String {
    let redis = match (status.redis_healthy, status.role) {
        (true, Some(role)) => format!("redis up ({role})"),
        (true, None) => "redis up".to_string(),
        (false, _) => format!("redis DOWN ({})", status.redis_error.as_deref().unwrap_or("no answer")),
    };
    let etcd = if status.registered {
        format!("registered at {key}")
    } else if status.etcd_connected {
        "not registered".to_string()
    } else {
        format!("etcd unreachable ({})", status.etcd_error.as_deref().unwrap_or("no answer"))
    };
    format!("{redis}; {etcd}")
}

/// A summary `STATUS=` line for an agent watching several instances.
pub fn summary_line(statuses: &[Status]) -> String {
    let up = statuses.iter().filter(|s| s.redis_healthy).count();
    let registered = statuses.iter().filter(|s| s.registered).count();
    let etcd = if statuses.iter().any(|s| s.etcd_connected) { "" } else { "; etcd unreachable" };
    format!("{} instances: {up} redis up, {registered} registered{etcd}", statuses.len())
}

/// The probe's gauges of one instance: redis up, its role (1 on the current
/// one), its replication offset.
struct Gauges {
    up: metrics::Gauge,
    roles: Vec<(&'static str, metrics::Gauge)>,
    offset: metrics::Gauge,
}

impl Gauges {
    fn new(instance: &Instance) -> Gauges {
        let (cluster, node) = (instance.cluster.clone(), instance.node.clone());
        let role = |name: &'static str| {
            let gauge = metrics::gauge!("redis_topology_node_agent_redis_role", "cluster" => cluster.clone(), "node" => node.clone(), "role" => name);
            (name, gauge)
        };
        Gauges {
            up: metrics::gauge!("redis_topology_node_agent_redis_up", "cluster" => cluster.clone(), "node" => node.clone()),
            roles: vec![role("master"), role("slave"), role("unknown")],
            offset: metrics::gauge!("redis_topology_node_agent_replication_offset_bytes", "cluster" => cluster.clone(), "node" => node.clone()),
        }
    }

    fn record(&self, probe: &Probe) {
        self.up.set(if matches!(probe, Probe::Up(_)) { 1.0 } else { 0.0 });
        let role = match probe {
            Probe::Up(state) => role_name(state.role),
            Probe::Down { .. } => "unknown",
        };
        for (name, gauge) in &self.roles {
            gauge.set(if *name == role { 1.0 } else { 0.0 });
        }
        if let Probe::Up(state) = probe {
            self.offset.set(state.offset as f64);
        }
    }
}

/// The lease's gauges of one instance, at scrape time: etcd reached, registration held.
fn record_registration(cluster: &str, node: &str, status: &Status) {
    let labels = [("cluster", cluster.to_string()), ("node", node.to_string())];
    metrics::gauge!("redis_topology_node_agent_etcd_connected", &labels).set(if status.etcd_connected { 1.0 } else { 0.0 });
    metrics::gauge!("redis_topology_node_agent_registered", &labels).set(if status.registered { 1.0 } else { 0.0 });
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
