//! Automatic failover, the pure part: every rule, with time passed in and no I/O.
//! The worker gathers the facts (etcd registrations, what redis answers) and
//! asks these functions what to do.
//!
//! The rules, in order:
//! - the master named by the topology must have been unhealthy or unregistered in
//!   etcd for `failover_after` (a blip is not a failure) or, when its own port
//!   refuses connections (the host answers, nothing listens: the process is gone),
//!   for `failover_after_refused` (default 0: a timeout may be a pause or a
//!   partition, a refusal is not; and a master that restarts empty must not be
//!   waited for, or its slaves would resync from it and lose everything);
//! - not while the cluster is in maintenance, nor within `cooldown` of the last
//!   automatic failover (no flapping);
//! - a master that answers PING is never failed over, whatever etcd says (a dead
//!   agent or a slow etcd is not a dead master);
//! - only a slave of the topology that is registered, healthy, reachable and not
//!   itself a master (one that restarted empty is) may be promoted;
//! - the candidate is the one with the most data: among those on the master's
//!   replication history, the highest offset; none, no failover;
//! - the old master stays in the topology as a slave, so when it comes back it is
//!   fenced and re-pointed before any client can write to it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use topology::records::NodeRecord;
use topology::{Member, Topology};

/// Settings of the failure detector.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub failover_after: Duration,
    /// The delay instead when the master's port refuses connections.
    pub failover_after_refused: Duration,
    pub cooldown: Duration,
}

/// What etcd says about the master and, when it says down, what the master's
/// own redis answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterSeen {
    /// Registered and healthy: redis is not asked.
    Healthy,
    /// Registered but unhealthy, or not registered at all.
    Down(MasterCheck),
}

/// What the observer's own connection to the master found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCheck {
    /// It answered PING.
    Answers,
    /// Connection refused: nothing listens on the master's port.
    Refused,
    /// A timeout or another error: the master may be paused or partitioned away.
    NoAnswer,
}

/// Whether a registration says the node is serving: registered, and healthy.
pub fn serving(record: Option<&NodeRecord>) -> bool {
    record.is_some_and(|r| r.healthy)
}

/// The failure detector's memory of one cluster between looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailoverClock {
    /// When the master was first seen down (ms since the epoch), while it stays down.
    pub down_since_ms: Option<u64>,
    /// When this cluster last failed over automatically.
    pub last_failover_ms: Option<u64>,
}

/// What to do about the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverDecision {
    /// Healthy: nothing to do.
    Healthy,
    /// Down, but not for long enough yet: look again after this long.
    WaitFor(Duration),
    /// Down for long enough, but failing over is not allowed now.
    Held(Hold),
    /// etcd says down, but it answers PING: not dead, no failover.
    MasterAnswers,
    /// Dead for long enough, and allowed: promote a slave.
    FailOver,
}

/// Why a dead master is not failed over now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Maintenance,
    Cooldown { since_last: Duration, cooldown: Duration },
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Maintenance => f.write_str("the cluster is in maintenance: automatic failover is paused"),
            Hold::Cooldown { since_last, cooldown } => write!(
                f,
                "the last automatic failover was {:.1} s ago; the cooldown is {} s",
                since_last.as_secs_f64(),
                cooldown.as_secs()
            ),
        }
    }
}

impl FailoverClock {
    /// Updates the clock with what was seen and decides. The PING veto comes
    /// last: a master that answers but stays down in etcd is held and logged like
    /// any other, and asked again at every look.
    pub fn assess(&mut self, seen: MasterSeen, policy: &Policy, maintenance: bool, now_ms: u64) -> FailoverDecision {
        let check = match seen {
            MasterSeen::Healthy => {
                self.down_since_ms = None;
                return FailoverDecision::Healthy;
            }
            MasterSeen::Down(check) => check,
        };
        let since = *self.down_since_ms.get_or_insert(now_ms);
        let down_for = Duration::from_millis(now_ms.saturating_sub(since));
        let delay = match check {
            MasterCheck::Refused => policy.failover_after_refused.min(policy.failover_after),
            MasterCheck::Answers | MasterCheck::NoAnswer => policy.failover_after,
        };
        if down_for < delay {
            return FailoverDecision::WaitFor(delay - down_for);
        }
        if maintenance {
            return FailoverDecision::Held(Hold::Maintenance);
        }
        if let Some(last) = self.last_failover_ms {
            let since_last = Duration::from_millis(now_ms.saturating_sub(last));
            if since_last < policy.cooldown {
                return FailoverDecision::Held(Hold::Cooldown { since_last, cooldown: policy.cooldown });
            }
        }
        if check == MasterCheck::Answers {
            return FailoverDecision::MasterAnswers;
        }
        FailoverDecision::FailOver
    }

