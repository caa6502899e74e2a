//! One apply, end to end: resolve the members, observe them, plan, execute, and
//! report. Applies to one cluster are serialized; different clusters run freely.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use service::redis_auth::Credentials;
use service::resolve::{MemberResolver, ResolveError};
use topology::Topology;

use crate::execute::{execute, ExecSettings, Failure, Outcome};
use crate::observe::{connect, read_replication, ObserveError, Observed, ReplicationRole, Timeouts};
use crate::plan::{plan, Wanted, Refusal, Step};

/// Everything an apply is tuned by.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    /// Redis AUTH for every instance.
    pub credentials: Credentials,
    pub exec: ExecSettings,
    /// How long a second apply to the same cluster waits before a 409.
    pub lock_wait: Duration,
}

/// Per request: `?force=true`, `?dry_run=true`.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct ApplyOptions {
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub dry_run: bool,
}

/// The answer to an apply (DESIGN.md), with per-step timings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub changed: bool,
    pub dry_run: bool,
    pub master: SocketAddr,
    pub slaves: Vec<SocketAddr>,
    pub steps: Vec<ReportStep>,
    pub write_pause_ms: f64,
    pub unreachable: Vec<SocketAddr>,
    /// Slaves not yet showing the verification marker (still syncing).
    pub lagging: Vec<SocketAddr>,
    /// Data-loss reasons `force=true` overrode; empty unless forced.
    pub forced: Vec<String>,
    /// With `dry_run`: why a real apply would be refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// With `dry_run`: every member as observed, with its replication lag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
    /// Planned steps that were not run because an earlier step failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_done: Vec<Step>,
    /// Fences lifted after an abort.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undone: Vec<crate::execute::UndoReport>,
    pub warnings: Vec<String>,
    pub total_ms: f64,
}

/// A step as reported: executed (with `ms`) or, in a dry run, only planned.
#[derive(Debug, Clone, Serialize)]
pub struct ReportStep {
    #[serde(flatten)]
    pub step: Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One member in a dry run.
#[derive(Debug, Clone, Serialize)]
pub struct MemberState {
    pub address: SocketAddr,
    #[serde(flatten)]
    pub observed: Observed,
    /// Bytes behind the furthest member on the same replication history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
}

/// A failed apply: the status, what went wrong, and what was done before.
#[derive(Debug, Clone)]
pub struct ApplyError {
    pub status: StatusCode,
    pub error: String,
    pub report: Option<Box<Report>>,
}

impl ApplyError {
    fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApplyError { status, error: error.into(), report: None }
    }
}

impl std::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error, self.status)
    }
}

impl axum::response::IntoResponse for ApplyError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({ "error": self.error, "report": self.report });
        (self.status, axum::Json(body)).into_response()
    }
}

/// The dictator: applies topologies, one at a time per cluster.
pub struct Dictator {
    resolver: MemberResolver,
    settings: Settings,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Dictator {
    pub fn new(resolver: MemberResolver, settings: Settings) -> Dictator {
        Dictator { resolver, settings, locks: Mutex::new(HashMap::new()) }
    }

    /// Applies `topology` to `cluster`.
    pub async fn apply(
        &self,
        cluster: &str,
        topology: &Topology,
        options: ApplyOptions,
    ) -> Result<Report, ApplyError> {
        let started = Instant::now();
        let lock = self.cluster_lock(cluster);
        let _guard = tokio::time::timeout(self.settings.lock_wait, lock.lock_owned())
            .await
            .map_err(|_| {
                ApplyError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "another apply to cluster {cluster} is still running after {:?}; try again",
                        self.settings.lock_wait
                    ),
                )
            })?;

        let wanted = self.resolve(topology).await?;
        let (observed, conns) = self.observe(&wanted).await;
        let mut report = Report {
            cluster: cluster.to_string(),
            changed: false,
            dry_run: options.dry_run,
            master: wanted.master,
            slaves: wanted.slaves.clone(),
            steps: Vec::new(),
            write_pause_ms: 0.0,
            unreachable: Vec::new(),
            lagging: Vec::new(),
            forced: Vec::new(),
            refusal: None,
            members: Vec::new(),
            not_done: Vec::new(),
            undone: Vec::new(),
            warnings: Vec::new(),
            total_ms: 0.0,
        };

        if options.dry_run {
            report.members = member_states(&wanted, &observed);
            let planned = match plan(&wanted, &observed, options.force) {
                Ok(p) => p,
                Err(refusal @ Refusal::WouldLoseData { .. }) => {
                    report.refusal = Some(refusal.to_string());
                    plan(&wanted, &observed, true).map_err(refused)?
                }
                Err(refusal) => return Err(refused(refusal)),
            };
            report.changed = planned.changes_anything();
            report.unreachable = planned.unreachable;
            report.forced = if options.force { planned.overridden } else { Vec::new() };
            report.steps = planned.steps.into_iter().map(|step| ReportStep { step, ms: None, error: None }).collect();
            report.total_ms = ms_since(started);
            return Ok(report);
        }

        let planned = plan(&wanted, &observed, options.force).map_err(refused)?;
        report.unreachable = planned.unreachable.clone();
        report.forced = planned.overridden.clone();
        if !planned.overridden.is_empty() {
            tracing::warn!(cluster, reasons = ?planned.overridden, "forced apply discards data");
        }
        if !planned.changes_anything() {
            tracing::info!(cluster, master = %wanted.master, "topology already holds; nothing to do");
            report.total_ms = ms_since(started);
            return Ok(report);
        }
        tracing::info!(cluster, steps = ?planned.steps.iter().map(ToString::to_string).collect::<Vec<_>>(), "applying");

