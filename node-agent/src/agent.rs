//! Wiring: the probe loop (redis → [`Tracker`] → wanted state), the [`Registry`]
//! (wanted state → etcd) and the HTTP status API, with one shutdown for all three.
//!
//! The probe loop and the registry are separate tasks joined by a `watch` channel,
//! so a slow or absent etcd never delays a probe: the tracker keeps seeing redis
//! (and noticing restarts) while the registry retries, and the registry always
//! writes the latest state when etcd answers again.

use std::net::IpAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use service::Shutdown;
use tokio::sync::watch;
use tracing::Instrument;

use crate::config::Config;
use crate::probe::Prober;
use crate::registry::{Desired, Registry};
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
    let keys = config.keys();
    let node_key = keys.node(&config.cluster, &config.node);
    let trigger_key = keys.trigger(&config.cluster);
    let span = tracing::info_span!("agent", cluster = %config.cluster, node = %config.node);
    if is_loopback(&config.advertise_address) {
        tracing::warn!(
            address = %config.advertise_address,
            "advertising a loopback address: only clients on this host can reach it (set --advertise-address)"
        );
    }
    let prober = Prober::new(&config.redis, &config.credentials, config.redis_timeout)
        .context("cannot set up the redis client")?;
    let tracker = Tracker::new(config.advertise_address.clone(), config.advertise_port, config.down_grace).on_host(&config.host);
    let (status_tx, status_rx) = watch::channel(Status::default());
    let (desired_tx, desired_rx) = watch::channel(Desired::default());

    // Bound before anything is registered: an agent that cannot start must not
    // have written a registration or a trigger.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot serve HTTP on {}", config.listen))?;
    // systemd: ready once the first registration is in etcd (the HTTP API is bound).
    let mut registered = status_rx.clone();
    let ready_key = node_key.clone();
    let readiness = tokio::spawn(async move {
        if registered.wait_for(|s| s.registered).await.is_ok() {
            service::systemd::ready(&format!("registered at {ready_key}"));
        }
        // From then on STATUS= follows redis and the registration.
        let mut shown = String::new();
        loop {
            let line = status_line(&registered.borrow_and_update(), &ready_key);
            if line != shown {
                service::systemd::status(&line);
                shown = line;
            }
            if registered.changed().await.is_err() {
                return;
            }
        }
    });
    let metrics = service::metrics::install(&[("cluster", &config.cluster), ("node", &config.node)])?;
    metrics::describe_gauge!("redis_topology_node_agent_redis_up", "1 while redis answers the agent's probe.");
    metrics::describe_gauge!("redis_topology_node_agent_redis_role", "1 on the role redis reports (master, slave, unknown when down).");
    metrics::describe_gauge!("redis_topology_node_agent_replication_offset_bytes", "master_repl_offset on a master, slave_repl_offset on a replica.");
    metrics::describe_gauge!("redis_topology_node_agent_etcd_connected", "1 while etcd answers the agent.");
    metrics::describe_gauge!("redis_topology_node_agent_registered", "1 while the registration is in etcd under the agent's lease.");
    let scraped = status_rx.clone();
    let metrics = service::metrics::routes(metrics, move || record_registration(&scraped.borrow()));
    let me = crate::checks::Identity {
        cluster: config.cluster.clone(),
        node: config.node.clone(),
        address: config.advertise_address.clone(),
        port: config.advertise_port,
    };
    let checker = crate::checks::Checker::new(me, config.redis.clone(), config.credentials.clone(), config.etcd.clone());
    let app = crate::api::router(status_rx, config.cluster.clone(), config.node.clone(), node_key.clone(), checker).merge(metrics);
    tracing::info!(address = %config.listen, scheme = if config.http.tls.is_some() { "https" } else { "http" },
        authenticated = config.http.auth.enabled(), "HTTP API listening");
    let mut http = tokio::spawn(service::http::serve_listener(listener, app, config.http.clone(), shutdown.requested()));
    // Counted from the start until etcd first answers: a master the control plane
    // never saw is fenced too.
    let (reached_tx, reached_rx) = watch::channel(Instant::now());
    let registry =
        Registry::new(config.etcd.clone(), node_key.clone(), trigger_key, config.lease_ttl, status_tx.clone(), reached_tx);
    let registering = tokio::spawn(registry.run(desired_rx, shutdown.clone()).instrument(span.clone()));
    let fencing = SelfFence { after: config.self_fence_after, reached: reached_rx };
    let probing = tokio::spawn(
        probe_loop(prober, tracker, config.interval, fencing, desired_tx, status_tx, shutdown.clone()).instrument(span.clone()),
    );
    span.in_scope(|| {
        tracing::info!(
            redis = %config.redis,
            key = %node_key,
            address = %config.advertise_address,
            port = config.advertise_port,
            interval_ms = config.interval.as_millis() as u64,
            self_fence_after_ms = config.self_fence_after.as_millis() as u64,
            "node-agent started"
        )
    });

    // The HTTP server stops on the same shutdown, so it ending is only a failure
    // when nobody asked for a shutdown.
    let http_ended = tokio::select! {
        () = shutdown.requested() => None,
        result = &mut http => Some(result),
    };
    let asked_to_stop = shutdown.is_triggered();
    shutdown.trigger();
    readiness.abort();
    let _ = probing.await;
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
    desired: watch::Sender<Desired>,
    status: watch::Sender<Status>,
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
        record_probe(&probe);
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
        status.send_modify(|s| {
            s.redis_healthy = up.is_some();
            s.redis_error = error;
            if let Some((run_id, role)) = up {
                s.run_id = Some(run_id);
                s.role = Some(role);
            }
        });
        desired.send_replace(Desired { registration: Some(decision.registration), triggers });
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

/// The probe's gauges: redis up, its role (1 on the current one), its
/// replication offset.
fn record_probe(probe: &Probe) {
    let up = matches!(probe, Probe::Up(_));
    metrics::gauge!("redis_topology_node_agent_redis_up").set(if up { 1.0 } else { 0.0 });
    let role = match probe {
        Probe::Up(state) => role_name(state.role),
        Probe::Down { .. } => "unknown",
    };
    for name in ["master", "slave", "unknown"] {
        metrics::gauge!("redis_topology_node_agent_redis_role", "role" => name).set(if name == role { 1.0 } else { 0.0 });
    }
    if let Probe::Up(state) = probe {
        metrics::gauge!("redis_topology_node_agent_replication_offset_bytes").set(state.offset as f64);
    }
}

/// The lease's gauges, at scrape time: etcd reached, registration held.
fn record_registration(status: &Status) {
    metrics::gauge!("redis_topology_node_agent_etcd_connected").set(if status.etcd_connected { 1.0 } else { 0.0 });
    metrics::gauge!("redis_topology_node_agent_registered").set(if status.registered { 1.0 } else { 0.0 });
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn is_loopback(address: &str) -> bool {
    address == "localhost" || address.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