    /// A new topology was written: the cooldown starts, and the new master's
    /// down clock starts clean.
    pub fn failed_over(&mut self, now_ms: u64) {
        self.last_failover_ms = Some(now_ms);
        self.down_since_ms = None;
    }
}

/// What the observer found about one slave named by the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveFacts {
    pub member: Member,
    /// Its node-agent's registration says it is serving.
    pub registered_healthy: bool,
    /// What its redis answered; `None`: unreachable.
    pub replication: Option<SlaveReplication>,
}

/// A slave's replication state, as its redis reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveReplication {
    pub replid: String,
    pub offset: u64,
    /// It reports itself a master (e.g. it restarted empty).
    pub is_master: bool,
    /// The master it replicates from, when that is an IP literal.
    pub upstream: Option<SocketAddr>,
}

/// A slave as its redis answered (unreachable slaves are not candidates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Index in the topology's `slaves`.
    pub index: usize,
    pub replid: String,
    pub offset: u64,
    /// It replicates from the dead master (same history, for certain).
    pub follows_master: bool,
    /// Eligible: registered and healthy, and not itself a master.
    pub healthy: bool,
}

/// The reachable slaves of the topology, as candidates. Facts about members the
/// topology does not list as slaves are ignored; an unreachable slave is no
/// candidate; one that reports itself a master (it restarted empty) or is not
/// registered healthy stays listed but ineligible, so the reason for "no
/// failover" can count it as reachable.
pub fn candidates(topology: &Topology, master: Option<SocketAddr>, slaves: &[SlaveFacts]) -> Vec<Candidate> {
    let mut found: Vec<Candidate> = slaves
        .iter()
        .filter_map(|slave| {
            let index = topology.slaves.iter().position(|m| *m == slave.member)?;
            let replication = slave.replication.as_ref()?;
            Some(Candidate {
                index,
                replid: replication.replid.clone(),
                offset: replication.offset,
                follows_master: master.is_some() && replication.upstream == master,
                healthy: slave.registered_healthy && !replication.is_master,
            })
        })
        .collect();
    found.sort_by_key(|c| c.index);
    found
}

/// The slave to promote: healthy, and the furthest along the master's history.
/// Slaves that follow the dead master define that history; without any, the
/// furthest healthy slave on the most common history.
pub fn choose(candidates: &[Candidate]) -> Option<&Candidate> {
    let healthy: Vec<&Candidate> = candidates.iter().filter(|c| c.healthy).collect();
    let history = healthy
        .iter()
        .filter(|c| c.follows_master)
        .max_by_key(|c| c.offset)
        .map(|c| c.replid.clone())
        .or_else(|| {
            let mut counts: Vec<(&str, usize)> = Vec::new();
            for c in &healthy {
                match counts.iter_mut().find(|(r, _)| *r == c.replid) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((&c.replid, 1)),
                }
            }
            counts.into_iter().max_by_key(|(_, n)| *n).map(|(r, _)| r.to_string())
        })?;
    healthy
        .into_iter()
        .filter(|c| c.replid == history)
        .max_by_key(|c| (c.offset, std::cmp::Reverse(c.index)))
}

/// The topology after failing over to `slaves[chosen]`: it becomes the master,
/// and the old master becomes the last slave.
pub fn promote(topology: &Topology, chosen: usize) -> Option<Topology> {
    let master = topology.slaves.get(chosen)?.clone();
    let mut slaves: Vec<Member> =
        topology.slaves.iter().enumerate().filter(|(i, _)| *i != chosen).map(|(_, m)| m.clone()).collect();
    slaves.push(topology.master.clone());
    Topology::new(master, slaves).ok()
}

