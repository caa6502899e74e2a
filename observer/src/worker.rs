//! One reconciler per cluster. Each pass reads what etcd holds, applies the
//! topology when it differs from what was last applied or when a member's
//! registered role or upstream differs from it ([`compare_roles`]), records the
//! outcome at `/status/<cluster>`, looks at the master, and says when to look
//! again ([`Action`]). Level-triggered: a wake-up from the leader only says
//! "look now"; the pass always reads the newest topology and registrations
//! itself, so a burst of triggers becomes one apply and a stale topology is
//! never applied after a newer one. Failures that may heal back off by
//! [`error_policy`]; those that cannot ([`classify`]) wait for a change.
//!
//! While the master is down in etcd the pass gathers the facts (registrations,
//! what redis answers, through [`crate::inspect`]) and lets [`crate::failover`]
//! decide; a failover is a new topology written to etcd, applied by a later pass.
//! When the dictator refuses that apply for the promoted slave's sake, the pass
//! asks the slaves again and writes what [`failover::after_refusal`] decides: the
//! next candidate, or the topology before the failover.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use service::redis_auth::Credentials;
use tokio::sync::watch;
use topology::keys::Key;
use topology::records::{now_ms, push_history, HistoryEntry, NodeRecord, StatusRecord};
use topology::{Address, Keys, Member, Names, QueryName, Topology};

use crate::apply::{skipped_members, ApplyError, PutError, Stage, Targets};
use crate::failover::{
    self, AfterRefusal, Attempt, FailoverClock, FailoverDecision, HostLoad, MasterCheck, MasterSeen, NoPromotion, Policy, SlaveFacts,
    SlaveView,
};
use crate::inspect;
use crate::schedule::{
    classify, compare_roles, error_policy, check_apply, Action, DesiredRevision, MemberSeen, Retry, Roles, ApplyCheck, World,
};

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
    /// When each cluster's last round that applied (`ok` or `partial`)
    /// finished, ms since the epoch: `/metrics` shows its age.
    pub last_good_round: Mutex<HashMap<String, u64>>,
    /// Held by a worker from counting masters per host to writing its failover:
    /// groups that lost their masters together (a dead machine) fail over one at
    /// a time, each seeing where the previous one put its master.
    pub placing: tokio::sync::Mutex<()>,
    /// `None`: no automatic rebalance ([`crate::rebalance`]).
    pub rebalance_after: Option<std::time::Duration>,
}

impl Context {
    fn count_failover(&self, cluster: &str) {
        let mut counts = self.failovers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(cluster.to_string()).or_default() += 1;
        metrics::counter!("redis_topology_observer_failovers_total", "cluster" => cluster.to_string()).increment(1);
    }

    /// Counts a recorded round; one that applied resets its cluster's age.
    fn count_round(&self, cluster: &str, result: &str, finished_ms: u64) {
        metrics::counter!("redis_topology_observer_rounds_total", "cluster" => cluster.to_string(), "result" => result.to_string()).increment(1);
        if result == "ok" || result == Stage::Partial.as_str() {
            self.last_good_round.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(cluster.to_string(), finished_ms);
        }
    }

    /// Sets the scrape-time gauges: seconds since each cluster's last good round.
    pub fn refresh_metrics(&self, now_ms: u64) {
        let last = self.last_good_round.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (cluster, ms) in last.iter() {
            metrics::gauge!("redis_topology_observer_last_good_round_age_seconds", "cluster" => cluster.clone())
                .set(service::metrics::seconds_since(*ms, now_ms));
        }
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
    desired: DesiredRevision,
    topology: Vec<u8>,
    maintenance: bool,
    nodes: HashMap<String, NodeRecord>,
    /// etcd mod revision of each registration.
    node_revisions: HashMap<String, i64>,
    /// etcd revision of the read: anything newer was written after it started.
    revision: i64,
}

/// Runs the cluster's reconciler until aborted (the leader stops its workers
/// when it loses leadership) or until the leader drops `wake`.
pub async fn run(cx: Arc<Context>, cluster: String, mut wake: watch::Receiver<u64>) {
    let mut reconciler = Reconciler::new(cx, cluster);
    // The pass was due to the timer alone: etcd did not change meanwhile.
    let mut timer_only = false;
    loop {
        // A change, also one that came with the timer, asks for a full pass.
        if wake.has_changed().unwrap_or(true) {
            timer_only = false;
        }
        // Seen before the pass reads etcd: a change during the pass wakes the next one.
        wake.borrow_and_update();
        let pass = if timer_only { reconciler.probe_again().await } else { reconciler.reconcile().await };
        let action = match pass {
            Ok(action) => action,
            Err(error) => reconciler.failed(&error),
        };
        timer_only = false;
        let woken = match action {
            Action::AwaitChange => wake.changed().await,
            Action::Requeue(after) => tokio::select! {
                _ = tokio::time::sleep(after) => {
                    timer_only = true;
                    Ok(())
                }
                woken = wake.changed() => woken,
            },
        };
        if woken.is_err() {
            return;
        }
    }
}

/// Applies in flight at once, over all clusters. A thousand clusters applied at
/// once (a cold start, an observer restart) made the dictator open two thousand
/// redis connections at once and starved everything on the machine, the
/// observer's own lease keep-alive included; in turns of this many they finish
/// sooner.
const CONCURRENT_APPLIES: usize = 64;
static APPLIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_APPLIES);

