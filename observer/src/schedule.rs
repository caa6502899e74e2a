//! Pure decisions of a cluster's worker: whether applying the topology is due
//! (something new in etcd, or a member whose registered role or upstream differs
//! from the topology), how a failed apply is retried, and when to look again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use service::backoff::delay_after;
use topology::records::{Facts, NodeRecord, Role};

/// What the operator asked for, by etcd revision: the topology and trigger as
/// last seen. A new trigger value or topology revision makes applying due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredRevision {
    /// etcd mod revision of `/config/<cluster>/topology` (0: not defined).
    pub topology_revision: i64,
    /// etcd mod revision of the trigger (0: none), and its value.
    pub trigger_revision: i64,
    pub trigger: Option<String>,
}

impl DesiredRevision {
    pub fn has_topology(&self) -> bool {
        self.topology_revision > 0
    }
}

/// Applying is due when what etcd holds differs from what was last applied.
/// Level-triggered: a missed event, a restart or a new leader still converges.
pub fn apply_due(desired: &DesiredRevision, applied: Option<&DesiredRevision>) -> bool {
    desired.has_topology() && applied != Some(desired)
}

/// What the topology wants of one member, and what its node-agent registered.
#[derive(Debug, Clone)]
pub struct MemberSeen<'a> {
    /// As the topology names it, for the reason.
    pub member: String,
    /// The topology makes it the master.
    pub master: bool,
    /// Its current registration; `None`: not registered.
    pub record: Option<&'a NodeRecord>,
    /// The registration was written after the last successful apply ended (by
    /// etcd revision), so it cannot describe the state before that apply.
    pub fresh: bool,
}

/// How one member's registered role differs from the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Divergence {
    /// The topology's master registers as a slave.
    MasterIsSlave { member: String, upstream: Option<String> },
    /// A slave of the topology registers as a master: it takes writes outside it.
    SlaveIsMaster { member: String },
    /// A slave follows someone other than the topology's master.
    WrongUpstream { member: String, upstream: String, master: SocketAddr },
    /// The topology's master is fenced (its agent lost etcd, or an apply stopped
    /// half-way): it takes no writes until an apply lifts the fence.
    MasterFenced { member: String },
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Divergence::MasterIsSlave { member, upstream } => {
                write!(f, "{member} is the topology's master but registers as a slave")?;
                upstream.as_ref().map_or(Ok(()), |u| write!(f, " of {u}"))
            }
            Divergence::SlaveIsMaster { member } => {
                write!(f, "{member} is a slave in the topology but registers as a master")
            }
            Divergence::WrongUpstream { member, upstream, master } => {
                write!(f, "{member} replicates from {upstream}, not from the master {master}")
            }
            Divergence::MasterFenced { member } => write!(f, "{member} is the topology's master but is fenced"),
        }
    }
}

/// The members' registered roles against the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roles {
    /// Every member that registers a role has the one the topology gives it.
    Converged,
    /// Registrations written since the last apply differ from the topology.
    Diverged(Vec<Divergence>),
    /// Only registrations written before the last apply ended differ: they may
    /// predate it, so look again once the agents have written again.
    Unsettled,
}