/// A failover to write: the new topology, and what to tell operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub topology: Topology,
    pub old_master: Member,
    /// The promoted slave's replication offset when it was chosen.
    pub offset: u64,
}

/// The summary recorded as `failover` in `/status/<cluster>`.
impl fmt::Display for Promotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "master {} down for longer than the failover delay; promoting {} (offset {})",
            self.old_master, self.topology.master, self.offset
        )
    }
}

/// Why a dead master cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPromotion {
    #[error("master {master} is down and no healthy slave can be promoted ({reachable} reachable)")]
    NoCandidate { master: Member, reachable: usize },
    #[error("cannot build the new topology")]
    NoTopology,
}

/// Whom to promote in place of the dead master at `master`, given what the
/// slaves answered.
pub fn plan(topology: &Topology, master: Option<SocketAddr>, slaves: &[SlaveFacts]) -> Result<Promotion, NoPromotion> {
    let candidates = candidates(topology, master, slaves);
    let chosen = choose(&candidates)
        .ok_or_else(|| NoPromotion::NoCandidate { master: topology.master.clone(), reachable: candidates.len() })?;
    let new = promote(topology, chosen.index).ok_or(NoPromotion::NoTopology)?;
    Ok(Promotion { topology: new, old_master: topology.master.clone(), offset: chosen.offset })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            failover_after: Duration::from_millis(1000),
            failover_after_refused: Duration::ZERO,
            cooldown: Duration::from_secs(60),
        }
    }

    const N: MasterSeen = MasterSeen::Down(MasterCheck::NoAnswer);
    const REFUSED: MasterSeen = MasterSeen::Down(MasterCheck::Refused);
    const ANSWERS: MasterSeen = MasterSeen::Down(MasterCheck::Answers);
    const OK: MasterSeen = MasterSeen::Healthy;
    use FailoverDecision::*;

    fn held_for(decision: FailoverDecision, reason: &str) -> bool {
        matches!(decision, Held(hold) if hold.to_string().contains(reason))
    }

    #[test]
    fn waits_for_the_master_to_stay_down() {
        let mut w = FailoverClock::default();
        assert_eq!(w.assess(OK, &policy(), false, 0), Healthy);
        assert_eq!(w.assess(N, &policy(), false, 10_000), WaitFor(Duration::from_millis(1000)));
        assert_eq!(w.assess(N, &policy(), false, 10_400), WaitFor(Duration::from_millis(600)));
        assert_eq!(w.assess(N, &policy(), false, 11_000), FailOver);
        // A blip resets the clock.
        assert_eq!(w.assess(OK, &policy(), false, 11_100), Healthy);
        assert_eq!(w.assess(N, &policy(), false, 11_200), WaitFor(Duration::from_millis(1000)));
    }

    #[test]
    fn a_refused_port_needs_no_waiting_but_still_respects_the_holds() {
        let mut w = FailoverClock::default();
        assert_eq!(w.assess(REFUSED, &policy(), false, 10_000), FailOver);
        let mut w = FailoverClock::default();
        assert!(matches!(w.assess(REFUSED, &policy(), true, 10_000), Held(_)));
        let slow = Policy { failover_after_refused: Duration::from_millis(300), ..policy() };
        let mut w = FailoverClock::default();
        assert_eq!(w.assess(REFUSED, &slow, false, 0), WaitFor(Duration::from_millis(300)));
        // Never longer than the ordinary delay.
        let odd = Policy { failover_after_refused: Duration::from_secs(5), ..policy() };
        let mut w = FailoverClock::default();
        assert_eq!(w.assess(REFUSED, &odd, false, 0), WaitFor(Duration::from_millis(1000)));
    }

    #[test]
    fn maintenance_and_cooldown_hold_it() {
        let mut w = FailoverClock { down_since_ms: Some(0), last_failover_ms: None };
        assert!(held_for(w.assess(N, &policy(), true, 5_000), "maintenance"));
        w.last_failover_ms = Some(4_000);
        assert!(held_for(w.assess(N, &policy(), false, 5_000), "cooldown"));
        assert_eq!(w.assess(N, &policy(), false, 64_001), FailOver);
    }

    #[test]
    fn the_cooldown_ends_exactly_when_it_has_run() {
        let mut w = FailoverClock { down_since_ms: Some(0), last_failover_ms: Some(4_000) };
        assert!(held_for(w.assess(N, &policy(), false, 63_999), "cooldown"));
        assert_eq!(w.assess(N, &policy(), false, 64_000), FailOver);
    }

    #[test]
    fn without_a_slave_of_the_dead_master_the_most_common_history_wins_over_the_furthest() {
        let c = |index, replid: &str, offset| Candidate { index, replid: replid.into(), offset, follows_master: false, healthy: true };
        // One slave far along another history, two on the common one.
        let candidates = [c(0, "other", 100), c(1, "common", 10), c(2, "common", 20)];
        assert_eq!(choose(&candidates).map(|c| c.index), Some(2));
    }

    #[test]
    fn holds_read_as_before() {
        assert_eq!(Hold::Maintenance.to_string(), "the cluster is in maintenance: automatic failover is paused");
        let cooldown = Hold::Cooldown { since_last: Duration::from_millis(1_300), cooldown: Duration::from_secs(60) };
        assert_eq!(cooldown.to_string(), "the last automatic failover was 1.3 s ago; the cooldown is 60 s");
    }

    #[test]
    fn a_master_that_answers_ping_is_not_dead_whatever_its_agent_says() {
        let mut w = FailoverClock::default();
        assert_eq!(w.assess(ANSWERS, &policy(), false, 10_000), WaitFor(Duration::from_millis(1000)));
        assert_eq!(w.assess(ANSWERS, &policy(), false, 11_000), MasterAnswers);
        // The clock keeps running: once it stops answering, no new wait.
        assert_eq!(w.assess(N, &policy(), false, 11_500), FailOver);
    }

    #[test]
    fn the_holds_are_reported_before_the_ping_veto() {
        let mut w = FailoverClock { down_since_ms: Some(0), last_failover_ms: None };
        assert!(held_for(w.assess(ANSWERS, &policy(), true, 5_000), "maintenance"));
        w.last_failover_ms = Some(4_000);
        assert!(held_for(w.assess(ANSWERS, &policy(), false, 5_000), "cooldown"));
    }

    #[test]
    fn a_failover_starts_the_cooldown_and_a_clean_down_clock() {
        let mut w = FailoverClock { down_since_ms: Some(0), last_failover_ms: None };
        w.failed_over(5_000);
        assert_eq!(w, FailoverClock { down_since_ms: None, last_failover_ms: Some(5_000) });
        assert!(held_for(w.assess(REFUSED, &policy(), false, 6_000), "cooldown"));
    }

    #[test]
    fn a_registration_serves_only_when_it_says_healthy() {
        let record = |healthy| NodeRecord {
            address: "10.0.0.1".into(),
            port: 6379,
            role: topology::records::Role::Master,
            repl_offset: 0,
            run_id: "r".into(),
            healthy,
            updated_ms: 0,
            upstream: None,
        };
        assert!(serving(Some(&record(true))));
        assert!(!serving(Some(&record(false))));
        assert!(!serving(None), "an expired lease is no registration");
    }

    fn cand(index: usize, replid: &str, offset: u64, follows: bool, healthy: bool) -> Candidate {
        Candidate { index, replid: replid.into(), offset, follows_master: follows, healthy }
    }

    #[test]
    fn chooses_the_furthest_healthy_slave_of_the_master() {
        let c = [cand(0, "r1", 100, true, true), cand(1, "r1", 120, true, true), cand(2, "r1", 150, true, false)];
        assert_eq!(choose(&c).map(|c| c.index), Some(1), "unhealthy ones are never chosen");
        // A slave on another history is ignored even if further along.
        let c = [cand(0, "r1", 100, true, true), cand(1, "other", 900, false, true)];
        assert_eq!(choose(&c).map(|c| c.index), Some(0));
        // Ties go to the first listed.
        let c = [cand(0, "r1", 100, true, true), cand(1, "r1", 100, true, true)];
        assert_eq!(choose(&c).map(|c| c.index), Some(0));
        // Nobody follows the master (links already reset): the most common history.
        let c = [cand(0, "r1", 100, false, true), cand(1, "r1", 90, false, true), cand(2, "x", 500, false, true)];
        assert_eq!(choose(&c).map(|c| c.index), Some(0));
        assert_eq!(choose(&[cand(0, "r1", 1, true, false)]), None, "no healthy candidate, no failover");
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn the_old_master_stays_as_a_slave() {
        let t: Topology = r#"{"master":{"address":"a"},"slaves":[{"address":"b"},{"address":"c"}]}"#.parse().unwrap();
        let after = promote(&t, 1).unwrap();
        assert_eq!(after.to_json(), r#"{"master":{"address":"c"},"slaves":[{"address":"b"},{"address":"a"}]}"#);
        assert!(promote(&t, 5).is_none());
    }

    fn topology() -> Topology {
        r#"{"master":{"address":"10.0.0.1"},"slaves":[{"address":"10.0.0.2"},{"address":"10.0.0.3"}]}"#.parse().unwrap()
    }

    const MASTER: &str = "10.0.0.1:6379";

    fn facts(address: &str, registered_healthy: bool, offset: Option<u64>) -> SlaveFacts {
        SlaveFacts {
            member: Member::parse_host_port(address).unwrap(),
            registered_healthy,
            replication: offset.map(|offset| SlaveReplication {
                replid: "r1".into(),
                offset,
                is_master: false,
                upstream: MASTER.parse().ok(),
            }),
        }
    }

    #[test]
    fn only_registered_healthy_reachable_slaves_of_the_topology_are_eligible() {
        let master = MASTER.parse().ok();
        let listed = |slaves: &[SlaveFacts]| -> Vec<(usize, bool)> {
            candidates(&topology(), master, slaves).iter().map(|c| (c.index, c.healthy)).collect()
        };
        assert_eq!(listed(&[facts("10.0.0.2", true, Some(5)), facts("10.0.0.3", false, Some(9))]), [(0, true), (1, false)]);
        assert_eq!(listed(&[facts("10.0.0.2", true, None)]), [], "unreachable: no candidate");
        assert_eq!(listed(&[facts("10.0.0.9", true, Some(5))]), [], "not in the topology");
        assert_eq!(listed(&[facts("10.0.0.1", true, Some(5))]), [], "the master is no slave");
        let mut restarted_empty = facts("10.0.0.2", true, Some(0));
        if let Some(r) = restarted_empty.replication.as_mut() {
            r.is_master = true;
            r.upstream = None;
        }
        assert_eq!(listed(&[restarted_empty]), [(0, false)], "a slave that restarted empty is a master");
    }

    #[test]
    fn a_slave_follows_the_master_only_when_its_upstream_is_the_masters_address() {
        let slaves = [facts("10.0.0.2", true, Some(5))];
        assert!(candidates(&topology(), MASTER.parse().ok(), &slaves)[0].follows_master);
        assert!(!candidates(&topology(), "10.0.0.1:7000".parse().ok(), &slaves)[0].follows_master);
        assert!(!candidates(&topology(), None, &slaves)[0].follows_master, "an unknown master is followed by nobody");
    }

    #[test]
    fn the_plan_promotes_the_furthest_eligible_slave_and_says_so() {
        let slaves = [facts("10.0.0.2", true, Some(120)), facts("10.0.0.3", true, Some(100))];
        let promotion = plan(&topology(), MASTER.parse().ok(), &slaves).unwrap();
        assert_eq!(
            promotion.topology.to_json(),
            r#"{"master":{"address":"10.0.0.2"},"slaves":[{"address":"10.0.0.3"},{"address":"10.0.0.1"}]}"#
        );
        assert_eq!(
            promotion.to_string(),
            "master 10.0.0.1 down for longer than the failover delay; promoting 10.0.0.2 (offset 120)"
        );
    }

    #[test]
    fn without_an_eligible_slave_there_is_no_failover_and_the_reason_counts_the_reachable() {
        let slaves = [facts("10.0.0.2", false, Some(120)), facts("10.0.0.3", true, None)];
        let refused = plan(&topology(), MASTER.parse().ok(), &slaves).unwrap_err();
        assert_eq!(refused, NoPromotion::NoCandidate { master: topology().master, reachable: 1 });
        assert_eq!(refused.to_string(), "master 10.0.0.1 is down and no healthy slave can be promoted (1 reachable)");
    }
}
