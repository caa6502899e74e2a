//! The planner: `plan(wanted, observed, force)` decides, without any I/O, which steps
//! move the instances from what they are to what the topology asks, in an order
//! that loses no acknowledged write:
//!
//! 1. fence every master that is to become a slave (its writes fail with NOREPLICAS:
//!    redis checks `min-replicas-to-write` before `CLIENT PAUSE`);
//! 2. let the new master catch up with the master it replicates from;
//! 3. set the new master's write settings (undo a fence an earlier apply left, or
//!    set the group's durability) and promote it;
//! 4. re-point every other member at it (in parallel);
//! 5. release the demoted masters (now slaves, they answer writes with READONLY;
//!    re-pointing sets `replica-read-only yes` on every slave);
//! 6. set the group's durability (`min-replicas-*`) on the slaves that lack it;
//! 7. verify that every slave sees a marker written on the new master;
//! 8. persist the roles with `CONFIG REWRITE` where redis has a config file.
//!
//! A group with a durability setting ([`topology::Durability`]) gets it wherever
//! a fence is lifted (steps 3 and 5), or on its own (step 6), the new master's
//! before its promotion, so it never takes a write without it. Without one, a lifted fence restores
//! what the member had before.
//!
//! It refuses when promoting would discard acknowledged writes, unless forced,
//! judged by `topology::history` (replication ids and offsets, cut at a fence's
//! recorded point), and names the masters holding them so they can be fenced.
//!
//! Except for a master that clients are not sent to: DNS publishes another one
//! ([`Wanted::published`]). Such a member came back as a master after the group
//! moved on without it (a healed partition, a thaw, a restart from an AOF, which
//! keeps no history to compare), so what it holds beyond the new master is what
//! the group gave up when it moved. Refusing would not bring those writes back,
//! and would block every later apply, a failover included. That member is
//! quarantined instead: fenced, left out of the plan, and reported for an
//! operator to decide (recover its keys by hand, then `force`); the rest of the
//! group is applied. Only the published master's writes are the group's
//! acknowledged writes, and moving away from it is refused as before.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;

use serde::Serialize;

use crate::observe::Observed;
use service::redis_info::Replication;
use topology::history::{coverage, discards};
use topology::Durability;

/// The topology to apply, resolved to one address per member: the planner's goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub master: SocketAddr,
    pub slaves: Vec<SocketAddr>,
    /// The master DNS publishes for the group as the apply starts (`None`:
    /// unknown). Not a goal: it says which master clients write to.
    pub published: Option<SocketAddr>,
    /// `min-replicas-*` for every member; `None` leaves them as they are.
    pub durability: Option<Durability>,
}

impl Wanted {
    /// The master, then the slaves.
    pub fn members(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        std::iter::once(self.master).chain(self.slaves.iter().copied())
    }
}

/// One action on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Step {
    /// `CLIENT PAUSE WRITE` plus the `min-replicas-to-write` fence.
    Fence { node: SocketAddr },
    /// Wait until `node` has applied everything `from` has (read from `node` itself).
    CatchUp { node: SocketAddr, from: SocketAddr },
    /// The new master's write settings: lift a fence an earlier, interrupted apply
    /// left, or set the group's durability.
    AllowWrites { node: SocketAddr },
    /// `REPLICAOF NO ONE` (and `CLIENT UNPAUSE`).
    Promote { node: SocketAddr },
    /// `REPLICAOF <master>`.
    Replicate { node: SocketAddr, master: SocketAddr },
    /// Restore write settings and `CLIENT UNPAUSE` on a member that is now a slave.
    Release { node: SocketAddr },
    /// `CONFIG SET min-replicas-to-write / min-replicas-max-lag` to the group's
    /// durability, on a slave whose fence this apply does not lift.
    Durability { node: SocketAddr },
    /// A marker written on `master` must be readable on `node`.
    Verify { node: SocketAddr, master: SocketAddr },
    /// `CONFIG REWRITE`.
    Persist { node: SocketAddr },
    /// The fence alone (no pause), on a master whose demotion was refused: it holds
    /// writes the new master lacks, and must take no more until an operator decides.
    Quarantine { node: SocketAddr },
}

impl Step {
    pub fn node(&self) -> SocketAddr {
        match *self {
            Step::Fence { node }
            | Step::CatchUp { node, .. }
            | Step::AllowWrites { node }
            | Step::Promote { node }
            | Step::Replicate { node, .. }
            | Step::Release { node }
            | Step::Durability { node }
            | Step::Verify { node, .. }
            | Step::Persist { node }
            | Step::Quarantine { node } => node,
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Step::Fence { .. } => "fence",
            Step::CatchUp { .. } => "catch_up",
            Step::AllowWrites { .. } => "allow_writes",
            Step::Promote { .. } => "promote",
            Step::Replicate { .. } => "replicate",
            Step::Release { .. } => "release",
            Step::Durability { .. } => "durability",
            Step::Verify { .. } => "verify",
            Step::Persist { .. } => "persist",
            Step::Quarantine { .. } => "quarantine",
        }
    }

    /// Steps of one kind that touch different instances may run at the same time.
    pub fn runs_in_parallel_with(&self, other: &Step) -> bool {
        self.action() == other.action()
            && !matches!(self, Step::CatchUp { .. } | Step::Promote { .. } | Step::AllowWrites { .. })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::CatchUp { node, from } => write!(f, "catch_up {node} from {from}"),
            Step::Replicate { node, master } => write!(f, "replicate {node} from {master}"),
            Step::Verify { node, master } => write!(f, "verify {node} follows {master}"),
            other => write!(f, "{} {}", other.action(), other.node()),
        }
    }
}

/// What the planner decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Slaves that could not be observed: skipped, they rejoin on their next trigger.
    pub unreachable: Vec<SocketAddr>,
    /// Data-loss reasons that `force` overrode.
    pub overridden: Vec<String>,
    /// Members left out because they hold writes the new master lacks, though
    /// clients are sent elsewhere: fenced, and left as they are for an operator.
    pub quarantined: Vec<Quarantined>,
    /// The group's durability, which lifting a fence sets (from [`Wanted`]).
    pub durability: Option<Durability>,
}

/// A member the plan leaves out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    pub node: SocketAddr,
    pub reason: String,
}

impl Plan {
    pub fn changes_anything(&self) -> bool {
        !self.steps.is_empty()
    }
}

