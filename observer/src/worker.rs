//! One task per cluster: reads what etcd holds, runs a round when it differs from
//! what was last applied, records the outcome at `/status/<cluster>`, and backs
//! off after failures. Notifications only say "look again": the worker always
//! reads the newest topology itself, so a burst of triggers becomes one round and
//! a stale topology is never applied after a newer one.
//!
//! The worker also watches its master's registration and fails over
//! automatically when it stays down (see [`crate::failover`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use tokio::sync::watch;
use service::redis_auth::Credentials;
use topology::keys::Key;
use topology::records::{now_ms, NodeRecord, StatusRecord};
use topology::{Address, Keys, Member, Names, QueryName, Topology};

use crate::failover::{self, FailoverClock, FailoverDecision, MasterCheck, MasterSeen, NoPromotion, Policy, SlaveFacts};
use crate::inspect;
use crate::apply::{ApplyError, Targets};
use crate::schedule::{apply_due, DesiredRevision};
use service::backoff::delay_after;

/// Shared by every worker.
pub struct Context {
    pub etcd: Client,
    pub keys: Keys,
    pub names: Names,
    pub targets: Targets,
    pub observer_id: String,
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `None`: automatic failover is off.
    pub failover: Option<Policy>,
    /// Automatic failovers per cluster since this observer started.
    pub failovers: Mutex<HashMap<String, u64>>,
    /// Redis AUTH, to ask a master and its slaves directly before failing over.
    pub redis_auth: Credentials,
}

impl Context {
    fn count_failover(&self, cluster: &str) {
        let mut counts = self.failovers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(cluster.to_string()).or_default() += 1;
    }