/// Compares each member's registered role and upstream with the topology.
/// `master_addr` is where slaves must replicate from (`None`: unknown, so
/// upstreams are not judged). Unregistered and unhealthy members are not
/// judged: their role is unknown, and failover and the agents' triggers deal
/// with them. An upstream that is not an IP address is not judged either.
pub fn compare_roles(master_addr: Option<SocketAddr>, members: &[MemberSeen<'_>]) -> Roles {
    let (mut fresh, mut stale) = (Vec::new(), false);
    for seen in members {
        let Some(record) = seen.record.filter(|r| r.healthy) else { continue };
        let member = seen.member.clone();
        let divergence = match (seen.master, record.role) {
            (true, Role::Slave) => Some(Divergence::MasterIsSlave { member, upstream: record.upstream.clone() }),
            (false, Role::Master) => Some(Divergence::SlaveIsMaster { member }),
            (false, Role::Slave) => record
                .upstream
                .as_ref()
                .and_then(|u| Some((u, u.parse::<SocketAddr>().ok()?, master_addr?)))
                .filter(|(_, upstream, master)| upstream != master)
                .map(|(u, _, master)| Divergence::WrongUpstream { member, upstream: u.clone(), master }),
            (true, Role::Master) if record.fenced => Some(Divergence::MasterFenced { member }),
            (true, Role::Master) | (_, Role::Unknown) => None,
        };
        match divergence {
            Some(d) if seen.fresh => fresh.push(d),
            Some(_) => stale = true,
            None => {}
        }
    }
    match (fresh.is_empty(), stale) {
        (false, _) => Roles::Diverged(fresh),
        (true, true) => Roles::Unsettled,
        (true, false) => Roles::Converged,
    }
}

/// How a failed apply is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// It may heal by itself (an unreachable service or redis, a busy lock):
    /// back off and try again.
    Backoff,
    /// Trying the same again fails the same way, and some (a catch-up timeout)
    /// fence the master each time: wait for a new topology, a trigger, or a
    /// change in a member's registration.
    OnChange,
}

impl Retry {
    /// As `/status/<cluster>` records it.
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::Backoff => "backoff",
            Retry::OnChange => "on_change",
        }
    }
}

/// Classifies a failed PUT by the HTTP status it answered (`None`: no answer,
/// such as a refused connection or a timeout) and its error text.
pub fn classify(status: Option<u16>, error: &str) -> Retry {
    match status {
        None => Retry::Backoff,
        // The dictator's lock is held by another apply: that one will end.
        Some(409) if error.contains("still running") => Retry::Backoff,
        // A node name dnsd does not serve yet: the registration that woke this
        // apply may reach dnsd's zone a moment after it reached the observer.
        Some(422) if error.contains("does not resolve") => Retry::Backoff,
        // 504: the new master could not catch up within the timeout; each try
        // fences the master for that long. 409: it would lose writes. 4xx: the
        // request itself is refused (422: invalid, or a member not registered).
        Some(504) | Some(400..=499) => Retry::OnChange,
        Some(_) => Retry::Backoff,
    }
}

/// What a change, for a failure that waits for one, is measured against: the
/// topology and trigger, and the [`Facts`] of every registration of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub desired: DesiredRevision,
    registrations: BTreeMap<String, Facts>,
}

impl World {
    pub fn new(desired: &DesiredRevision, nodes: &HashMap<String, NodeRecord>) -> World {
        let registrations = nodes
            .iter()
            .map(|(n, r)| (n.clone(), r.facts()))
            .collect();
        World { desired: desired.clone(), registrations }
    }
}

/// Why a pass applies, or why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyCheck {
    /// A topology or trigger not applied yet.
    New,
    /// The topology is applied, but members diverged from it since.
    Diverged(Vec<Divergence>),
    /// The last apply failed in a way only a change can heal, and nothing changed.
    WaitingForChange,
    /// Registrations older than the last apply differ; look again shortly.
    Unsettled,
    UpToDate,
}

/// Whether to apply now. `waiting` is the world as it was when an apply failed
/// with [`Retry::OnChange`].
pub fn check_apply(applied: Option<&DesiredRevision>, roles: Roles, world: &World, waiting: Option<&World>) -> ApplyCheck {
    if !world.desired.has_topology() {
        return ApplyCheck::UpToDate;
    }
    if waiting == Some(world) {
        return ApplyCheck::WaitingForChange;
    }
    if apply_due(&world.desired, applied) {
        return ApplyCheck::New;
    }
    match roles {
        Roles::Diverged(divergences) => ApplyCheck::Diverged(divergences),
        Roles::Unsettled => ApplyCheck::Unsettled,
        Roles::Converged => ApplyCheck::UpToDate,
    }
}