/// One cluster's state between passes.
pub struct Reconciler {
    cx: Arc<Context>,
    cluster: String,
    /// What the dictator and dnsd both last accepted.
    applied: Option<DesiredRevision>,
    /// Consecutive failures (etcd reads and applies): the backoff, and `/status`.
    failures: u32,
    clock: FailoverClock,
    /// Where each node was last registered, to reach a master whose lease expired.
    known: HashMap<String, NodeRecord>,
    /// The last automatic failover's summary, recorded with the apply that
    /// carries it out.
    failover_note: Option<String>,
    /// The automatic failover written and not yet applied, to move on from if
    /// the dictator refuses its candidate.
    attempt: Option<Attempt>,
    /// etcd revision when the last successful apply was recorded: registrations
    /// at or before it may describe the state before that apply. `None`: not
    /// known yet, the next read's revision stands in.
    floor: Option<i64>,
    /// What etcd held when an apply failed with [`Retry::OnChange`].
    waiting: Option<World>,
    /// Consecutive successful applies made for a divergence: the next look backs off.
    diverged_applies: u32,
    /// The rounds `/status/<cluster>` remembers; `None` until read from the
    /// record the previous leader left.
    history: Option<Vec<HistoryEntry>>,
    /// When this worker's own probe of the master (at that address) last went
    /// unanswered: when the slaves then report they lost it too, within a probe
    /// interval, that probe is the observer's view and is not waited for again.
    unanswered: Option<(SocketAddr, std::time::Instant)>,
    /// Set when the last full pass found nothing to do but ask the master again
    /// later, and the master (at this address) answered: then a pass woken by
    /// the timer alone only asks it again ([`Reconciler::probe_again`]).
    resting: Option<SocketAddr>,
}

impl Reconciler {
    pub fn new(cx: Arc<Context>, cluster: String) -> Reconciler {
        Reconciler {
            cx,
            cluster,
            applied: None,
            failures: 0,
            clock: FailoverClock::default(),
            known: HashMap::new(),
            failover_note: None,
            attempt: None,
            floor: Some(0),
            waiting: None,
            diverged_applies: 0,
            history: None,
            unanswered: None,
            resting: None,
        }
    }