    /// Failovers per cluster, for `/status`.
    pub fn failover_counts(&self) -> HashMap<String, u64> {
        self.failovers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// etcd did not answer the worker's read.
#[derive(Debug, thiserror::Error)]
#[error("read: etcd: {0}")]
pub struct ReadError(#[from] etcd_client::Error);

/// Why an automatic failover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error(transparent)]
    NoPromotion(#[from] NoPromotion),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the topology changed meanwhile (another observer or an operator); not failing over")]
    Raced,
}

/// What one read of etcd found for a cluster.
struct Snapshot {
    target: DesiredRevision,
    topology: Vec<u8>,
    maintenance: bool,
    nodes: HashMap<String, NodeRecord>,
}

/// Runs until aborted (the leader stops its workers when it loses leadership).
pub async fn run(cx: Arc<Context>, cluster: String, mut notified: watch::Receiver<u64>) {
    let mut last_applied: Option<DesiredRevision> = None;
    let mut failures: u32 = 0;
    let mut clock = FailoverClock::default();
    // Where each node was last registered, to reach a master whose lease expired.
    let mut known: HashMap<String, NodeRecord> = HashMap::new();
    // The last automatic failover's summary, recorded with the round that applies it.
    let mut failover_note: Option<String> = None;
    loop {
        notified.borrow_and_update();
        let mut wait = None; // None: until notified
        match read(&cx, &cluster).await {
            Err(error) => {
                failures += 1;
                tracing::warn!(cluster, %error, "cannot read the cluster from etcd");
                wait = Some(delay_after(failures, cx.retry_min, cx.retry_max));
            }
            Ok(snapshot) => {
                known.extend(snapshot.nodes.iter().map(|(k, v)| (k.clone(), v.clone())));
                if apply_due(&snapshot.target, last_applied.as_ref()) {
                    let target = snapshot.target.clone();
                    let started_ms = now_ms();
                    tracing::info!(cluster, topology_revision = target.topology_revision, trigger = ?target.trigger, "round: applying the topology");
                    match cx.targets.apply_and_publish(&cluster, &snapshot.topology).await {
                        Ok(_) => {
                            record(&cx, &cluster, Outcome { desired: &target, started_ms, error: None, failures: 0, failover: failover_note.take() }).await;
                            tracing::info!(cluster, topology_revision = target.topology_revision, "round: applied and published");
                            last_applied = Some(target);
                            failures = 0;
                        }
                        Err(error) => {
                            failures += 1;
                            let outcome = Outcome { desired: &target, started_ms, error: Some(&error), failures, failover: failover_note.clone() };
                            record(&cx, &cluster, outcome).await;
                            let retry = delay_after(failures, cx.retry_min, cx.retry_max);
                            tracing::warn!(cluster, %error, failures, retry_in_ms = retry.as_millis() as u64, "round failed");
                            wait = Some(retry);
                        }
                    }
                }
                if let Some(policy) = cx.failover {
                    let (look_again, summary) = watch_master(&cx, &cluster, &snapshot, &known, &policy, &mut clock).await;
                    failover_note = summary.or(failover_note);
                    wait = match (wait, look_again) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
            }
        }
        // A newer trigger, topology or registration looks again at once.
        let changed = match wait {
            Some(wait) => tokio::select! {
                _ = tokio::time::sleep(wait) => Ok(()),
                changed = notified.changed() => changed,
            },
            None => notified.changed().await,
        };
        if changed.is_err() {
            return;
        }
    }
}

/// Reads the cluster's configuration and registrations.
async fn read(cx: &Context, cluster: &str) -> Result<Snapshot, ReadError> {
    let mut etcd = cx.etcd.clone();
    let prefix = format!("{}{cluster}/", cx.keys.config_prefix());
    let config = etcd
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let mut snapshot =
        Snapshot { target: DesiredRevision::default(), topology: Vec::new(), maintenance: false, nodes: HashMap::new() };
    for kv in config.kvs() {
        match kv.key_str().ok().and_then(|k| cx.keys.parse(k)) {
            Some(Key::Topology { .. }) => {
                snapshot.target.topology_revision = kv.mod_revision();
                snapshot.topology = kv.value().to_vec();
            }
            Some(Key::Trigger { .. }) => {
                snapshot.target.trigger_revision = kv.mod_revision();
                snapshot.target.trigger = kv.value_str().ok().map(str::to_string);
            }
            Some(Key::Maintenance { .. }) => snapshot.maintenance = true,
            _ => {}
        }
    }
    if cx.failover.is_some() {
        let nodes = etcd
            .get(cx.keys.cluster_nodes_prefix(cluster), Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in nodes.kvs() {
            if let (Some(Key::Node { node, .. }), Ok(record)) =
                (kv.key_str().ok().and_then(|k| cx.keys.parse(k)), serde_json::from_slice::<NodeRecord>(kv.value()))
            {
                snapshot.nodes.insert(node, record);
            }
        }
    }
    Ok(snapshot)
}

/// Watches the master's registration and fails over when it stays down. Returns
/// when to look again (while the master is down), and a failover's summary.
async fn watch_master(
    cx: &Context,
    cluster: &str,
    snapshot: &Snapshot,
    known: &HashMap<String, NodeRecord>,
    policy: &Policy,
    clock: &mut FailoverClock,
) -> (Option<Duration>, Option<String>) {
    let Ok(topology) = Topology::from_json(&snapshot.topology) else { return (None, None) };
    let master_node = node_of(cx, cluster, &topology.master, known);
    // Redis is asked only when etcd says down: a healthy master costs no I/O.
    let (seen, master_addr) = if failover::serving(master_node.as_ref().and_then(|n| snapshot.nodes.get(n))) {
        (MasterSeen::Healthy, None)
    } else {
        let addr = address_of(cx, cluster, &topology.master, known).await;
        let check = match addr {
            Some(addr) => inspect::master(addr, &cx.redis_auth).await,
            None => MasterCheck::NoAnswer,
        };
        (MasterSeen::Down(check), addr)
    };
    match clock.assess(seen, policy, snapshot.maintenance, now_ms()) {
        FailoverDecision::Healthy => (None, None),
        FailoverDecision::WaitFor(wait) => (Some(wait), None),
        FailoverDecision::Held(reason) => {
            tracing::warn!(cluster, master = %topology.master, %reason, "master down; not failing over");
            (Some(policy.failover_after.max(Duration::from_secs(1))), None)
        }
        FailoverDecision::MasterAnswers => {
            if let Some(addr) = master_addr {
                tracing::info!(cluster, %addr, "etcd says the master is down but it answers PING: no failover");
            }
            (Some(policy.failover_after), None)
        }
        FailoverDecision::FailOver => match fail_over(cx, cluster, snapshot, known, &topology, master_addr).await {
            Ok(summary) => {
                clock.failed_over(now_ms());
                tracing::warn!(cluster, %summary, "automatic failover");
                (None, Some(summary))
            }
            Err(error) => {
                tracing::warn!(cluster, %error, "automatic failover did not happen");
                (Some(policy.failover_after), None)
            }
        },
    }
}

/// Asks the slaves where they stand, chooses one to promote, and writes the new
/// topology if nobody changed it meanwhile.
async fn fail_over(
    cx: &Context,
    cluster: &str,
    snapshot: &Snapshot,
    known: &HashMap<String, NodeRecord>,
    topology: &Topology,
    master_addr: Option<SocketAddr>,
) -> Result<String, FailoverError> {
    let mut slaves = Vec::new();
    for slave in &topology.slaves {
        let replication = match address_of(cx, cluster, slave, known).await {
            Some(addr) => inspect::slave(addr, &cx.redis_auth).await,
            None => None,
        };
        let registration = node_of(cx, cluster, slave, known).and_then(|n| snapshot.nodes.get(&n));
        slaves.push(SlaveFacts { member: slave.clone(), registered_healthy: failover::serving(registration), replication });
    }
    let promotion = failover::plan(topology, master_addr, &slaves)?;
    let summary = promotion.to_string();
    let key = cx.keys.topology(cluster);
    let txn = Txn::new()
        .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, snapshot.target.topology_revision)])
        .and_then([TxnOp::put(key.as_str(), promotion.topology.to_json(), None)]);
    let mut etcd = cx.etcd.clone();
    let response = etcd.txn(txn).await?;
    if !response.succeeded() {
        return Err(FailoverError::Raced);
    }
    cx.count_failover(cluster);
    let outcome = Outcome { desired: &snapshot.target, started_ms: now_ms(), error: None, failures: 0, failover: Some(summary.clone()) };
    record(cx, cluster, outcome).await;
    Ok(summary)
}

/// The registered node a member names: `<node>.<cluster>.<domain>`, or an IP
/// literal matching a registration's address and port.
fn node_of(cx: &Context, cluster: &str, member: &Member, known: &HashMap<String, NodeRecord>) -> Option<String> {
    match &member.address {
        Address::Name(name) => match cx.names.parse(name) {
            QueryName::Node { cluster: c, node } if c == cluster => Some(node),
            _ => None,
        },
        Address::Ip(ip) => known
            .iter()
            .find(|(_, r)| r.address == ip.to_string() && r.port == member.port_or_default())
            .map(|(n, _)| n.clone()),
    }
}

/// Where to reach a member's redis: its registration (current or last known), or DNS.
async fn address_of(cx: &Context, cluster: &str, member: &Member, known: &HashMap<String, NodeRecord>) -> Option<SocketAddr> {
    if let Some(record) = node_of(cx, cluster, member, known).and_then(|n| known.get(&n))
        && let Ok(ip) = record.address.parse() {
            return Some(SocketAddr::new(ip, member.port.unwrap_or(record.port)));
        }
    cx.targets.resolver.resolve_one(member).await.ok()
}

/// One `/status/<cluster>` record: what was applied, and how it went.
struct Outcome<'a> {
    desired: &'a DesiredRevision,
    started_ms: u64,
    /// `None`: applied and published.
    error: Option<&'a ApplyError>,
    /// Consecutive failures, this one included (0 after a success).
    failures: u32,
    /// The automatic failover this topology carries out, if any.
    failover: Option<String>,
}

impl Outcome<'_> {
    fn status(self, observer: &str, finished_ms: u64) -> StatusRecord {
        StatusRecord {
            trigger: self.desired.trigger.clone(),
            topology_revision: self.desired.topology_revision,
            result: self.error.map_or("ok", |e| e.stage.as_str()).to_string(),
            error: self.error.map(|e| e.cause.to_string()),
            observer: observer.to_string(),
            failures: self.failures,
            started_ms: self.started_ms,
            finished_ms,
            failover: self.failover,
        }
    }
}