/// What a reconcile pass asks for: when to look again. A wake-up from the
/// leader's watch always comes sooner; it is only a hint to look now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing pending: look again on the next change in etcd.
    AwaitChange,
    /// Something is pending (a retry, a master that is down): look again after
    /// this long even if etcd does not change.
    Requeue(Duration),
}

impl Action {
    /// The earlier of two wishes, when one pass has several reasons to come back.
    pub fn sooner(self, other: Action) -> Action {
        match (self, other) {
            (Action::Requeue(a), Action::Requeue(b)) => Action::Requeue(a.min(b)),
            (Action::AwaitChange, other) | (other, Action::AwaitChange) => other,
        }
    }

    pub fn requeue_after(self) -> Option<Duration> {
        match self {
            Action::AwaitChange => None,
            Action::Requeue(after) => Some(after),
        }
    }
}

/// The retry policy, apart from reconciling: after `failures` consecutive
/// failures, back off from `min`, doubling up to `max`.
pub fn error_policy(failures: u32, min: Duration, max: Duration) -> Action {
    Action::Requeue(delay_after(failures, min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(role: Role, upstream: Option<&str>, healthy: bool) -> NodeRecord {
        NodeRecord {
            address: "10.0.0.1".into(),
            port: 6379,
            role,
            repl_offset: 0,
            run_id: "r".into(),
            healthy,
            updated_ms: 0,
            upstream: upstream.map(str::to_string),
            fenced: false,
            upstream_down: false,
            host: None,
        }
    }

    fn seen<'a>(member: &str, master: bool, record: Option<&'a NodeRecord>, fresh: bool) -> MemberSeen<'a> {
        MemberSeen { member: member.into(), master, record, fresh }
    }

    const M: &str = "10.0.0.1:6379";

    fn master() -> Option<SocketAddr> {
        Some(M.parse().unwrap())
    }

    #[test]
    fn roles_as_the_topology_says_are_converged() {
        let (m, s) = (record(Role::Master, None, true), record(Role::Slave, Some(M), true));
        assert_eq!(compare_roles(master(), &[seen("a", true, Some(&m), true), seen("b", false, Some(&s), true)]), Roles::Converged);
    }

    #[test]
    fn a_slave_that_registers_as_master_diverged() {
        let (m, rogue) = (record(Role::Master, None, true), record(Role::Master, None, true));
        let got = compare_roles(master(), &[seen("a", true, Some(&m), true), seen("b", false, Some(&rogue), true)]);
        assert_eq!(got, Roles::Diverged(vec![Divergence::SlaveIsMaster { member: "b".into() }]));
        let Roles::Diverged(d) = got else { unreachable!() };
        assert_eq!(d[0].to_string(), "b is a slave in the topology but registers as a master");
    }

    #[test]
    fn a_fenced_master_diverged_and_fenced_slaves_did_not() {
        let mut m = record(Role::Master, None, true);
        m.fenced = true;
        let got = compare_roles(master(), &[seen("a", true, Some(&m), true)]);
        assert_eq!(got, Roles::Diverged(vec![Divergence::MasterFenced { member: "a".into() }]));
        let Roles::Diverged(d) = got else { unreachable!() };
        assert_eq!(d[0].to_string(), "a is the topology's master but is fenced");
        // A slave is fenced while the dictator demotes it; it takes no writes anyway.
        let mut s = record(Role::Slave, Some(M), true);
        s.fenced = true;
        let unfenced = record(Role::Master, None, true);
        assert_eq!(compare_roles(master(), &[seen("a", true, Some(&unfenced), true), seen("b", false, Some(&s), true)]), Roles::Converged);
    }

    #[test]
    fn a_master_that_registers_as_slave_diverged() {
        let m = record(Role::Slave, Some("10.0.0.2:6379"), true);
        let got = compare_roles(master(), &[seen("a", true, Some(&m), true)]);
        let Roles::Diverged(d) = got else { panic!("{got:?}") };
        assert_eq!(d[0].to_string(), "a is the topology's master but registers as a slave of 10.0.0.2:6379");
    }

    #[test]
    fn a_slave_following_another_master_diverged() {
        let s = record(Role::Slave, Some("10.0.0.2:6379"), true);
        let got = compare_roles(master(), &[seen("b", false, Some(&s), true)]);
        assert_eq!(
            got,
            Roles::Diverged(vec![Divergence::WrongUpstream { member: "b".into(), upstream: "10.0.0.2:6379".into(), master: M.parse().unwrap() }])
        );
    }

    #[test]
    fn what_cannot_be_judged_is_not_a_divergence() {
        let down = record(Role::Master, None, false);
        let unknown = record(Role::Unknown, None, true);
        let old_agent = record(Role::Slave, None, true);
        let named = record(Role::Slave, Some("node-2.redis-1.cluster.local:6379"), true);
        let elsewhere = record(Role::Slave, Some("10.0.0.2:6379"), true);
        let members = [
            seen("unregistered", false, None, true),
            seen("unhealthy", false, Some(&down), true),
            seen("unknown", true, Some(&unknown), true),
            seen("no upstream registered", false, Some(&old_agent), true),
            seen("upstream by name", false, Some(&named), true),
        ];
        assert_eq!(compare_roles(master(), &members), Roles::Converged);
        assert_eq!(compare_roles(None, &[seen("master unknown", false, Some(&elsewhere), true)]), Roles::Converged);
    }

    #[test]
    fn a_divergence_only_in_registrations_older_than_the_last_apply_is_unsettled() {
        let rogue = record(Role::Master, None, true);
        assert_eq!(compare_roles(master(), &[seen("b", false, Some(&rogue), false)]), Roles::Unsettled);
        let fresh_rogue = record(Role::Master, None, true);
        let got = compare_roles(master(), &[seen("b", false, Some(&rogue), false), seen("c", false, Some(&fresh_rogue), true)]);
        assert_eq!(got, Roles::Diverged(vec![Divergence::SlaveIsMaster { member: "c".into() }]), "the fresh one decides");
    }

    #[test]
    fn failures_that_cannot_heal_by_themselves_wait_for_a_change() {
        assert_eq!(classify(Some(504), "catch-up of 127.0.0.1:7001 timed out"), Retry::OnChange);
        assert_eq!(classify(Some(409), "applying would lose acknowledged writes: ..."), Retry::OnChange);
        assert_eq!(classify(Some(422), "master.address: node-1 is not registered"), Retry::OnChange);
        assert_eq!(classify(Some(400), "malformed JSON"), Retry::OnChange);
        assert_eq!(classify(Some(404), "no such endpoint"), Retry::OnChange);
    }

    #[test]
    fn failures_that_may_heal_by_themselves_back_off() {
        assert_eq!(classify(None, ""), Retry::Backoff, "no answer: refused, timeout, DNS");
        assert_eq!(
            classify(Some(422), "master: node-1.redis-1.cluster.local does not resolve (no SRV, A or AAAA record)"),
            Retry::Backoff,
            "dnsd may not serve a new registration yet"
        );
        assert_eq!(classify(Some(502), "master 127.0.0.1:7001 is unreachable"), Retry::Backoff);
        assert_eq!(classify(Some(500), ""), Retry::Backoff);
        assert_eq!(classify(Some(503), ""), Retry::Backoff);
        assert_eq!(
            classify(Some(409), "another apply to cluster redis-1 is still running after 10s; try again"),
            Retry::Backoff,
            "a busy lock is released when the other apply ends"
        );
        assert_eq!((Retry::Backoff.as_str(), Retry::OnChange.as_str()), ("backoff", "on_change"));
    }

    fn world(topology: i64, nodes: &[(&str, NodeRecord)]) -> World {
        let nodes: HashMap<String, NodeRecord> = nodes.iter().map(|(n, r)| (n.to_string(), r.clone())).collect();
        World::new(&desired(topology, 1), &nodes)
    }

    #[test]
    fn a_failure_that_waits_for_a_change_is_tried_again_on_any_change_only() {
        let slave = record(Role::Slave, Some(M), true);
        let failed = world(5, &[("b", slave.clone())]);
        let same = |w: &World| check_apply(Some(&desired(4, 1)), Roles::Converged, w, Some(&failed));
        assert_eq!(same(&failed), ApplyCheck::WaitingForChange);
        let refreshed = NodeRecord { repl_offset: 99, updated_ms: 7, ..slave.clone() };
        assert_eq!(same(&world(5, &[("b", refreshed)])), ApplyCheck::WaitingForChange, "an offset refresh is no change");
        assert_eq!(same(&world(6, &[("b", slave.clone())])), ApplyCheck::New, "a new topology");
        let mut triggered = failed.clone();
        triggered.desired.trigger_revision = 9;
        assert_eq!(same(&triggered), ApplyCheck::New, "a trigger");
        let promoted = record(Role::Master, None, true);
        assert_eq!(same(&world(5, &[("b", promoted)])), ApplyCheck::New, "a member's role changed");
        let down = NodeRecord { healthy: false, ..slave.clone() };
        assert_eq!(same(&world(5, &[("b", down)])), ApplyCheck::New, "a member's health changed");
        assert_eq!(same(&world(5, &[])), ApplyCheck::New, "a member's registration is gone");
    }

    #[test]
    fn an_applied_topology_is_applied_again_only_when_members_diverged() {
        let w = world(5, &[]);
        let applied = desired(5, 1);
        assert_eq!(check_apply(Some(&applied), Roles::Converged, &w, None), ApplyCheck::UpToDate);
        assert_eq!(check_apply(Some(&applied), Roles::Unsettled, &w, None), ApplyCheck::Unsettled);
        let d = vec![Divergence::SlaveIsMaster { member: "b".into() }];
        assert_eq!(check_apply(Some(&applied), Roles::Diverged(d.clone()), &w, None), ApplyCheck::Diverged(d));
        assert_eq!(check_apply(None, Roles::Converged, &w, None), ApplyCheck::New);
        assert_eq!(check_apply(None, Roles::Converged, &world(0, &[]), None), ApplyCheck::UpToDate, "no topology");
    }

    const fn ms(n: u64) -> Action {
        Action::Requeue(Duration::from_millis(n))
    }

    #[test]
    fn the_sooner_wish_wins_and_awaiting_a_change_is_the_latest() {
        assert_eq!(ms(300).sooner(ms(200)), ms(200));
        assert_eq!(ms(200).sooner(ms(300)), ms(200));
        assert_eq!(Action::AwaitChange.sooner(ms(300)), ms(300));
        assert_eq!(ms(300).sooner(Action::AwaitChange), ms(300));
        assert_eq!(Action::AwaitChange.sooner(Action::AwaitChange), Action::AwaitChange);
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<Action> = (1..=5).map(|f| error_policy(f, min, max)).collect();
        assert_eq!(got, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(ms(100).requeue_after(), Some(Duration::from_millis(100)));
        assert_eq!(Action::AwaitChange.requeue_after(), None);
    }

    fn desired(topology: i64, trigger: i64) -> DesiredRevision {
        DesiredRevision { topology_revision: topology, trigger_revision: trigger, trigger: Some(format!("t{trigger}")) }
    }

    #[test]
    fn applying_is_due_for_anything_new() {
        assert!(apply_due(&desired(5, 0), None));
        assert!(!apply_due(&desired(5, 7), Some(&desired(5, 7))));
        assert!(apply_due(&desired(5, 8), Some(&desired(5, 7))), "new trigger");
        assert!(apply_due(&desired(6, 7), Some(&desired(5, 7))), "new topology");
        assert!(!apply_due(&DesiredRevision::default(), None), "nothing defined yet");
        assert!(!apply_due(&desired(0, 3), None), "a trigger without a topology");
    }
}