    /// One pass: apply what etcd holds if it is new, then look at the master.
    /// Idempotent: a second pass with nothing new applies nothing. Fails only
    /// when etcd cannot be read; a failed apply is recorded and requeued here.
    pub async fn reconcile(&mut self) -> Result<Action, ReadError> {
        self.resting = None;
        let snapshot = read(&self.cx, &self.cluster).await?;
        self.known.extend(snapshot.nodes.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut action = self.apply_if_due(&snapshot).await;
        let applied = action == Action::AwaitChange;
        if let Some(policy) = self.cx.failover {
            action = action.sooner(self.watch_master(&snapshot, &policy).await);
        }
        if !applied {
            self.resting = None;
        }
        Ok(action)
    }

    /// A pass woken by the master-probe timer alone, etcd unchanged since the
    /// last full pass (the leader's watch would have woken this worker): when that
    /// pass left nothing to do but ask the master again, and it answers again,
    /// that is the whole pass; the same as a full one would conclude, without
    /// reading etcd (a thousand groups would read it 2000 times a second). Any
    /// other answer makes it a full pass.
    pub async fn probe_again(&mut self) -> Result<Action, ReadError> {
        if let (Some(addr), Some(policy)) = (self.resting, self.cx.failover)
            && let Some(every) = policy.probe_every
            && inspect::master(addr, &self.cx.redis_auth).await == MasterCheck::Answers
        {
            return Ok(Action::Requeue(every));
        }
        self.reconcile().await
    }

    /// A pass that could not read etcd: count it and back off.
    pub fn failed(&mut self, error: &ReadError) -> Action {
        self.failures += 1;
        tracing::warn!(cluster = self.cluster.as_str(), %error, "cannot read the cluster from etcd");
        error_policy(self.failures, self.cx.retry_min, self.cx.retry_max)
    }

    /// Applies the desired topology unless it already holds, by etcd and by the
    /// members' registrations; records the outcome.
    async fn apply_if_due(&mut self, snapshot: &Snapshot) -> Action {
        // Owned: a refused failover moves on through `&mut self`.
        let cluster = &self.cluster.clone();
        let desired = &snapshot.desired;
        let world = World::new(desired, &snapshot.nodes);
        let floor = *self.floor.get_or_insert(snapshot.revision);
        let roles = self.roles(snapshot, floor);
        let diverged = match check_apply(self.applied.as_ref(), roles, &world, self.waiting.as_ref()) {
            ApplyCheck::UpToDate => {
                self.diverged_applies = 0;
                return Action::AwaitChange;
            }
            // The agents rewrite their registrations every interval.
            ApplyCheck::Unsettled => return Action::Requeue(self.cx.retry_min),
            ApplyCheck::WaitingForChange => {
                tracing::info!(cluster, topology_revision = desired.topology_revision, "not applying: the last apply failed in a way only a change can heal, and nothing changed");
                return Action::AwaitChange;
            }
            ApplyCheck::New => None,
            ApplyCheck::Diverged(divergences) => {
                let why = divergences.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                tracing::warn!(cluster, diverged = why.as_str(), "members diverged from the applied topology: applying it again");
                Some(why)
            }
        };
        let started_ms = now_ms();
        tracing::info!(cluster, topology_revision = desired.topology_revision, trigger = ?desired.trigger, diverged = ?diverged, "round: applying the topology");
        let failover = self.failover_note.clone();
        let reason = round_reason(self.applied.as_ref(), desired, failover.as_deref(), diverged.as_deref());
        let master = Topology::from_json(&snapshot.topology).ok().map(|t| t.master.to_string());
        let round = |error, failures, failover, diverged, retry, report: Option<serde_json::Value>| {
            let skipped = match error {
                None => report.as_ref().and_then(skipped_members),
                Some(_) => None,
            };
            StatusUpdate { desired, started_ms, error, failures, failover, diverged, retry, report, skipped, reason: reason.clone(), master: master.clone() }
        };
        // The master this worker's own failover found down, while applying it.
        let down = self.attempt.as_ref().filter(|a| a.revision == desired.topology_revision).and_then(|a| a.master_addr);
        let applied = {
            // Waiting here is waiting for other clusters' applies, not for this one's.
            let _turn = APPLIES.acquire().await;
            self.cx.targets.apply_and_publish(cluster, &snapshot.topology, desired.topology_revision, down).await
        };
        match applied {
            Ok(report) => {
                let outcome = round(None, 0, failover, diverged.clone(), None, Some(report));
                if let Some(skipped) = &outcome.skipped {
                    tracing::warn!(cluster, topology_revision = desired.topology_revision, skipped = skipped.as_str(), "round: partial");
                }
                self.floor = self.record(outcome, true).await;
                self.failover_note = None;
                self.attempt = None;
                tracing::info!(cluster, topology_revision = desired.topology_revision, "round: applied and published");
                self.applied = Some(desired.clone());
                self.failures = 0;
                self.waiting = None;
                if diverged.is_none() {
                    self.diverged_applies = 0;
                    return Action::AwaitChange;
                }
                // Look again whether it took, backing off if it keeps not taking.
                self.diverged_applies += 1;
                error_policy(self.diverged_applies, self.cx.retry_min, self.cx.retry_max)
            }
            Err(error) => {
                self.failures += 1;
                let failures = self.failures;
                let retry = match &error.cause {
                    PutError::Rejected { status, error, .. } => classify(Some(status.as_u16()), error),
                    // A partial apply: a member the new master could not reach yet;
                    // transient like any unreachable peer.
                    PutError::Resolve(_) | PutError::Send { .. } | PutError::Answer { .. } | PutError::Incomplete { .. } => {
                        classify(None, "")
                    }
                    // Needs an operator; a change (a restart, a forced apply) looks again.
                    PutError::Quarantined { .. } => Retry::OnChange,
                };
                if let Some(note) = self.after_refusal(snapshot, &error).await {
                    let outcome = round(Some(&error), failures, Some(note), diverged, None, error.report.clone());
                    self.record(outcome, true).await;
                    self.waiting = None;
                    // Writing the topology wakes this worker through the leader's watch.
                    return Action::AwaitChange;
                }
                let outcome = round(Some(&error), failures, failover, diverged, Some(retry), error.report.clone());
                self.record(outcome, true).await;
                match retry {
                    Retry::OnChange => {
                        tracing::warn!(cluster, %error, failures, "round failed; not retrying until the topology, a trigger or a registration changes");
                        self.waiting = Some(world);
                        Action::AwaitChange
                    }
                    Retry::Backoff => {
                        self.waiting = None;
                        let action = error_policy(failures, self.cx.retry_min, self.cx.retry_max);
                        let retry_in_ms = action.requeue_after().unwrap_or_default().as_millis() as u64;
                        tracing::warn!(cluster, %error, failures, retry_in_ms, "round failed");
                        action
                    }
                }
            }
        }
    }

    /// Each member's registration against the topology. Registrations not
    /// written after `floor` may predate the last apply.
    fn roles(&self, snapshot: &Snapshot, floor: i64) -> Roles {
        let Ok(topology) = Topology::from_json(&snapshot.topology) else { return Roles::Converged };
        let seen = |member: &Member, master: bool| {
            let node = self.node_of(member);
            MemberSeen {
                member: member.to_string(),
                master,
                record: node.as_ref().and_then(|n| snapshot.nodes.get(n)),
                fresh: node.and_then(|n| snapshot.node_revisions.get(&n).copied()).is_some_and(|r| r > floor),
            }
        };
        let members: Vec<MemberSeen<'_>> = std::iter::once(seen(&topology.master, true))
            .chain(topology.slaves.iter().map(|s| seen(s, false)))
            .collect();
        compare_roles(self.registered_address(&topology.master), &members)
    }

    /// Where slaves replicate from when the dictator made `member` their master:
    /// the IP it names, or its registered address. No DNS: a pass must stay cheap.
    fn registered_address(&self, member: &Member) -> Option<SocketAddr> {
        match &member.address {
            Address::Ip(ip) => Some(SocketAddr::new(*ip, member.port_or_default())),
            Address::Name(_) => {
                let record = self.node_of(member).and_then(|n| self.known.get(&n))?;
                Some(SocketAddr::new(record.address.parse().ok()?, member.port.unwrap_or(record.port)))
            }
        }
    }

    /// Gathers what etcd and redis say about the master, lets the failover rules
    /// decide, and fails over when they say so.
    async fn watch_master(&mut self, snapshot: &Snapshot, policy: &Policy) -> Action {
        let Ok(topology) = Topology::from_json(&snapshot.topology) else { return Action::AwaitChange };
        let cluster = self.cluster.as_str();
        let registration = self.node_of(&topology.master).and_then(|n| snapshot.nodes.get(&n));
        let registered = failover::serving(registration);
        // A master etcd says is healthy is asked every `probe_every`, if at all.
        let (check, master_addr) = if registered && policy.probe_every.is_none() {
            (None, None)
        } else {
            let addr = self.address_of(&topology.master).await;
            let lost = self.slaves_lost(snapshot, &topology);
            // The slaves' report woke this pass, and the observer's own probe went
            // unanswered within the last probe interval: that is its view already.
            let interval = policy.probe_every.unwrap_or_default();
            let recently_unanswered =
                self.unanswered.is_some_and(|(at, when)| Some(at) == addr && when.elapsed() <= interval);
            let check = match addr {
                Some(_) if registered && lost && recently_unanswered => MasterCheck::NoAnswer,
                Some(addr) => {
                    let check = inspect::master(addr, &self.cx.redis_auth).await;
                    self.unanswered = matches!(check, MasterCheck::NoAnswer | MasterCheck::Refused)
                        .then(|| (addr, std::time::Instant::now()));
                    check
                }
                None => MasterCheck::NoAnswer,
            };
            // No answer: do its replicas still hear from it?
            let check = match check {
                MasterCheck::NoAnswer | MasterCheck::Refused if lost => MasterCheck::Silent,
                check => check,
            };
            (Some(check), addr)
        };
        let seen = failover::master_seen(registered, check);
        if registered && matches!(check, Some(MasterCheck::NoAnswer)) {
            tracing::info!(cluster, master = %topology.master, "the master does not answer the observer, but its replicas still hear from it: no failover");
        }
        if let (MasterSeen::Down(MasterCheck::Silent), true) = (seen, registered) {
            tracing::warn!(cluster, master = %topology.master, "the master answers neither the observer nor its replicas, though etcd still lists it healthy");
        }
        let healthy = policy.probe_every.map_or(Action::AwaitChange, Action::Requeue);
        match self.clock.assess(seen, policy, snapshot.maintenance, now_ms()) {
            FailoverDecision::Healthy => {
                self.resting = master_addr.filter(|_| registered && check == Some(MasterCheck::Answers));
                healthy
            }
            FailoverDecision::WaitFor(wait) => Action::Requeue(wait),
            FailoverDecision::Held(reason) => {
                tracing::warn!(cluster, master = %topology.master, %reason, "master down; not failing over");
                Action::Requeue(policy.failover_after.max(Duration::from_secs(1)))
            }
            FailoverDecision::MasterAnswers => {
                if let Some(addr) = master_addr {
                    tracing::info!(cluster, %addr, "etcd says the master is down but it answers PING: no failover");
                }
                Action::Requeue(policy.failover_after)
            }
            FailoverDecision::FailOver => match self.fail_over(snapshot, &topology, master_addr).await {
                Ok(attempt) => {
                    self.clock.failed_over(now_ms());
                    let summary = attempt.promotion.to_string();
                    tracing::warn!(cluster = self.cluster.as_str(), %summary, "automatic failover");
                    self.failover_note = Some(summary);
                    self.attempt = Some(attempt);
                    // Writing the topology wakes this worker through the leader's watch.
                    Action::AwaitChange
                }
                Err(error) => {
                    tracing::warn!(cluster = self.cluster.as_str(), %error, "automatic failover did not happen");
                    Action::Requeue(policy.failover_after)
                }
            },
        }
    }

    /// Whether the topology's slaves, as their agents registered, cannot reach
    /// its master either ([`failover::replicas_lost_master`]).
    fn slaves_lost(&self, snapshot: &Snapshot, topology: &Topology) -> bool {
        let master = self.registered_address(&topology.master).map(|a| a.to_string());
        let views: Vec<SlaveView> = topology
            .slaves
            .iter()
            .filter_map(|slave| self.node_of(slave).and_then(|n| snapshot.nodes.get(&n)))
            .map(|record| SlaveView {
                healthy: record.healthy,
                follows_master: master.is_some() && record.upstream == master,
                upstream_down: record.upstream_down,
            })
            .collect();
        failover::replicas_lost_master(&views)
    }

    /// Asks the slaves where they stand, lets [`failover::plan`] choose, and
    /// writes the new topology if nobody changed it meanwhile.
    async fn fail_over(
        &mut self,
        snapshot: &Snapshot,
        topology: &Topology,
        master_addr: Option<SocketAddr>,
    ) -> Result<Attempt, FailoverError> {
        let slaves = self.slave_facts(snapshot, topology).await;
        let cx = self.cx.clone();
        let _placing = cx.placing.lock().await;
        let load = self.host_load().await;
        let promotion = failover::plan(topology, master_addr, &slaves, &load)?;
        let revision = self.write_topology(&promotion.topology, snapshot.desired.topology_revision).await?;
        let host = slaves.iter().find(|s| s.member == promotion.topology.master).and_then(|s| s.host.clone());
        tracing::info!(cluster = self.cluster.as_str(), promoted = %promotion.topology.master, host = ?host, masters_per_host = ?load, "failover: placement");
        self.cx.count_failover(&self.cluster);
        let outcome = StatusUpdate {
            desired: &snapshot.desired,
            started_ms: now_ms(),
            error: None,
            failures: 0,
            failover: Some(promotion.to_string()),
            diverged: None,
            retry: None,
            report: None,
            skipped: None,
            reason: format!("failover: topology revision {revision} written"),
            master: Some(promotion.topology.master.to_string()),
        };
        self.record(outcome, false).await;
        Ok(Attempt { previous: topology.clone(), master_addr, promotion, revision, load })
    }

    /// Topology masters per host across every group in etcd, by their
    /// registrations' hosts. Unreadable: none, and the failover goes by history
    /// and listed order alone, as it would without hosts.
    async fn host_load(&self) -> HostLoad {
        let mut store = service::clusters::Store { etcd: self.cx.etcd.clone(), keys: self.cx.keys.clone() };
        match store.placement().await {
            Ok(states) => topology::placement::masters_per_host(&topology::placement::groups(&states, &self.cx.names)),
            Err(error) => {
                tracing::warn!(cluster = self.cluster.as_str(), %error, "cannot count masters per host; failing over without placement");
                HostLoad::new()
            }
        }
    }

    /// When `error` is the dictator refusing the candidate of the failover this
    /// worker wrote (and nothing newer was written since), asks the previous
    /// topology's slaves again and writes what [`failover::after_refusal`]
    /// decides. Returns the note for `/status`, or `None` when this was no such
    /// refusal or the write did not happen (the apply's failure then stands).
    async fn after_refusal(&mut self, snapshot: &Snapshot, error: &ApplyError) -> Option<String> {
        let cluster = self.cluster.as_str();
        let PutError::Rejected { status, error: why, .. } = &error.cause else { return None };
        if error.stage != Stage::Dictator || !failover::refuses_candidate(status.as_u16(), why) {
            return None;
        }
        let revision = snapshot.desired.topology_revision;
        let attempt = self.attempt.take_if(|a| a.revision == revision)?;
        let slaves = self.slave_facts(snapshot, &attempt.previous).await;
        let (topology, note, next) = match failover::after_refusal(&attempt, &format!("{status}: {why}"), &slaves) {
            AfterRefusal::Next(promotion) => (promotion.topology.clone(), promotion.to_string(), Some(promotion)),
            AfterRefusal::Revert(reverted) => (reverted.topology.clone(), reverted.to_string(), None),
        };
        match self.write_topology(&topology, revision).await {
            Ok(written) => {
                tracing::warn!(cluster, refused = %attempt.promotion.topology.master, summary = note.as_str(), "automatic failover refused by the dictator");
                self.attempt = next.map(|promotion| Attempt { promotion, revision: written, ..attempt });
                self.failover_note = Some(note.clone());
                Some(note)
            }
            Err(e) => {
                tracing::warn!(cluster, error = %e, "automatic failover refused by the dictator; cannot write what follows");
                None
            }
        }
    }

    /// What each slave of `topology` answers, and whether it is registered serving.
    async fn slave_facts(&self, snapshot: &Snapshot, topology: &Topology) -> Vec<SlaveFacts> {
        let mut slaves = Vec::new();
        for slave in &topology.slaves {
            let replication = match self.address_of(slave).await {
                Some(addr) => inspect::slave(addr, &self.cx.redis_auth).await,
                None => None,
            };
            let node = self.node_of(slave);
            let registration = node.as_ref().and_then(|n| snapshot.nodes.get(n));
            let host = node.and_then(|n| self.known.get(&n)).and_then(|r| r.host.clone());
            slaves.push(SlaveFacts { member: slave.clone(), host, registered_healthy: failover::serving(registration), replication });
        }
        slaves
    }

    /// Writes `topology` only over the one at `revision`, which this pass read:
    /// an operator's or another observer's newer write wins. Returns the new
    /// revision.
    async fn write_topology(&self, topology: &Topology, revision: i64) -> Result<i64, FailoverError> {
        let key = self.cx.keys.topology(&self.cluster);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key.as_str(), topology.to_json(), None)]);
        let mut etcd = self.cx.etcd.clone();
        let response = etcd.txn(txn).await?;
        if !response.succeeded() {
            return Err(FailoverError::Raced);
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// The registered node a member names: `<node>.<cluster>.<domain>`, or an IP
    /// literal matching a registration's address and port.
    fn node_of(&self, member: &Member) -> Option<String> {
        match &member.address {
            Address::Name(name) => match self.cx.names.parse(name) {
                QueryName::Node { cluster, node } if cluster == self.cluster => Some(node),
                _ => None,
            },
            Address::Ip(ip) => self
                .known
                .iter()
                .find(|(_, r)| r.address == ip.to_string() && r.port == member.port_or_default())
                .map(|(n, _)| n.clone()),
        }
    }

    /// Where to reach a member's redis: its registration (current or last known), or DNS.
    async fn address_of(&self, member: &Member) -> Option<SocketAddr> {
        if let Some(record) = self.node_of(member).and_then(|n| self.known.get(&n))
            && let Ok(ip) = record.address.parse()
        {
            return Some(SocketAddr::new(ip, member.port.unwrap_or(record.port)));
        }
        self.cx.targets.resolver.resolve_one(member).await.ok()
    }
}

