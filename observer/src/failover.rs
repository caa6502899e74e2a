//! Automatic failover, the pure part: is the master dead long enough, may we
//! act, whom to promote, and the topology to write.
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
//! - the caller then asks redis directly: a reachable master is never failed over,
//!   whatever etcd says (a dead agent or a slow etcd is not a dead master);
//! - the candidate is the reachable slave with the most data: among those on the
//!   master's replication history, the highest offset; none, no failover;
//! - the old master stays in the topology as a slave, so when it comes back it is
//!   fenced and re-pointed before any client can write to it.

use std::time::Duration;

use topology::records::NodeRecord;
use topology::{Member, Topology};

/// What etcd says about the master right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterSeen {
    Healthy,
    /// Registered but unhealthy, or not registered at all.
    Down,
}

/// The worker's memory between looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailoverClock {
    /// When the master was first seen down (ms since the epoch), while it stays down.
    pub down_since_ms: Option<u64>,
    /// When this cluster last failed over automatically.
    pub last_failover_ms: Option<u64>,
}

/// Settings of the failure detector.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub failover_after: Duration,
    /// The delay instead when the master's port refuses connections.
    pub failover_after_refused: Duration,
    pub cooldown: Duration,
}

/// What the observer's own connection attempt to the master found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCheck {
    /// Connection refused: nothing listens on the master's port.
    Refused,
    /// A timeout or another error: the master may be paused or partitioned away.
    NoAnswer,
}

/// What to do about the master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailoverDecision {
    /// Healthy: nothing to do.
    Fine,
    /// Down, but not for long enough yet: look again after this long.
    WaitFor(Duration),
    /// Down for long enough, but failing over is not allowed now (the reason says why).
    Held(String),
    /// Down for long enough: confirm with redis, then fail over.
    Suspect,
}

/// Updates `clock` with what etcd says (and, when it says down, what the
/// observer's own probe found) and decides.
pub fn assess(
    seen: MasterSeen,
    probe: MasterCheck,
    clock: &mut FailoverClock,
    policy: &Policy,
    maintenance: bool,
    now_ms: u64,
) -> FailoverDecision {
    if seen == MasterSeen::Healthy {
        clock.down_since_ms = None;
        return FailoverDecision::Fine;
    }
    let since = *clock.down_since_ms.get_or_insert(now_ms);
    let down_for = Duration::from_millis(now_ms.saturating_sub(since));
    let delay = match probe {
        MasterCheck::Refused => policy.failover_after_refused.min(policy.failover_after),
        MasterCheck::NoAnswer => policy.failover_after,
    };
    if down_for < delay {
        return FailoverDecision::WaitFor(delay - down_for);
    }
    if maintenance {
        return FailoverDecision::Held("the cluster is in maintenance: automatic failover is paused".into());
    }
    if let Some(last) = clock.last_failover_ms {
        let since_last = Duration::from_millis(now_ms.saturating_sub(last));
        if since_last < policy.cooldown {
            return FailoverDecision::Held(format!(
                "the last automatic failover was {:.1} s ago; the cooldown is {} s",
                since_last.as_secs_f64(),
                policy.cooldown.as_secs()
            ));
        }
    }
    FailoverDecision::Suspect
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
    /// Its node-agent reports it healthy.
    pub healthy: bool,
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

/// Whether a registration says the node is serving.
pub fn seen(record: Option<&NodeRecord>) -> MasterSeen {
    match record {
        Some(r) if r.healthy => MasterSeen::Healthy,
        _ => MasterSeen::Down,
    }
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

    const N: MasterCheck = MasterCheck::NoAnswer;

    #[test]
    fn waits_for_the_master_to_stay_down() {
        let mut w = FailoverClock::default();
        assert_eq!(assess(MasterSeen::Healthy, N, &mut w, &policy(), false, 0), FailoverDecision::Fine);
        assert_eq!(assess(MasterSeen::Down, N, &mut w, &policy(), false, 10_000), FailoverDecision::WaitFor(Duration::from_millis(1000)));
        assert_eq!(assess(MasterSeen::Down, N, &mut w, &policy(), false, 10_400), FailoverDecision::WaitFor(Duration::from_millis(600)));
        assert_eq!(assess(MasterSeen::Down, N, &mut w, &policy(), false, 11_000), FailoverDecision::Suspect);
        // A blip resets the clock.
        assert_eq!(assess(MasterSeen::Healthy, N, &mut w, &policy(), false, 11_100), FailoverDecision::Fine);
        assert_eq!(assess(MasterSeen::Down, N, &mut w, &policy(), false, 11_200), FailoverDecision::WaitFor(Duration::from_millis(1000)));
    }

    #[test]
    fn a_refused_port_needs_no_waiting_but_still_respects_the_holds() {
        let mut w = FailoverClock::default();
        assert_eq!(assess(MasterSeen::Down, MasterCheck::Refused, &mut w, &policy(), false, 10_000), FailoverDecision::Suspect);
        let mut w = FailoverClock::default();
        assert!(matches!(assess(MasterSeen::Down, MasterCheck::Refused, &mut w, &policy(), true, 10_000), FailoverDecision::Held(_)));
        let slow = Policy { failover_after_refused: Duration::from_millis(300), ..policy() };
        let mut w = FailoverClock::default();
        assert_eq!(assess(MasterSeen::Down, MasterCheck::Refused, &mut w, &slow, false, 0), FailoverDecision::WaitFor(Duration::from_millis(300)));
        // Never longer than the ordinary delay.
        let odd = Policy { failover_after_refused: Duration::from_secs(5), ..policy() };
        let mut w = FailoverClock::default();
        assert_eq!(assess(MasterSeen::Down, MasterCheck::Refused, &mut w, &odd, false, 0), FailoverDecision::WaitFor(Duration::from_millis(1000)));
    }

    #[test]
    fn maintenance_and_cooldown_hold_it() {
        let mut w = FailoverClock { down_since_ms: Some(0), last_failover_ms: None };
        assert!(matches!(assess(MasterSeen::Down, N, &mut w, &policy(), true, 5_000), FailoverDecision::Held(r) if r.contains("maintenance")));
        w.last_failover_ms = Some(4_000);
        assert!(matches!(assess(MasterSeen::Down, N, &mut w, &policy(), false, 5_000), FailoverDecision::Held(r) if r.contains("cooldown")));
        assert_eq!(assess(MasterSeen::Down, N, &mut w, &policy(), false, 64_001), FailoverDecision::Suspect);
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
}