        let outcome = execute(&planned, &conns, &observed, &self.settings.exec).await;
        let Outcome { steps, not_done, undone, write_pause_ms, lagging, warnings, failure } = outcome;
        report.changed = !steps.is_empty();
        report.steps = steps
            .into_iter()
            .map(|s| ReportStep { step: s.step, ms: Some(round(s.ms)), error: s.error })
            .collect();
        report.not_done = not_done;
        report.undone = undone;
        report.write_pause_ms = round(write_pause_ms);
        report.lagging = lagging;
        report.warnings = warnings;
        report.total_ms = ms_since(started);

        match failure {
            None => {
                tracing::info!(cluster, master = %wanted.master, write_pause_ms = report.write_pause_ms, total_ms = report.total_ms, "applied");
                Ok(report)
            }
            Some(failure) => {
                let status = match failure {
                    Failure::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                    Failure::Redis(_) => StatusCode::BAD_GATEWAY,
                };
                tracing::error!(cluster, error = %failure.text(), "apply failed");
                Err(ApplyError { status, error: failure.text(), report: Some(Box::new(report)) })
            }
        }
    }

    fn cluster_lock(&self, cluster: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(cluster.to_string()).or_default().clone()
    }

    /// Resolves every member to one address; 422 for names that do not resolve
    /// or two members that turn out to be one instance, 502 if DNS fails.
    async fn resolve(&self, topology: &Topology) -> Result<Wanted, ApplyError> {
        let fields = std::iter::once("master".to_string())
            .chain((0..topology.slaves.len()).map(|i| format!("slaves[{i}]")));
        let resolved = join_all(topology.members().map(|m| self.resolver.resolve_one(m))).await;
        let mut addrs = Vec::with_capacity(resolved.len());
        for (field, result) in fields.zip(resolved) {
            let addr = result.map_err(|e| {
                let status = match e {
                    ResolveError::Failed { .. } => StatusCode::BAD_GATEWAY,
                    ResolveError::NotFound(_) | ResolveError::Ambiguous { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApplyError::new(status, format!("{field}: {e}"))
            })?;
            if let Some(i) = addrs.iter().position(|a| *a == addr) {
                let first = if i == 0 { "master".to_string() } else { format!("slaves[{}]", i - 1) };
                return Err(ApplyError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("{field}: resolves to {addr}, the same instance as {first}"),
                ));
            }
            addrs.push(addr);
        }
        let master = addrs.remove(0);
        Ok(Wanted { master, slaves: addrs })
    }

    /// Observes every member in parallel, plus the new master's upstream when that
    /// is not a member (the planner must know whether it still takes writes).
    async fn observe(
        &self,
        wanted: &Wanted,
    ) -> (HashMap<SocketAddr, Observed>, HashMap<SocketAddr, MultiplexedConnection>) {
        let mut observed = HashMap::new();
        let mut conns = HashMap::new();
        let members: Vec<SocketAddr> = std::iter::once(wanted.master).chain(wanted.slaves.iter().copied()).collect();
        self.observe_into(&members, &mut observed, &mut conns).await;
        if let Some(Observed::Up(n)) = observed.get(&wanted.master)
            && let ReplicationRole::Slave { upstream: Some(u), .. } = n.role
                && !observed.contains_key(&u) {
                    self.observe_into(&[u], &mut observed, &mut conns).await;
                }
        (observed, conns)
    }

    async fn observe_into(
        &self,
        addrs: &[SocketAddr],
        observed: &mut HashMap<SocketAddr, Observed>,
        conns: &mut HashMap<SocketAddr, MultiplexedConnection>,
    ) {
        let timeouts = self.settings.timeouts;
        let credentials = &self.settings.credentials;
        let results = join_all(addrs.iter().map(|addr| async move {
            let result = async {
                let mut conn = connect(*addr, timeouts, credentials).await?;
                let replication = read_replication(&mut conn).await?;
                Ok::<_, ObserveError>((conn, replication))
            }
            .await;
            (*addr, result)
        }))
        .await;
        for (addr, result) in results {
            match result {
                Ok((conn, replication)) => {
                    observed.insert(addr, Observed::Up(replication));
                    conns.insert(addr, conn);
                }
                Err(error) => {
                    tracing::warn!(%addr, %error, "member unreachable");
                    observed.insert(addr, Observed::Unreachable { error: error.to_string() });
                }
            }
        }
    }
}

fn refused(refusal: Refusal) -> ApplyError {
    let status = match refusal {
        Refusal::MasterUnreachable { .. } => StatusCode::BAD_GATEWAY,
        Refusal::WouldLoseData { .. } => StatusCode::CONFLICT,
    };
    ApplyError::new(status, refusal.to_string())
}

fn member_states(wanted: &Wanted, observed: &HashMap<SocketAddr, Observed>) -> Vec<MemberState> {
    let furthest = |replid: &str| {
        observed
            .values()
            .filter_map(|o| match o {
                Observed::Up(r) if r.replid == replid => Some(r.offset),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    };
    std::iter::once(wanted.master)
        .chain(wanted.slaves.iter().copied())
        .filter_map(|addr| {
            let o = observed.get(&addr)?.clone();
            let lag_bytes = match &o {
                Observed::Up(r) => Some(furthest(&r.replid).saturating_sub(r.offset)),
                Observed::Unreachable { .. } => None,
            };
            Some(MemberState { address: addr, observed: o, lag_bytes })
        })
        .collect()
}

fn ms_since(started: Instant) -> f64 {
    round(started.elapsed().as_secs_f64() * 1000.0)
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