/// Reads the cluster's configuration and its registrations.
async fn read(cx: &Context, cluster: &str) -> Result<Snapshot, ReadError> {
    let mut etcd = cx.etcd.clone();
    let prefix = format!("{}{cluster}/", cx.keys.config_prefix());
    let config = etcd.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
    let mut snapshot = Snapshot {
        desired: DesiredRevision::default(),
        topology: Vec::new(),
        maintenance: false,
        nodes: HashMap::new(),
        node_revisions: HashMap::new(),
        revision: config.header().map_or(0, |h| h.revision()),
    };
    for kv in config.kvs() {
        match kv.key_str().ok().and_then(|k| cx.keys.parse(k)) {
            Some(Key::Topology { .. }) => {
                snapshot.desired.topology_revision = kv.mod_revision();
                snapshot.topology = kv.value().to_vec();
            }
            Some(Key::Trigger { .. }) => {
                snapshot.desired.trigger_revision = kv.mod_revision();
                snapshot.desired.trigger = kv.value_str().ok().map(str::to_string);
            }
            Some(Key::Maintenance { .. }) => snapshot.maintenance = true,
            _ => {}
        }
    }
    let nodes = etcd.get(cx.keys.cluster_nodes_prefix(cluster), Some(GetOptions::new().with_prefix())).await?;
    for kv in nodes.kvs() {
        let Some(Key::Node { node, .. }) = kv.key_str().ok().and_then(|k| cx.keys.parse(k)) else { continue };
        match serde_json::from_slice::<NodeRecord>(kv.value()) {
            Ok(record) => {
                snapshot.node_revisions.insert(node.clone(), kv.mod_revision());
                snapshot.nodes.insert(node, record);
            }
            // Written by someone else: the node counts as unregistered.
            Err(error) => tracing::warn!(cluster, %node, %error, "ignoring a registration that is not a node record"),
        }
    }
    Ok(snapshot)
}