/// Why the planner will not move anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The new master cannot be observed: nothing can change.
    #[error("master {addr} is unreachable: {error}")]
    MasterUnreachable { addr: SocketAddr, error: String },
    /// Promoting would discard acknowledged writes: refused unless forced. The
    /// `quarantine`d members are masters holding those writes: they are fenced, so
    /// they take no more writes that would be lost with them.
    #[error("applying would lose acknowledged writes: {}; pass force=true to apply anyway", .reasons.join("; "))]
    WouldLoseData { reasons: Vec<String>, quarantine: Vec<SocketAddr> },
}

/// Decides the steps. `observed` holds every member, and may hold the new master's
/// upstream when that is not a member. `force` applies even when data would be lost.
pub fn plan<C>(
    wanted: &Wanted,
    observed: &HashMap<SocketAddr, Observed<C>>,
    force: bool,
) -> Result<Plan, Refusal> {
    let up = |addr: &SocketAddr| observed.get(addr).and_then(Observed::replication);
    let new = wanted.master;
    let n = match observed.get(&new) {
        Some(Observed::Up { replication, .. }) => replication,
        Some(Observed::Unreachable { error }) => {
            return Err(Refusal::MasterUnreachable { addr: new, error: error.clone() });
        }
        None => return Err(Refusal::MasterUnreachable { addr: new, error: "not observed".into() }),
    };

    let unreachable: Vec<SocketAddr> =
        wanted.slaves.iter().copied().filter(|s| up(s).is_none()).collect();
    let slaves: Vec<(SocketAddr, &Replication)> =
        wanted.slaves.iter().filter_map(|s| up(s).map(|r| (*s, r))).collect();
    let old_masters: Vec<(SocketAddr, &Replication)> =
        slaves.iter().copied().filter(|(_, r)| r.is_master()).collect();

    // Where the new master's missing writes would come from, if it can get them:
    // only from a member, since only members are fenced first.
    let upstream = n.upstream();
    let catch_up_from = upstream.filter(|u| wanted.slaves.contains(u)).and_then(|u| {
        let source = up(&u).filter(|r| r.is_master())?;
        shares_history(n, source).then_some(u)
    });

    let mut reasons = Vec::new();
    let mut quarantine = Vec::new();
    let mut quarantined = Vec::new();
    // A master clients are not sent to holds, beyond the new master, only what
    // the group gave up when it moved on without it (see the module's doc).
    let given_up = |m: SocketAddr| wanted.published.is_some_and(|p| p != m);
    // What the new master will hold once caught up: its own history and its source's.
    let holders: Vec<&Replication> = std::iter::once(n).chain(catch_up_from.and_then(|u| up(&u))).collect();
    for (m_addr, m) in &old_masters {
        if let Some(reason) = loss(*m_addr, m, new, &holders, catch_up_from == Some(*m_addr)) {
            if given_up(*m_addr) && !force {
                let published = wanted.published.map(|p| p.to_string()).unwrap_or_default();
                quarantined.push(Quarantined { node: *m_addr, reason: format!("{reason}; DNS sends clients to {published}, not to it") });
            } else {
                reasons.push(reason);
                quarantine.push(*m_addr);
            }
        }
    }
    let left_out = |addr: &SocketAddr| quarantined.iter().any(|q| q.node == *addr);
    let slaves: Vec<(SocketAddr, &Replication)> = slaves.into_iter().filter(|(s, _)| !left_out(s)).collect();
    let old_masters: Vec<(SocketAddr, &Replication)> = old_masters.into_iter().filter(|(s, _)| !left_out(s)).collect();
    // An upstream outside the topology that is still a master would keep taking
    // writes nobody fences.
    if let Some(u) = upstream.filter(|u| *u != new && !wanted.slaves.contains(u))
        && up(&u).is_some_and(Replication::is_master) {
            reasons.push(format!(
                "new master {new} replicates from {u}, which is not in the topology and still \
                 accepts writes; add it as a slave so it is fenced and demoted, or stop it"
            ));
        }
    // Without a live source to catch up from, a member further along a history
    // the new master shares holds writes the new master would never get.
    if !n.is_master() && catch_up_from.is_none() {
        for (s_addr, s) in slaves.iter().filter(|(_, s)| !s.is_master()) {
            if discards(&n.history(), &s.history()) > 0 {
                let c = coverage(&n.history(), &s.history());
                reasons.push(format!(
                    "{s_addr} has applied {} bytes of replication history (offsets {}..={}) that the new \
                     master {new} lacks, and its own master is not reachable to catch up from",
                    c.lacking,
                    c.held + 1,
                    s.offset
                ));
            }
        }
    }
    if !reasons.is_empty() && !force {
        return Err(Refusal::WouldLoseData { reasons, quarantine });
    }

    let mut steps = Vec::new();
    for q in &quarantined {
        if up(&q.node).is_some_and(|r| r.fence_point().is_none()) {
            steps.push(Step::Quarantine { node: q.node });
        }
    }
    for (m, _) in &old_masters {
        steps.push(Step::Fence { node: *m });
    }
    if let Some(from) = catch_up_from {
        steps.push(Step::CatchUp { node: new, from });
    }
    // Lifting a fence sets the group's durability; every other member gets it on
    // its own, the new master before it is promoted (a slave ignores the setting),
    // so it never takes a write without it.
    let lacks_durability = |r: &Replication| {
        wanted.durability.is_some_and(|d| {
            r.min_replicas_to_write != d.min_replicas_to_write || r.min_replicas_max_lag != d.min_replicas_max_lag
        })
    };
    let mut durable = Vec::new();
    if lacks_durability(n) && !n.is_fenced() {
        durable.push(new);
    }
    // A failure here stops the apply before the promotion, as a fence lifted
    // half-way must.
    if n.is_fenced() || lacks_durability(n) {
        steps.push(Step::AllowWrites { node: new });
    }
    if !n.is_master() {
        steps.push(Step::Promote { node: new });
    }
    let repointed: Vec<SocketAddr> = slaves
        .iter()
        .filter(|(_, r)| r.is_master() || r.upstream() != Some(new) || !r.replica_read_only)
        .map(|(s, _)| *s)
        .collect();
    for s in &repointed {
        steps.push(Step::Replicate { node: *s, master: new });
    }
    let mut released = Vec::new();
    for (s, r) in &slaves {
        if r.is_master() || r.is_fenced() {
            steps.push(Step::Release { node: *s });
            released.push(*s);
        }
    }
    for (s, r) in &slaves {
        if !released.contains(s) && lacks_durability(r) {
            steps.push(Step::Durability { node: *s });
            durable.push(*s);
        }
    }
    if !steps.is_empty() {
        for (s, _) in &slaves {
            steps.push(Step::Verify { node: *s, master: new });
        }
        let role_changed = |addr: &SocketAddr| *addr == new && !n.is_master() || repointed.contains(addr);
        for addr in std::iter::once(&new).chain(wanted.slaves.iter()) {
            if (role_changed(addr) || durable.contains(addr)) && up(addr).is_some_and(|r| r.has_config_file) {
                steps.push(Step::Persist { node: *addr });
            }
        }
    }

    Ok(Plan {
        steps,
        unreachable,
        overridden: if force { reasons } else { Vec::new() },
        quarantined,
        durability: wanted.durability,
    })
}

