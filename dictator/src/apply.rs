//! One apply, end to end: resolve the members, observe them, plan, execute, and
//! report. Applies to one cluster are serialized; different clusters run freely.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde::Serialize;
use service::redis_auth::Credentials;
use service::resolve::{MemberResolver, ResolveError};
use topology::Topology;

use crate::execute::{execute, round_ms, ExecSettings, Failure, Outcome};
use crate::observe::{observe, Members, Observed};
use service::redis_auth::Timeouts;
use crate::plan::{plan, Plan, Quarantined, Refusal, Step, Wanted};
use crate::published::Published;

/// Everything an apply is tuned by.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: Timeouts,
    /// Redis AUTH for every instance.
    pub credentials: Credentials,
    pub exec: ExecSettings,
    /// How long a second apply to the same cluster waits before [`ApplyError::Busy`].
    pub lock_wait: Duration,
}

/// Per request: `?force=true`, `?dry_run=true`, `?down=<ip:port>`.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct ApplyOptions {
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub dry_run: bool,
    /// A member the caller found down (the observer's failed master): observed
    /// with a connect timeout of [`crate::observe::DOWN_CONNECT_TIMEOUT`], so a
    /// machine that drops packets does not hold the failover for the whole
    /// `--redis-connect-timeout-ms`. One that answers is observed as usual.
    #[serde(default)]
    pub down: Option<SocketAddr>,
}

/// The answer to an apply (DESIGN.md): what was asked and found, and the
/// executor's [`Outcome`] (steps with timings, write pause, lagging slaves).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cluster: String,
    pub changed: bool,
    pub dry_run: bool,
    pub master: SocketAddr,
    pub slaves: Vec<SocketAddr>,
    /// In a dry run, the planned steps only.
    #[serde(flatten)]
    pub outcome: Outcome,
    pub unreachable: Vec<SocketAddr>,
    /// Data-loss reasons `force=true` overrode; empty unless forced.
    pub forced: Vec<String>,
    /// Members left out because they hold writes the master lacks, though clients
    /// had already moved to it: fenced, and waiting for an operator's decision.
    pub quarantined: Vec<Quarantined>,
    /// With `dry_run`: why a real apply would be refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    /// With `dry_run`: every member as observed, with its replication lag.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberState>,
    pub total_ms: f64,
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

/// Why an apply failed. Only [`ApplyError::Failed`] changed anything, and it
/// carries the report of what was done; api.rs turns each into a status code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApplyError {
    #[error("another apply to cluster {cluster} is still running after {waited:?}; try again")]
    Busy { cluster: String, waited: Duration },
    /// `field` names the member (`master`, `slaves[0]`, ...).
    #[error("{field}: {error}")]
    Resolve { field: String, error: ResolveError },
    #[error("{field}: resolves to {addr}, the same instance as {first}")]
    SameInstance { field: String, addr: SocketAddr, first: String },
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Applying would lose acknowledged writes ([`Refusal::WouldLoseData`]); the
    /// report lists the masters holding them, fenced by `quarantine` steps.
    #[error("{refusal}")]
    WouldLoseData { refusal: Refusal, report: Box<Report> },
    #[error("{failure}")]
    Failed { failure: Failure, report: Box<Report> },
}

impl ApplyError {
    /// What was done before the failure, if anything was.
    pub fn report(&self) -> Option<&Report> {
        match self {
            ApplyError::Failed { report, .. } | ApplyError::WouldLoseData { report, .. } => Some(report),
            _ => None,
        }
    }
}

/// This process's turn to apply to one cluster; the next waits until it is dropped.
pub struct Turn {
    _guard: tokio::sync::OwnedMutexGuard<()>,
    /// When the request began to wait: the report's `total_ms` counts from here.
    started: Instant,
}

/// The dictator: applies topologies, one at a time per cluster.
pub struct Dictator {
    resolver: MemberResolver,
    settings: Settings,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    published: Option<Published>,
}

impl Dictator {
    pub fn new(resolver: MemberResolver, settings: Settings) -> Dictator {
        Dictator { resolver, settings, locks: Mutex::new(HashMap::new()), published: None }
    }