/// One `/status/<cluster>` record: what was applied, and how it went.
struct StatusUpdate<'a> {
    desired: &'a DesiredRevision,
    started_ms: u64,
    /// `None`: applied and published.
    error: Option<&'a ApplyError>,
    /// Consecutive failures, this one included (0 after a success).
    failures: u32,
    /// The automatic failover this topology carries out, if any.
    failover: Option<String>,
    /// Why an applied topology was applied again.
    diverged: Option<String>,
    /// After a failure, how it is tried again.
    retry: Option<Retry>,
    /// The dictator's report, when it answered one.
    report: Option<serde_json::Value>,
    /// After a success, the members it skipped or left lagging: a partial round.
    skipped: Option<String>,
    /// Why the round ran ([`round_reason`]).
    reason: String,
    /// The master of the topology applied.
    master: Option<String>,
}

impl StatusUpdate<'_> {
    /// The record, with this round alone in its `history`.
    fn status(self, observer: &str, finished_ms: u64) -> StatusRecord {
        let result = match (self.error, &self.skipped) {
            (Some(error), _) => error.stage.as_str(),
            (None, Some(_)) => Stage::Partial.as_str(),
            (None, None) => "ok",
        };
        let error = self.error.map(|e| e.cause.to_string()).or(self.skipped);
        let entry = HistoryEntry {
            at_ms: finished_ms,
            topology_revision: self.desired.topology_revision,
            master: self.master,
            result: result.to_string(),
            reason: self.reason,
            error: error.clone(),
            rounds: 1,
        };
        StatusRecord {
            trigger: self.desired.trigger.clone(),
            topology_revision: self.desired.topology_revision,
            result: result.to_string(),
            error,
            observer: observer.to_string(),
            failures: self.failures,
            started_ms: self.started_ms,
            finished_ms,
            failover: self.failover,
            diverged: self.diverged,
            retry: self.retry.map(|r| r.as_str().to_string()),
            report: self.report,
            history: vec![entry],
        }
    }
}