/// Writes `/status/<cluster>`; a failure is only logged (the next record wins).
async fn record(cx: &Context, cluster: &str, outcome: Outcome<'_>) {
    let status = outcome.status(&cx.observer_id, now_ms());
    let value = serde_json::to_string(&status).unwrap_or_default();
    let mut etcd = cx.etcd.clone();
    if let Err(e) = etcd.put(cx.keys.status(cluster), value, None).await {
        tracing::warn!(cluster, error = %e, "cannot record the round's status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{PutError, Stage};

    #[test]
    fn a_status_says_what_was_applied_and_how_it_went() {
        let desired = DesiredRevision { topology_revision: 7, trigger_revision: 9, trigger: Some("t".into()) };
        let ok = Outcome { desired: &desired, started_ms: 1, error: None, failures: 0, failover: Some("f".into()) };
        assert_eq!(
            ok.status("o1", 2),
            StatusRecord {
                trigger: Some("t".into()),
                topology_revision: 7,
                result: "ok".into(),
                error: None,
                observer: "o1".into(),
                failures: 0,
                started_ms: 1,
                finished_ms: 2,
                failover: Some("f".into()),
            }
        );
        let cause = PutError::Rejected {
            url: "http://d/clusters/c/master".into(),
            status: reqwest::StatusCode::BAD_GATEWAY,
            error: "unreachable".into(),
        };
        let error = ApplyError { stage: Stage::Dictator, cause };
        let failed = Outcome { desired: &desired, started_ms: 1, error: Some(&error), failures: 3, failover: None };
        let status = failed.status("o1", 2);
        assert_eq!(status.result, "dictator", "the stage that failed");
        assert_eq!(
            status.error.as_deref(),
            Some("PUT http://d/clusters/c/master: 502 Bad Gateway: unreachable"),
            "the cause, without the stage"
        );
        assert_eq!(status.failures, 3);
    }
}