    /// Lets an apply that would be refused ask where DNS sends clients (see
    /// [`crate::published`]); without it, every such apply is refused.
    pub fn with_published(self, published: Published) -> Dictator {
        Dictator { published: Some(published), ..self }
    }

    /// Applies `topology` to `cluster`.
    pub async fn apply(
        &self,
        cluster: &str,
        topology: &Topology,
        options: ApplyOptions,
    ) -> Result<Report, ApplyError> {
        let turn = self.wait_turn(cluster).await?;
        self.apply_in_turn(&turn, cluster, topology, options).await
    }

    /// Waits until no other apply to `cluster` runs in this process, at most
    /// `lock_wait`. Whatever must be decided before an apply and stay true until it
    /// ends (the revision check) is done while holding the turn.
    pub async fn wait_turn(&self, cluster: &str) -> Result<Turn, ApplyError> {
        let started = Instant::now();
        let lock = self.cluster_lock(cluster);
        let guard = tokio::time::timeout(self.settings.lock_wait, lock.lock_owned())
            .await
            .map_err(|_| ApplyError::Busy { cluster: cluster.to_string(), waited: self.settings.lock_wait })?;
        Ok(Turn { _guard: guard, started })
    }

    /// Applies `topology` to `cluster` during `turn` (from [`Dictator::wait_turn`]
    /// for the same cluster).
    pub async fn apply_in_turn(
        &self,
        turn: &Turn,
        cluster: &str,
        topology: &Topology,
        options: ApplyOptions,
    ) -> Result<Report, ApplyError> {
        let started = turn.started;
        let mut wanted = self.resolve(topology).await?;
        let members = observe(&wanted, self.settings.timeouts, &self.settings.credentials, options.down).await;
        let mut report = Report {
            cluster: cluster.to_string(),
            changed: false,
            dry_run: options.dry_run,
            master: wanted.master,
            slaves: wanted.slaves.clone(),
            outcome: Outcome::default(),
            unreachable: Vec::new(),
            forced: Vec::new(),
            quarantined: Vec::new(),
            refusal: None,
            members: Vec::new(),
            total_ms: 0.0,
        };

        if options.dry_run {
            report.members = member_states(&wanted, &members);
            let planned = match self.plan(cluster, &mut wanted, &members, options.force).await {
                Ok(p) => p,
                Err(refusal @ Refusal::WouldLoseData { .. }) => {
                    report.refusal = Some(refusal.to_string());
                    plan(&wanted, &members, true)?
                }
                Err(refusal) => return Err(refusal.into()),
            };
            report.changed = planned.changes_anything();
            report.unreachable = planned.unreachable;
            report.forced = if options.force { planned.overridden } else { Vec::new() };
            report.quarantined = planned.quarantined;
            report.outcome = Outcome::planned(planned.steps);
            report.total_ms = ms_since(started);
            return Ok(report);
        }

        let planned = match self.plan(cluster, &mut wanted, &members, options.force).await {
            Ok(planned) => planned,
            Err(Refusal::WouldLoseData { reasons, quarantine }) => {
                // The masters holding the writes at stake take no more: each would
                // only add to what an operator has to reconcile.
                let steps = quarantine.iter().map(|node| Step::Quarantine { node: *node }).collect();
                let outcome = execute(&Plan { steps, ..Plan::default() }, &members, &self.settings.exec).await;
                report.changed = quarantine
                    .iter()
                    .any(|q| members.get(q).and_then(Observed::replication).is_none_or(|r| r.fence_point().is_none()));
                report.outcome = outcome;
                report.total_ms = ms_since(started);
                tracing::error!(cluster, ?reasons, fenced = ?quarantine, "refused: applying would lose acknowledged writes");
                let refusal = Refusal::WouldLoseData { reasons, quarantine };
                return Err(ApplyError::WouldLoseData { refusal, report: Box::new(report) });
            }
            Err(refusal) => return Err(refusal.into()),
        };
        report.unreachable = planned.unreachable.clone();
        report.forced = planned.overridden.clone();
        report.quarantined = planned.quarantined.clone();
        if !planned.overridden.is_empty() {
            tracing::warn!(cluster, reasons = ?planned.overridden, "forced apply discards data");
        }
        for q in &planned.quarantined {
            tracing::error!(cluster, node = %q.node, reason = q.reason.as_str(), "quarantined: fenced and left out until an operator decides");
        }
        if !planned.changes_anything() {
            tracing::info!(cluster, master = %wanted.master, "topology already holds; nothing to do");
            report.total_ms = ms_since(started);
            return Ok(report);
        }
        tracing::info!(cluster, steps = ?planned.steps.iter().map(ToString::to_string).collect::<Vec<_>>(), "applying");

        let mut outcome = execute(&planned, &members, &self.settings.exec).await;
        let failure = outcome.failure.take();
        report.changed = !outcome.steps.is_empty();
        report.outcome = outcome;
        report.total_ms = ms_since(started);

        match failure {
            None if report.outcome.failed.is_empty() => {
                tracing::info!(cluster, master = %wanted.master, write_pause_ms = report.outcome.write_pause_ms, total_ms = report.total_ms, "applied");
                Ok(report)
            }
            None => {
                tracing::warn!(cluster, master = %wanted.master, failed = ?report.outcome.failed, "applied to the master; some members are still to fix");
                Ok(report)
            }
            Some(failure) => {
                tracing::error!(cluster, error = %failure, "apply failed");
                Err(ApplyError::Failed { failure, report: Box::new(report) })
            }
        }
    }