/// Why a round ran, for the history.
fn round_reason(applied: Option<&DesiredRevision>, desired: &DesiredRevision, failover: Option<&str>, diverged: Option<&str>) -> String {
    if let Some(failover) = failover {
        return format!("failover: {failover}");
    }
    if let Some(diverged) = diverged {
        return format!("diverged: {diverged}");
    }
    match applied {
        Some(applied) if applied.topology_revision == desired.topology_revision => {
            format!("trigger {}", desired.trigger.as_deref().unwrap_or("-"))
        }
        _ => format!("topology revision {}", desired.topology_revision),
    }
}

impl Reconciler {
    /// Writes `/status/<cluster>`, with the round added to the history, and
    /// returns the etcd revision it was written at; a failure is only logged
    /// (the next record wins).
    /// `counted`: a round that applied, for the metrics (not a failover's decision).
    async fn record(&mut self, outcome: StatusUpdate<'_>, counted: bool) -> Option<i64> {
        let cluster = self.cluster.as_str();
        let mut etcd = self.cx.etcd.clone();
        if self.history.is_none() {
            // The previous leader's history, read once; unreadable, it starts afresh.
            let previous = etcd.get(self.cx.keys.status(cluster), None).await.ok().and_then(|got| {
                got.kvs().first().and_then(|kv| serde_json::from_slice::<StatusRecord>(kv.value()).ok())
            });
            self.history = Some(previous.map(|p| p.history).unwrap_or_default());
        }
        let history = self.history.get_or_insert_default();
        let mut status = outcome.status(&self.cx.observer_id, now_ms());
        if counted {
            self.cx.count_round(cluster, &status.result, status.finished_ms);
        }
        push_history(history, status.history.remove(0));
        status.history = history.clone();
        let value = serde_json::to_string(&status).unwrap_or_default();
        match etcd.put(self.cx.keys.status(cluster), value, None).await {
            Ok(put) => put.header().map(|h| h.revision()),
            Err(e) => {
                tracing::warn!(cluster, error = %e, "cannot record the round's status");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::{PutError, Stage};
    use serde_json::json;

    fn update<'a>(desired: &'a DesiredRevision, error: Option<&'a ApplyError>) -> StatusUpdate<'a> {
        StatusUpdate {
            desired,
            started_ms: 1,
            error,
            failures: 0,
            failover: None,
            diverged: None,
            retry: None,
            report: None,
            skipped: None,
            reason: "topology revision 7".into(),
            master: Some("node-1.c.cluster.local".into()),
        }
    }

    #[test]
    fn a_status_says_what_was_applied_and_how_it_went() {
        let desired = DesiredRevision { topology_revision: 7, trigger_revision: 9, trigger: Some("t".into()) };
        let report = json!({"changed": true, "unreachable": [], "steps": [{"action": "promote"}]});
        let ok = StatusUpdate {
            failover: Some("f".into()),
            diverged: Some("d".into()),
            report: Some(report.clone()),
            ..update(&desired, None)
        };
        let entry = HistoryEntry {
            at_ms: 2,
            topology_revision: 7,
            master: Some("node-1.c.cluster.local".into()),
            result: "ok".into(),
            reason: "topology revision 7".into(),
            error: None,
            rounds: 1,
        };
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
                diverged: Some("d".into()),
                retry: None,
                report: Some(report),
                history: vec![entry],
            }
        );
        let cause = PutError::Rejected {
            url: "http://d/clusters/c/master".into(),
            status: reqwest::StatusCode::BAD_GATEWAY,
            error: "unreachable".into(),
            report: None,
        };
        let error = ApplyError { stage: Stage::Dictator, cause, report: Some(json!({"steps": []})) };
        let failed = StatusUpdate { failures: 3, retry: Some(Retry::OnChange), report: error.report.clone(), ..update(&desired, Some(&error)) };
        let status = failed.status("o1", 2);
        assert_eq!(status.retry.as_deref(), Some("on_change"));
        assert_eq!(status.result, "dictator", "the stage that failed");
        assert_eq!(
            status.error.as_deref(),
            Some("PUT http://d/clusters/c/master: 502 Bad Gateway: unreachable"),
            "the cause, without the stage"
        );
        assert_eq!(status.failures, 3);
        assert_eq!(status.report, Some(json!({"steps": []})), "the refusal's report is kept");
        assert_eq!(status.history[0].result, "dictator");
    }

    #[test]
    fn a_success_that_skipped_members_is_partial_and_says_which() {
        let desired = DesiredRevision { topology_revision: 7, trigger_revision: 0, trigger: None };
        let report = json!({"changed": true, "unreachable": ["127.0.0.1:7000"], "lagging": []});
        let skipped = skipped_members(&report);
        let status = StatusUpdate { skipped, report: Some(report), ..update(&desired, None) }.status("o1", 2);
        assert_eq!(status.result, "partial");
        assert_eq!(status.retry, None, "not retried: the member rejoins on its trigger");
        assert_eq!(status.error.as_deref(), Some("applied and published; not in place: unreachable: 127.0.0.1:7000"));
        assert_eq!(status.history[0].result, "partial");
    }

    #[test]
    fn the_reason_of_a_round_says_what_started_it() {
        let desired = DesiredRevision { topology_revision: 7, trigger_revision: 9, trigger: Some("u1".into()) };
        let applied = DesiredRevision { topology_revision: 7, trigger_revision: 5, trigger: Some("u0".into()) };
        let older = DesiredRevision { topology_revision: 6, ..applied.clone() };
        assert_eq!(round_reason(None, &desired, None, None), "topology revision 7");
        assert_eq!(round_reason(Some(&older), &desired, None, None), "topology revision 7");
        assert_eq!(round_reason(Some(&applied), &desired, None, None), "trigger u1");
        assert_eq!(round_reason(Some(&applied), &desired, None, Some("node-2 is master")), "diverged: node-2 is master");
        assert_eq!(round_reason(Some(&applied), &desired, Some("master x promoting y"), Some("d")), "failover: master x promoting y");
    }
}