/// Two instances are on the same replication history, so one can catch up with
/// the other by partial resync.
fn shares_history(replica: &Replication, source: &Replication) -> bool {
    replica.replid == source.replid
}

/// Why demoting master `m` (to follow the new master `n_addr`, which will hold the
/// histories of `holders`) would lose acknowledged writes, if it would: the new
/// master lacks part of `m`'s history up to its fence point (see
/// `topology::history`), or `m` holds keys but no history to compare (restarted
/// from an AOF, or never replicated), so nothing shows that the new master has them.
fn loss(
    m_addr: SocketAddr,
    m: &Replication,
    n_addr: SocketAddr,
    holders: &[&Replication],
    n_catches_up_from_m: bool,
) -> Option<String> {
    if m.keys == 0 || n_catches_up_from_m {
        return None;
    }
    let written = m.written_history();
    let c = holders.iter().map(|h| coverage(&h.history(), &written)).max_by_key(|c| c.held)?;
    if !c.holds_all() {
        let fence = m.fence_point().map(|p| format!(", fenced at offset {p}")).unwrap_or_default();
        return Some(format!(
            "{m_addr} is a master holding {} keys; the new master {n_addr} lacks {} bytes of its \
             replication history {} (offsets {}..={}{fence}): those writes would be lost",
            m.keys,
            c.lacking,
            m.replid,
            c.held + 1,
            written.offset
        ));
    }
    written.is_empty().then(|| {
        format!(
            "{m_addr} is a master holding {} keys with no replication history (restarted from an \
             AOF, or never replicated): nothing shows that the new master {n_addr} has them",
            m.keys
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_the_master_then_the_slaves_in_order() {
        let [a, b, c] = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"].map(|s| s.parse::<SocketAddr>().unwrap());
        let wanted = Wanted { master: b, slaves: vec![c, a], published: None, durability: None };
        assert_eq!(wanted.members().collect::<Vec<_>>(), [b, c, a]);
    }

    #[test]
    fn only_steps_of_one_kind_that_are_safe_together_run_in_parallel() {
        let [a, b] = ["127.0.0.1:1", "127.0.0.1:2"].map(|s| s.parse::<SocketAddr>().unwrap());
        let together = |x: Step, y: Step| x.runs_in_parallel_with(&y);
        assert!(together(Step::Fence { node: a }, Step::Fence { node: b }));
        assert!(together(Step::Replicate { node: a, master: b }, Step::Replicate { node: b, master: a }));
        assert!(together(Step::Release { node: a }, Step::Release { node: b }));
        assert!(together(Step::Verify { node: a, master: b }, Step::Verify { node: b, master: a }));
        assert!(together(Step::Persist { node: a }, Step::Persist { node: b }));
        // One new master: catching up, lifting its fence and promoting are one at a time.
        assert!(!together(Step::CatchUp { node: a, from: b }, Step::CatchUp { node: b, from: a }));
        assert!(!together(Step::AllowWrites { node: a }, Step::AllowWrites { node: b }));
        assert!(!together(Step::Promote { node: a }, Step::Promote { node: b }));
        // Different kinds never overlap: the order between them is the safety.
        assert!(!together(Step::Fence { node: a }, Step::Replicate { node: b, master: a }));
        assert!(!together(Step::Promote { node: a }, Step::Replicate { node: b, master: a }));
    }
    use service::redis_info::ReplicationRole;
use topology::FENCE_MIN_REPLICAS;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }
    const A: u16 = 7000;
    const B: u16 = 7001;
    const C: u16 = 7002;
    const X: u16 = 7009;

    fn master(replid: &str, offset: u64, keys: u64) -> Replication {
        Replication {
            role: ReplicationRole::Master,
            replid: replid.into(),
            replid2: "0".repeat(40),
            offset,
            second_offset: -1,
            keys,
            min_replicas_to_write: 0,
            min_replicas_max_lag: 10,
            has_config_file: false,
            replica_read_only: true,
        }
    }

    fn slave_of(port: u16, replid: &str, offset: u64, keys: u64) -> Replication {
        Replication {
            role: ReplicationRole::Slave { upstream: Some(addr(port)), link_up: true },
            ..master(replid, offset, keys)
        }
    }

    fn fenced(mut r: Replication) -> Replication {
        r.min_replicas_to_write = FENCE_MIN_REPLICAS;
        r
    }

    fn world(nodes: Vec<(u16, Observed)>) -> HashMap<SocketAddr, Observed> {
        nodes.into_iter().map(|(p, o)| (addr(p), o)).collect()
    }

    fn wanted(m: u16, slaves: &[u16]) -> Wanted {
        Wanted { master: addr(m), slaves: slaves.iter().map(|p| addr(*p)).collect(), published: None, durability: None }
    }

    fn up(r: Replication) -> Observed {
        Observed::Up { conn: (), replication: r }
    }

    fn down() -> Observed {
        Observed::Unreachable { error: "connection refused".into() }
    }

    fn actions(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nothing_to_do_when_the_topology_holds() {
        let w = world(vec![
            (A, up(master("r1", 100, 5))),
            (B, up(slave_of(A, "r1", 100, 5))),
            (C, up(slave_of(A, "r1", 90, 5))),
        ]);
        let p = plan(&wanted(A, &[B, C]), &w, false).unwrap();
        assert!(!p.changes_anything(), "{:?}", actions(&p));
    }

    #[test]
    fn a_slave_whose_link_is_down_but_points_right_is_left_alone() {
        let mut b = slave_of(A, "r1", 100, 5);
        b.role = ReplicationRole::Slave { upstream: Some(addr(A)), link_up: false };
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(b))]);
        assert!(!plan(&wanted(A, &[B]), &w, false).unwrap().changes_anything());
    }

    #[test]
    fn fresh_unconfigured_instances() {
        let w = world(vec![
            (A, up(master("ra", 0, 0))),
            (B, up(master("rb", 0, 0))),
            (C, up(master("rc", 0, 0))),
        ]);
        let p = plan(&wanted(A, &[B, C]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            [
                "fence 127.0.0.1:7001",
                "fence 127.0.0.1:7002",
                "replicate 127.0.0.1:7001 from 127.0.0.1:7000",
                "replicate 127.0.0.1:7002 from 127.0.0.1:7000",
                "release 127.0.0.1:7001",
                "release 127.0.0.1:7002",
                "verify 127.0.0.1:7001 follows 127.0.0.1:7000",
                "verify 127.0.0.1:7002 follows 127.0.0.1:7000",
            ]
        );
    }

    #[test]
    fn rotate_the_master_fences_catches_up_promotes_then_repoints() {
        let w = world(vec![
            (A, up(master("r1", 100, 5))),
            (B, up(slave_of(A, "r1", 98, 5))),
            (C, up(slave_of(A, "r1", 100, 5))),
        ]);
        let p = plan(&wanted(B, &[A, C]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            [
                "fence 127.0.0.1:7000",
                "catch_up 127.0.0.1:7001 from 127.0.0.1:7000",
                "promote 127.0.0.1:7001",
                "replicate 127.0.0.1:7000 from 127.0.0.1:7001",
                "replicate 127.0.0.1:7002 from 127.0.0.1:7001",
                "release 127.0.0.1:7000",
                "verify 127.0.0.1:7000 follows 127.0.0.1:7001",
                "verify 127.0.0.1:7002 follows 127.0.0.1:7001",
            ]
        );
        assert!(p.unreachable.is_empty() && p.overridden.is_empty());
    }

    #[test]
    fn slave_to_master_with_no_other_members() {
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(slave_of(A, "r1", 100, 5)))]);
        // The old master is left out of the topology while still a master: refused,
        // because nobody would fence it.
        let err = plan(&wanted(B, &[]), &w, false).unwrap_err();
        assert!(matches!(err, Refusal::WouldLoseData { ref reasons, .. } if reasons[0].contains("not in the topology")), "{err}");
        // With force, B is promoted without waiting.
        let p = plan(&wanted(B, &[]), &w, true).unwrap();
        assert_eq!(actions(&p), ["promote 127.0.0.1:7001"]);
        assert_eq!(p.overridden.len(), 1);
    }

    #[test]
    fn slave_of_a_dead_master_is_promoted_without_waiting() {
        // A is gone; B and C were its slaves and are equally far along.
        let w = world(vec![
            (A, down()),
            (B, up(slave_of(A, "r1", 100, 5))),
            (C, up(slave_of(A, "r1", 100, 5))),
        ]);
        let p = plan(&wanted(B, &[A, C]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            [
                "promote 127.0.0.1:7001",
                "replicate 127.0.0.1:7002 from 127.0.0.1:7001",
                "verify 127.0.0.1:7002 follows 127.0.0.1:7001",
            ]
        );
        assert_eq!(p.unreachable, [addr(A)]);
    }

    #[test]
    fn refuses_to_promote_a_slave_behind_another_when_the_master_is_dead() {
        let w = world(vec![
            (A, down()),
            (B, up(slave_of(A, "r1", 90, 5))),
            (C, up(slave_of(A, "r1", 100, 5))),
        ]);
        let err = plan(&wanted(B, &[A, C]), &w, false).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:7002 has applied 10 bytes of replication history (offsets 91..=100)"), "{err}");
        assert!(plan(&wanted(C, &[A, B]), &w, false).is_ok());
    }

    #[test]
    fn a_master_of_its_own_divergent_data_is_not_overwritten() {
        let w = world(vec![
            (A, up(master("r1", 100, 5))),
            (B, up(master("other", 40, 2))),
        ]);
        let err = plan(&wanted(A, &[B]), &w, false).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:7001 is a master holding 2 keys"), "{err}");
        let p = plan(&wanted(A, &[B]), &w, true).unwrap();
        assert_eq!(p.overridden.len(), 1);
        assert_eq!(actions(&p)[..2], ["fence 127.0.0.1:7001", "replicate 127.0.0.1:7001 from 127.0.0.1:7000"]);
    }

    #[test]
    fn an_empty_new_master_may_not_replace_one_with_data() {
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(master("fresh", 0, 0)))]);
        assert!(plan(&wanted(B, &[A]), &w, false).is_err());
        // The other way round is the ordinary join of a fresh instance.
        assert!(plan(&wanted(A, &[B]), &w, false).is_ok());
    }

    #[test]
    fn a_slave_that_never_synced_cannot_catch_up() {
        // B points at A but is still on its own history (full sync not done).
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(slave_of(A, "own", 0, 0)))]);
        let err = plan(&wanted(B, &[A]), &w, false).unwrap_err();
        assert!(err.to_string().contains("127.0.0.1:7000 is a master holding 5 keys"), "{err}");
    }

    #[test]
    fn finishes_an_apply_that_stopped_after_promotion() {
        // B was promoted from A at offset 100 (second_offset 101); A is still a
        // fenced master that took no write since.
        let mut b = master("r2", 100, 5);
        b.replid2 = "r1".into();
        b.second_offset = 101;
        let w = world(vec![(A, up(fenced(master("r1", 100, 5)))), (B, up(b.clone()))]);
        let p = plan(&wanted(B, &[A]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            [
                "fence 127.0.0.1:7000",
                "replicate 127.0.0.1:7000 from 127.0.0.1:7001",
                "release 127.0.0.1:7000",
                "verify 127.0.0.1:7000 follows 127.0.0.1:7001",
            ]
        );
        // Had A taken a write after the promotion, B would lack it.
        let w = world(vec![(A, up(master("r1", 120, 6))), (B, up(b))]);
        assert!(plan(&wanted(B, &[A]), &w, false).is_err());
    }

    #[test]
    fn a_previously_fenced_master_is_allowed_to_write_again() {
        let w = world(vec![
            (A, up(fenced(master("r1", 100, 5)))),
            (B, up(slave_of(A, "r1", 100, 5))),
        ]);
        let p = plan(&wanted(A, &[B]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            ["allow_writes 127.0.0.1:7000", "verify 127.0.0.1:7001 follows 127.0.0.1:7000"]
        );
    }

    #[test]
    fn a_fenced_slave_being_promoted_has_its_fence_lifted_first() {
        let w = world(vec![
            (A, up(master("r1", 100, 5))),
            (B, up(fenced(slave_of(A, "r1", 100, 5)))),
        ]);
        let p = plan(&wanted(B, &[A]), &w, false).unwrap();
        assert_eq!(
            actions(&p)[..4],
            [
                "fence 127.0.0.1:7000",
                "catch_up 127.0.0.1:7001 from 127.0.0.1:7000",
                "allow_writes 127.0.0.1:7001",
                "promote 127.0.0.1:7001",
            ]
        );
    }

    #[test]
    fn a_fenced_slave_that_stays_a_slave_is_released() {
        let w = world(vec![
            (A, up(master("r1", 100, 5))),
            (B, up(fenced(slave_of(A, "r1", 100, 5)))),
        ]);
        let p = plan(&wanted(A, &[B]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            ["release 127.0.0.1:7001", "verify 127.0.0.1:7001 follows 127.0.0.1:7000"]
        );
    }

    #[test]
    fn unreachable_slaves_are_skipped_and_reported() {
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, down()), (C, up(master("rc", 0, 0)))]);
        let p = plan(&wanted(A, &[B, C]), &w, false).unwrap();
        assert_eq!(p.unreachable, [addr(B)]);
        assert!(p.steps.iter().all(|s| s.node() != addr(B)));
        assert!(p.changes_anything());
    }

    #[test]
    fn unreachable_master_is_refused() {
        let w = world(vec![(A, down()), (B, up(master("r1", 0, 0)))]);
        assert!(matches!(
            plan(&wanted(A, &[B]), &w, false),
            Err(Refusal::MasterUnreachable { addr: a, .. }) if a == addr(A)
        ));
        assert!(matches!(plan(&wanted(A, &[B]), &world(vec![]), true), Err(Refusal::MasterUnreachable { .. })));
    }

    #[test]
    fn a_slave_pointing_elsewhere_is_repointed() {
        let w = world(vec![
            (A, up(master("r1", 100, 5))),
            (B, up(slave_of(X, "r9", 10, 1))),
            (X, down()),
        ]);
        let p = plan(&wanted(A, &[B]), &w, false).unwrap();
        assert_eq!(
            actions(&p),
            ["replicate 127.0.0.1:7001 from 127.0.0.1:7000", "verify 127.0.0.1:7001 follows 127.0.0.1:7000"]
        );
    }

    #[test]
    fn a_slave_of_a_hostname_is_repointed_at_the_address() {
        let mut b = slave_of(A, "r1", 100, 5);
        b.role = ReplicationRole::Slave { upstream: None, link_up: true };
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(b))]);
        let p = plan(&wanted(A, &[B]), &w, false).unwrap();
        assert_eq!(actions(&p)[0], "replicate 127.0.0.1:7001 from 127.0.0.1:7000");
    }

    #[test]
    fn roles_are_persisted_only_where_redis_has_a_config_file() {
        let with_file = |mut r: Replication| {
            r.has_config_file = true;
            r
        };
        let w = world(vec![
            (A, up(with_file(master("r1", 100, 5)))),
            (B, up(with_file(slave_of(A, "r1", 100, 5)))),
            (C, up(slave_of(A, "r1", 100, 5))),
        ]);
        let p = plan(&wanted(B, &[A, C]), &w, false).unwrap();
        let persisted: Vec<_> = p.steps.iter().filter(|s| matches!(s, Step::Persist { .. })).map(Step::node).collect();
        assert_eq!(persisted, [addr(B), addr(A)]);
    }

    #[test]
    fn a_master_that_stays_master_is_not_persisted_again() {
        let with_file = |mut r: Replication| {
            r.has_config_file = true;
            r
        };
        // A keeps its role; only C, following the wrong upstream, changes.
        let w = world(vec![
            (A, up(with_file(master("r1", 100, 5)))),
            (B, up(with_file(slave_of(A, "r1", 100, 5)))),
            (C, up(with_file(slave_of(B, "r1", 100, 5)))),
        ]);
        let p = plan(&wanted(A, &[B, C]), &w, false).unwrap();
        let persisted: Vec<_> = p.steps.iter().filter(|s| matches!(s, Step::Persist { .. })).map(Step::node).collect();
        assert_eq!(persisted, [addr(C)]);
    }

    #[test]
    fn two_masters_on_the_same_history_resolve_to_the_further_one() {
        // Split brain after a crash: both masters, B promoted from A's history later.
        let mut b = master("r2", 150, 7);
        b.replid2 = "r1".into();
        b.second_offset = 101;
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(b))]);
        let p = plan(&wanted(B, &[A]), &w, false).unwrap();
        assert_eq!(actions(&p)[0], "fence 127.0.0.1:7000");
        // Promoting A instead would lose B's writes after the promotion.
        assert!(plan(&wanted(A, &[B]), &w, false).is_err());
    }

    #[test]
    fn a_slave_restarted_from_its_rdb_rejoins_as_a_slave() {
        // B restarted from an RDB saved at offset 52 of r1: a new id, r1 kept as replid2.
        let mut b = master("rb", 52, 2);
        b.replid2 = "r1".into();
        b.second_offset = 53;
        let w = world(vec![(A, up(master("r1", 500, 9))), (B, up(b.clone()))]);
        let p = plan(&wanted(A, &[B]), &w, false).unwrap();
        assert_eq!(actions(&p)[..2], ["fence 127.0.0.1:7001", "replicate 127.0.0.1:7001 from 127.0.0.1:7000"]);
        // Writes it took after the restart are its own: refused, and it is quarantined.
        b.offset = 80;
        let w = world(vec![(A, up(master("r1", 500, 9))), (B, up(b))]);
        let err = plan(&wanted(A, &[B]), &w, false).unwrap_err();
        assert!(err.to_string().contains("lacks 28 bytes of its replication history rb (offsets 53..=80)"), "{err}");
        assert!(matches!(err, Refusal::WouldLoseData { ref quarantine, .. } if quarantine == &[addr(B)]));
    }

    #[test]
    fn a_master_with_keys_and_no_history_is_refused() {
        // Restarted from an AOF: redis keeps no replication history.
        let w = world(vec![(A, up(master("r1", 500, 9))), (B, up(master("fresh", 0, 3)))]);
        let err = plan(&wanted(A, &[B]), &w, false).unwrap_err();
        assert!(err.to_string().contains("holding 3 keys with no replication history"), "{err}");
    }

    /// B promoted from A's history r1 at 100 (a failover), C following it.
    fn after_a_failover(a: Replication) -> HashMap<SocketAddr, Observed> {
        let mut b = master("r2", 130, 5);
        b.replid2 = "r1".into();
        b.second_offset = 101;
        world(vec![(A, up(a)), (B, up(b)), (C, up(slave_of(B, "r2", 130, 5)))])
    }

    fn published(m: u16, slaves: &[u16], at: u16) -> Wanted {
        Wanted { published: Some(addr(at)), ..wanted(m, slaves) }
    }

    #[test]
    fn a_master_back_from_its_aof_is_quarantined_once_dns_sends_clients_elsewhere() {
        // A, the old master, restarted from its AOF: keys, no history to compare.
        let w = after_a_failover(master("fresh", 0, 3));
        // Clients still sent to A, or nobody knows: refused, as before.
        for wanted in [wanted(B, &[A, C]), published(B, &[A, C], A)] {
            assert!(matches!(plan(&wanted, &w, false), Err(Refusal::WouldLoseData { .. })));
        }
        // DNS already sends them to B: A is fenced and left out, the rest applied.
        let p = plan(&published(B, &[A, C], B), &w, false).unwrap();
        assert_eq!(p.quarantined.len(), 1);
        assert_eq!(p.quarantined[0].node, addr(A));
        assert!(p.quarantined[0].reason.contains("holding 3 keys with no replication history"), "{}", p.quarantined[0].reason);
        assert!(p.quarantined[0].reason.contains("DNS sends clients to 127.0.0.1:7001, not to it"), "{}", p.quarantined[0].reason);
        assert_eq!(actions(&p), ["quarantine 127.0.0.1:7000", "verify 127.0.0.1:7002 follows 127.0.0.1:7001"]);
        // Forced, it is resynced like any other.
        let p = plan(&published(B, &[A, C], B), &w, true).unwrap();
        assert!(p.quarantined.is_empty());
        assert!(actions(&p).contains(&"replicate 127.0.0.1:7000 from 127.0.0.1:7001".to_string()), "{:?}", actions(&p));
    }

    #[test]
    fn a_quarantined_member_already_fenced_changes_nothing() {
        let mut a = master("fresh", 0, 3);
        a.min_replicas_to_write = topology::history::fence_value(0);
        let p = plan(&published(B, &[A, C], B), &after_a_failover(a), false).unwrap();
        assert!(!p.changes_anything(), "{:?}", actions(&p));
        assert_eq!(p.quarantined.iter().map(|q| q.node).collect::<Vec<_>>(), [addr(A)]);
    }

    #[test]
    fn a_healed_old_master_with_writes_after_the_failover_is_quarantined_not_blocking() {
        // A kept taking writes up to 150 on r1 after B was promoted at 100.
        let w = after_a_failover(master("r1", 150, 6));
        let p = plan(&published(B, &[A, C], B), &w, false).unwrap();
        assert!(p.quarantined[0].reason.contains("lacks 50 bytes of its replication history r1 (offsets 101..=150)"), "{:?}", p.quarantined);
        // A master that holds nothing the new master lacks rejoins without a word.
        let p = plan(&published(B, &[A, C], B), &after_a_failover(master("r1", 100, 5)), false).unwrap();
        assert!(p.quarantined.is_empty());
        assert_eq!(actions(&p)[..2], ["fence 127.0.0.1:7000", "replicate 127.0.0.1:7000 from 127.0.0.1:7001"]);
    }

    #[test]
    fn moving_clients_away_from_the_master_they_write_to_is_never_made_around_a_quarantine() {
        // B is a slave to promote that cannot catch up with A, which DNS
        // publishes: the move itself would drop A's writes. Refused.
        let a = master("r1", 150, 6);
        let elsewhere = world(vec![(A, up(a.clone())), (B, up(slave_of(C, "r1", 100, 5)))]);
        let other_history = world(vec![(A, up(a)), (B, up(slave_of(A, "r9", 100, 5)))]);
        for w in [elsewhere, other_history] {
            let got = plan(&published(B, &[A], A), &w, false);
            assert!(matches!(got, Err(Refusal::WouldLoseData { .. })), "{:?}", got.map(|p| actions(&p)));
        }
    }

    #[test]
    fn a_quarantined_member_does_not_block_the_next_failover() {
        // After a first failover to B, A came back from its AOF and was
        // quarantined; now B died too, and C is promoted while DNS still names B.
        let mut a = master("fresh", 0, 3);
        a.min_replicas_to_write = topology::history::fence_value(0);
        let w = world(vec![(A, up(a)), (B, down()), (C, up(slave_of(B, "r2", 130, 5)))]);
        let p = plan(&published(C, &[B, A], B), &w, false).unwrap();
        assert_eq!(p.quarantined.iter().map(|q| q.node).collect::<Vec<_>>(), [addr(A)]);
        assert_eq!(actions(&p), ["promote 127.0.0.1:7002"]);
        assert_eq!(p.unreachable, [addr(B)]);
    }

    #[test]
    fn a_fenced_masters_pings_after_its_fence_point_are_not_writes() {
        // B was promoted from A at 100; A, fenced at 100, kept pinging its slave C.
        let mut b = master("r2", 130, 5);
        b.replid2 = "r1".into();
        b.second_offset = 101;
        let mut a = master("r1", 114, 5);
        a.min_replicas_to_write = topology::history::fence_value(100);
        let w = world(vec![(A, up(a.clone())), (B, up(b.clone())), (C, up(slave_of(A, "r1", 114, 5)))]);
        let p = plan(&wanted(B, &[A, C]), &w, false).unwrap();
        assert!(actions(&p).contains(&"replicate 127.0.0.1:7000 from 127.0.0.1:7001".to_string()), "{:?}", actions(&p));
        // Fenced at 110 instead, it held writes up to 110 that B never had.
        a.min_replicas_to_write = topology::history::fence_value(110);
        let w = world(vec![(A, up(a.clone())), (B, up(b.clone()))]);
        assert!(plan(&wanted(B, &[A]), &w, false).unwrap_err().to_string().contains("offsets 101..=110, fenced at offset 110"));
        // A fence with no recorded point: every byte counts.
        let w = world(vec![(A, up(fenced(master("r1", 114, 5)))), (B, up(b))]);
        assert!(plan(&wanted(B, &[A]), &w, false).is_err());
    }

    #[test]
    fn a_slave_that_takes_writes_is_made_read_only() {
        let mut b = slave_of(A, "r1", 100, 5);
        b.replica_read_only = false;
        let w = world(vec![(A, up(master("r1", 100, 5))), (B, up(b))]);
        let p = plan(&wanted(A, &[B]), &w, false).unwrap();
        assert_eq!(actions(&p)[0], "replicate 127.0.0.1:7001 from 127.0.0.1:7000");
    }

    #[test]
    fn every_plan_fences_before_promoting_and_promotes_before_repointing() {
        // Exhaustive over small worlds: each of 3 nodes is a master or a slave of
        // another, with or without data, fenced or not, and any of them may be the
        // wanted master. Whatever the planner returns must respect the ordering.
        let states = |port: u16| {
            let others: Vec<u16> = [A, B, C].into_iter().filter(|p| *p != port).collect();
            let mut v = vec![master("r1", 100, 5), master("own", 0, 0), fenced(master("r1", 100, 5))];
            for o in others {
                v.push(slave_of(o, "r1", 100, 5));
                v.push(slave_of(o, "r1", 50, 5));
                v.push(fenced(slave_of(o, "r1", 100, 5)));
            }
            v
        };
        let mut checked = 0;
        for a in states(A) {
            for b in states(B) {
                for c in states(C) {
                    let w = world(vec![(A, up(a.clone())), (B, up(b.clone())), (C, up(c.clone()))]);
                    for (m, s) in [(A, [B, C]), (B, [A, C]), (C, [A, B])] {
                        for force in [false, true] {
                            let Ok(p) = plan(&wanted(m, &s), &w, force) else { continue };
                            checked += 1;
                            let pos = |pred: &dyn Fn(&Step) -> bool| p.steps.iter().position(pred);
                            let last_fence = p.steps.iter().rposition(|s| matches!(s, Step::Fence { .. }));
                            let promote = pos(&|s| matches!(s, Step::Promote { .. }));
                            let first_replicate = pos(&|s| matches!(s, Step::Replicate { .. }));
                            if let (Some(f), Some(pr)) = (last_fence, promote) {
                                assert!(f < pr, "fence after promote: {:?}", actions(&p));
                            }
                            if let (Some(pr), Some(r)) = (promote, first_replicate) {
                                assert!(pr < r, "repoint before promote: {:?}", actions(&p));
                            }
                            // Every demoted master is fenced, and released only after re-pointing.
                            for step in &p.steps {
                                if let Step::Release { node } = step {
                                    let rel = pos(&|s| s == step).unwrap();
                                    if let Some(rep) = pos(&|s| matches!(s, Step::Replicate { node: n, .. } if n == node)) {
                                        assert!(rep < rel, "{:?}", actions(&p));
                                    }
                                }
                            }
                            // Running the plan's result again would change nothing: every
                            // slave ends pointing at the master.
                            for s in &s {
                                let Some(r) = w.get(&addr(*s)).and_then(Observed::replication) else { continue };
                                let repointed = p.steps.contains(&Step::Replicate { node: addr(*s), master: addr(m) });
                                assert!(repointed || (!r.is_master() && r.upstream() == Some(addr(m))), "{:?}", actions(&p));
                            }
                            // Never lose data silently.
                            if !force {
                                assert!(p.overridden.is_empty());
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 500, "only {checked} plans checked");
    }

    mod property {
        //! Over random worlds of three nodes (role, upstream, replid, replid2,
        //! offset, second offset, keys, fence, reachability), the planner is
        //! checked against a model that counts bytes one by one: a plan it makes
        //! without force never discards a write the group has and the new master
        //! lacks, and it never refuses when nothing would be lost.

        use super::*;
        use proptest::prelude::*;
        use std::collections::HashSet;

        const IDS: [&str; 3] = ["r1", "r2", "r3"];
        const NONE: &str = "0000000000000000000000000000000000000000";

        #[derive(Debug, Clone)]
        enum Fence {
            None,
            Plain,
            At(u64),
        }

        /// One node, or `None` when unreachable.
        fn node(me: u16) -> impl Strategy<Value = Option<Replication>> {
            let others: Vec<u16> = [A, B, C].into_iter().filter(|p| *p != me).collect();
            let upstream = prop_oneof![Just(None), proptest::sample::select(others).prop_map(Some)];
            let history = (0..3usize, 0..4usize, 0..=6u64).prop_flat_map(|(id, id2, offset)| {
                let second = if id2 == 0 { Just(-1i64).boxed() } else { (1..=offset as i64 + 1).boxed() };
                (Just(id), Just(id2), Just(offset), second)
            });
            let fence = |offset: u64| prop_oneof![Just(Fence::None), Just(Fence::Plain), (0..=offset).prop_map(Fence::At)];
            (any::<bool>(), upstream, history, prop_oneof![Just(0u64), Just(3u64)])
                .prop_flat_map(move |(reachable, upstream, (id, id2, offset, second), keys)| {
                    (Just((reachable, upstream, id, id2, offset, second, keys)), fence(offset))
                })
                .prop_map(|((reachable, upstream, id, id2, offset, second, keys), fence)| {
                    reachable.then(|| {
                        let replid2 = if id2 == 0 || IDS[id2 - 1] == IDS[id] { NONE } else { IDS[id2 - 1] };
                        let mut r = match upstream {
                            None => master(IDS[id], offset, keys),
                            Some(u) => slave_of(u, IDS[id], offset, keys),
                        };
                        r.replid2 = replid2.into();
                        r.second_offset = if replid2 == NONE { -1 } else { second };
                        r.min_replicas_to_write = match fence {
                            Fence::None => 0,
                            Fence::Plain => FENCE_MIN_REPLICAS,
                            Fence::At(p) => topology::history::fence_value(p),
                        };
                        r
                    })
                })
        }

        /// Every (id, offset) name of every byte of `r`'s history up to `upto`.
        fn names(r: &Replication, upto: u64) -> Vec<HashSet<(String, u64)>> {
            (1..=upto.min(r.offset))
                .map(|o| {
                    let mut n = HashSet::from([(r.replid.clone(), o)]);
                    if r.replid2 != NONE && (o as i64) < r.second_offset {
                        n.insert((r.replid2.clone(), o));
                    }
                    n
                })
                .collect()
        }

        /// Where a master's writes end: its fence point, if the fence records one.
        fn written_upto(r: &Replication) -> u64 {
            let residue = r.min_replicas_to_write.checked_sub(FENCE_MIN_REPLICAS + 1);
            match residue {
                // Offsets here are far below the fence's modulus: the residue is the point.
                Some(p) if u64::from(p) <= r.offset && r.is_master() => u64::from(p),
                _ => r.offset,
            }
        }

        /// Does the plan discard a write some reachable member has and the new
        /// master will not have once the plan ran? Counted byte by byte.
        fn loses_a_write(w: &HashMap<SocketAddr, Observed>, new: SocketAddr, catch_up: Option<SocketAddr>) -> bool {
            let n = w[&new].replication().unwrap();
            let mut held: HashSet<(String, u64)> = names(n, n.offset).into_iter().flatten().collect();
            if let Some(from) = catch_up {
                let s = w[&from].replication().unwrap();
                held.extend(names(s, s.offset).into_iter().flatten());
            }
            let lacks = |bytes: Vec<HashSet<(String, u64)>>| bytes.iter().any(|b| b.is_disjoint(&held));
            w.iter().filter(|(a, _)| **a != new && Some(**a) != catch_up).any(|(_, o)| {
                let Some(y) = o.replication() else { return false };
                if y.is_master() {
                    // A master's writes: its history to its fence point, or its keys
                    // when it has no history to show for them.
                    let upto = written_upto(y);
                    y.keys > 0 && (lacks(names(y, upto)) || upto == 0)
                } else {
                    // A slave's bytes matter only while the new master has nobody
                    // to catch up from, and only on a history the two share.
                    let shares = y.replid == n.replid || names(y, y.offset).iter().any(|b| !b.is_disjoint(&held));
                    !n.is_master() && catch_up.is_none() && shares && lacks(names(y, y.offset))
                }
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

            #[test]
            fn no_plan_discards_a_write_and_no_refusal_is_needless(a in node(A), b in node(B), c in node(C), m in 0..3usize, published in proptest::option::of(0..3usize)) {
                let nodes = [(A, a), (B, b), (C, c)];
                let w: HashMap<SocketAddr, Observed> = nodes.iter().map(|(p, r)| {
                    (addr(*p), r.clone().map_or_else(down, up))
                }).collect();
                let ports = [A, B, C];
                let new = ports[m];
                let slaves: Vec<u16> = ports.into_iter().filter(|p| *p != new).collect();
                let published = published.map(|i| addr(ports[i]));
                let wanted = Wanted { published, ..wanted(new, &slaves) };
                match plan(&wanted, &w, false) {
                    Err(Refusal::MasterUnreachable { .. }) => prop_assert!(w[&addr(new)].replication().is_none()),
                    Err(Refusal::WouldLoseData { reasons, quarantine }) => {
                        // With force, the same world is planned; it must lose what the refusal said.
                        let forced = plan(&wanted, &w, true).unwrap();
                        let catch_up = forced.steps.iter().find_map(|s| match s { Step::CatchUp { from, .. } => Some(*from), _ => None });
                        prop_assert!(loses_a_write(&w, addr(new), catch_up), "needless refusal: {reasons:?}");
                        for q in quarantine {
                            prop_assert!(w[&q].replication().is_some_and(Replication::is_master), "quarantined a slave");
                        }
                    }
                    Ok(p) => {
                        let catch_up = p.steps.iter().find_map(|s| match s { Step::CatchUp { from, .. } => Some(*from), _ => None });
                        // Quarantined members are left as they are: judge the rest.
                        let left_out: Vec<SocketAddr> = p.quarantined.iter().map(|q| q.node).collect();
                        let rest: HashMap<SocketAddr, Observed> = w.iter().filter(|(a, _)| !left_out.contains(a)).map(|(a, o)| (*a, o.clone())).collect();
                        prop_assert!(!loses_a_write(&rest, addr(new), catch_up), "discards a write: {:?}", actions(&p));
                        for q in &left_out {
                            // Only a master clients are not sent to, never needlessly.
                            prop_assert!(published.is_some_and(|p| p != *q), "quarantined {q}, which DNS publishes or nobody knows");
                            prop_assert!(w[q].replication().is_some_and(Replication::is_master), "quarantined a slave");
                            let pair: HashMap<SocketAddr, Observed> = w.iter().filter(|(a, _)| **a == addr(new) || *a == q).map(|(a, o)| (*a, o.clone())).collect();
                            prop_assert!(loses_a_write(&pair, addr(new), None), "needless quarantine of {q}");
                            // Left as it is but fenced: nothing demotes, re-points or releases it.
                            for step in p.steps.iter().filter(|s| s.node() == *q) {
                                prop_assert!(matches!(step, Step::Quarantine { .. }), "{step} on quarantined {q}");
                            }
                        }
                    }
                }
            }

            /// With a durability setting, every member the plan keeps ends with it,
            /// and the new master has it before it is promoted; without one, no
            /// member's write settings are touched beyond its fence.
            #[test]
            fn every_member_kept_ends_with_the_groups_durability(
                a in node(A), b in node(B), c in node(C), m in 0..3usize, published in proptest::option::of(0..3usize),
                durability in proptest::option::of(proptest::sample::select(vec![(0u32, 10u32), (1, 10), (1, 2), (2, 1)])),
            ) {
                let nodes = [(A, a), (B, b), (C, c)];
                let w: HashMap<SocketAddr, Observed> = nodes.iter().map(|(p, r)| (addr(*p), r.clone().map_or_else(down, up))).collect();
                let ports = [A, B, C];
                let new = addr(ports[m]);
                let slaves: Vec<u16> = ports.into_iter().filter(|p| addr(*p) != new).collect();
                let durability = durability.map(|(n, lag)| Durability { min_replicas_to_write: n, min_replicas_max_lag: lag });
                let wanted = Wanted { published: published.map(|i| addr(ports[i])), durability, ..wanted(ports[m], &slaves) };
                let Ok(p) = plan(&wanted, &w, true) else { return Ok(()) };
                prop_assert_eq!(p.durability, durability);
                let sets = |s: &Step| matches!(s, Step::AllowWrites { .. } | Step::Release { .. } | Step::Durability { .. });
                let Some(d) = durability else {
                    prop_assert!(!p.steps.iter().any(|s| matches!(s, Step::Durability { .. })), "{:?}", actions(&p));
                    return Ok(());
                };
                for (addr, o) in &w {
                    let Some(r) = o.replication() else { continue };
                    if p.quarantined.iter().any(|q| q.node == *addr) || !wanted.members().any(|m| m == *addr) {
                        continue;
                    }
                    let has = r.min_replicas_to_write == d.min_replicas_to_write && r.min_replicas_max_lag == d.min_replicas_max_lag;
                    let set = p.steps.iter().filter(|s| s.node() == *addr && sets(s)).count();
                    prop_assert!(has || set > 0, "{addr} keeps {}/{}: {:?}", r.min_replicas_to_write, r.min_replicas_max_lag, actions(&p));
                    prop_assert!(set <= 1, "{addr} set twice: {:?}", actions(&p));
                    prop_assert!(!has || set == 0 || r.is_fenced() || r.is_master(), "needless step on {addr}: {:?}", actions(&p));
                }
                let position = |f: &dyn Fn(&Step) -> bool| p.steps.iter().position(f);
                if let Some(promote) = position(&|s| matches!(s, Step::Promote { .. })) {
                    let first_write_setting = position(&|s| s.node() == new && sets(s));
                    let has = w[&new].replication().is_some_and(|r| r.min_replicas_to_write == d.min_replicas_to_write && r.min_replicas_max_lag == d.min_replicas_max_lag);
                    prop_assert!(has || first_write_setting.is_some_and(|i| i < promote), "promoted before its durability: {:?}", actions(&p));
                }
            }
        }
    }
}