    /// Plans; when that is refused for writes other masters hold, asks where DNS
    /// sends clients and plans again knowing it (the planner then quarantines a
    /// master clients are not sent to, instead of refusing).
    async fn plan(&self, cluster: &str, wanted: &mut Wanted, members: &Members, force: bool) -> Result<Plan, Refusal> {
        let planned = plan(wanted, members, force);
        match (&planned, &self.published) {
            (Err(Refusal::WouldLoseData { quarantine, .. }), Some(published)) if !quarantine.is_empty() => {
                wanted.published = published.master(cluster).await;
                if wanted.published.is_none() {
                    return planned;
                }
                plan(wanted, members, force)
            }
            _ => planned,
        }
    }

    fn cluster_lock(&self, cluster: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(cluster.to_string()).or_default().clone()
    }

    /// Resolves every member to one address; two members that turn out to be one
    /// instance are an error too.
    async fn resolve(&self, topology: &Topology) -> Result<Wanted, ApplyError> {
        let fields = std::iter::once("master".to_string())
            .chain((0..topology.slaves.len()).map(|i| format!("slaves[{i}]")));
        let resolved = join_all(topology.members().map(|m| self.resolver.resolve_one(m))).await;
        let mut addrs = Vec::with_capacity(resolved.len());
        for (field, result) in fields.zip(resolved) {
            let addr = match result {
                Ok(addr) => addr,
                Err(error) => return Err(ApplyError::Resolve { field, error }),
            };
            if let Some(i) = addrs.iter().position(|a| *a == addr) {
                let first = if i == 0 { "master".to_string() } else { format!("slaves[{}]", i - 1) };
                return Err(ApplyError::SameInstance { field, addr, first });
            }
            addrs.push(addr);
        }
        let master = addrs.remove(0);
        Ok(Wanted { master, slaves: addrs, published: None, durability: topology.durability })
    }
}

fn member_states(wanted: &Wanted, members: &Members) -> Vec<MemberState> {
    let furthest = |replid: &str| {
        members
            .values()
            .filter_map(Observed::replication)
            .filter(|r| r.replid == replid)
            .map(|r| r.offset)
            .max()
            .unwrap_or(0)
    };
    wanted
        .members()
        .filter_map(|addr| {
            let observed = members.get(&addr)?.facts();
            let lag_bytes = observed.replication().map(|r| furthest(&r.replid).saturating_sub(r.offset));
            Some(MemberState { address: addr, observed, lag_bytes })
        })
        .collect()
}

fn ms_since(started: Instant) -> f64 {
    round_ms(started.elapsed().as_secs_f64() * 1000.0)
}
