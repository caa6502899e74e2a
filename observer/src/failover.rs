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
//! - etcd is not the only view: every `probe_every` the observer asks the master
//!   itself, and when it does not answer, looks at what its slaves' agents
//!   registered: each PINGs its slave's master from the slave's host at every
//!   probe (`upstream_down`, [`replicas_lost_master`]). Both sides failing is a
//!   dead machine or a hung redis, and counts as down at once, like a refusal,
//!   without waiting for the agent's lease to expire or its registration to turn
//!   unhealthy. One side alone (the observer cut off from the master, the slaves
//!   still reaching it) is not;
//! - a master that answers PING is never failed over, whatever etcd says (a dead
//!   agent or a slow etcd is not a dead master), unless it carries the write fence:
//!   its agent fenced it on losing etcd (`node-agent`'s `self_fence`), so it takes
//!   no writes, and it is failed over like one that does not answer;
//! - only a slave of the topology that is registered, healthy, reachable and not
//!   itself a master (one that restarted empty is) may be promoted;
//! - the candidate is chosen by the dictator's own rule (`topology::history`): it
//!   must hold every byte of the master's history that any reachable slave holds,
//!   eligible or not ([`topology::history::rank`], [`topology::history::discards`]);
//!   the dictator would refuse any other, so none, no failover;
//! - among candidates equally up to date (each holds every byte any reachable
//!   slave holds: history never yields to placement), the one whose host holds
//!   the fewest masters across every group ([`HostLoad`], counted by the worker
//!   from etcd), so losing a machine does not pile its masters onto one
//!   survivor; a candidate on no known host comes after those on known ones, and
//!   ties go to the first listed;
//! - the old master stays in the topology as a slave, so when it comes back it is
//!   fenced and re-pointed before any client can write to it;
//! - the dictator may still refuse (it waits longer for slaves and sees one the
//!   observer could not reach): then the next candidate by the same rule, asked
//!   afresh, or, with none, the topology before the failover ([`after_refusal`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use topology::history::{discards, rank, shares, History};
use topology::records::NodeRecord;
use topology::{Member, Topology};

/// Settings of the failure detector.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub failover_after: Duration,
    /// The delay instead when the master's port refuses connections, or when it
    /// is silent to the observer and to its replicas alike.
    pub failover_after_refused: Duration,
    pub cooldown: Duration,
    /// How often a master etcd says is healthy is asked directly (`None`: never).
    pub probe_every: Option<Duration>,
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
    /// It answered, but carries the write fence: it takes no writes.
    Fenced,
    /// It did not answer, and its slaves cannot reach it either
    /// ([`replicas_lost_master`]).
    Silent,
}

/// What one slave of the topology registered about its master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaveView {
    /// Registered and healthy.
    pub healthy: bool,
    /// It replicates from the topology's master.
    pub follows_master: bool,
    /// Its agent's PING of that master, from the slave's host, went unanswered.
    pub upstream_down: bool,
}

/// Whether the slaves lost their master too: at least one healthy slave follows
/// it, and every healthy slave that follows it says it cannot reach it. A PING is
/// not replicated, so asking adds nothing to the master's history.
pub fn replicas_lost_master(views: &[SlaveView]) -> bool {
    let mut following = views.iter().filter(|v| v.healthy && v.follows_master).peekable();
    following.peek().is_some() && following.all(|v| v.upstream_down)
}

/// What the master looks like from etcd (`registered`: registered and healthy)
/// and from the observer's own look at it (`None`: not asked).
pub fn master_seen(registered: bool, check: Option<MasterCheck>) -> MasterSeen {
    match (registered, check) {
        (false, check) => MasterSeen::Down(check.unwrap_or(MasterCheck::NoAnswer)),
        // etcd says healthy: only both other views together overrule it.
        (true, Some(MasterCheck::Silent)) => MasterSeen::Down(MasterCheck::Silent),
        (true, _) => MasterSeen::Healthy,
    }
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
            MasterCheck::Refused | MasterCheck::Silent => policy.failover_after_refused.min(policy.failover_after),
            MasterCheck::Answers | MasterCheck::NoAnswer | MasterCheck::Fenced => policy.failover_after,
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

/// Topology masters per host, across every group the observer knows
/// ([`topology::placement::masters_per_host`]); a host not listed holds none.
pub type HostLoad = BTreeMap<String, usize>;

/// What the observer found about one slave named by the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveFacts {
    pub member: Member,
    /// The host its node-agent registered, if known.
    pub host: Option<String>,
    /// Its node-agent's registration says it is serving.
    pub registered_healthy: bool,
    /// What its redis answered; `None`: unreachable.
    pub replication: Option<SlaveReplication>,
}

/// A slave's replication state, as its redis reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveReplication {
    pub replid: String,
    /// The history `replid` continues (`master_replid2`), valid below `second_offset`.
    pub replid2: String,
    pub offset: u64,
    pub second_offset: i64,
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
    pub replid2: String,
    pub offset: u64,
    pub second_offset: i64,
    /// It replicates from the dead master (same history, for certain).
    pub follows_master: bool,
    /// Eligible: registered and healthy, not itself a master, and not refused by
    /// the dictator in this failover.
    pub healthy: bool,
    /// The host it runs on, if known: the tie-break among equals.
    pub host: Option<String>,
}

impl Candidate {
    pub fn history(&self) -> History<'_> {
        History { replid: &self.replid, replid2: &self.replid2, offset: self.offset, second_offset: self.second_offset }
    }
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
                replid2: replication.replid2.clone(),
                offset: replication.offset,
                second_offset: replication.second_offset,
                follows_master: master.is_some() && replication.upstream == master,
                healthy: slave.registered_healthy && !replication.is_master,
                host: slave.host.clone(),
            })
        })
        .collect();
    found.sort_by_key(|c| c.index);
    found
}

/// The slave to promote: eligible, and holding every byte of the master's history
/// that any reachable slave holds (eligible or not: the dictator judges them all),
/// so the dictator accepts it. Among several, all equally up to date, the one
/// on the host holding the fewest masters by `load` (a candidate on no known
/// host after the others); ties go to the first listed.
pub fn choose<'a>(candidates: &'a [Candidate], load: &HostLoad) -> Option<&'a Candidate> {
    best(candidates, load).ok()
}

/// [`choose`], or why nobody: `None` without an eligible slave on the master's
/// history, else the best one's index and the bytes it lacks.
fn best<'a>(candidates: &'a [Candidate], load: &HostLoad) -> Result<&'a Candidate, Option<(usize, u64)>> {
    let reference = master_history(candidates).ok_or(None)?;
    // A slave on another history holds no write of this master's.
    let members: Vec<History<'_>> =
        candidates.iter().map(Candidate::history).filter(|m| shares(m, &reference)).collect();
    let eligible = candidates.iter().filter(|c| c.healthy && shares(&c.history(), &reference));
    let ranked = rank(eligible.map(|c| (c, c.history())), &members);
    // What the dictator will find: the bytes of any slave it shares a history with.
    let refused_for = |c: &Candidate| candidates.iter().map(|m| discards(&c.history(), &m.history())).max().unwrap_or(0);
    let first = ranked.first().map(|(c, lacking)| (c.index, (*lacking).max(refused_for(c))));
    // Each acceptable one holds every byte any reachable slave holds: they are
    // equals by history, and only then does placement choose.
    let masters_on = |c: &Candidate| c.host.as_ref().map_or(usize::MAX, |h| load.get(h).copied().unwrap_or(0));
    ranked
        .into_iter()
        .filter(|(c, lacking)| *lacking == 0 && refused_for(c) == 0)
        .map(|(c, _)| c)
        .min_by_key(|c| (masters_on(c), c.index))
        .ok_or(first)
}

/// The history the dead master wrote, as far as a slave holds it: the furthest
/// slave following it; without any (their links already reset), the furthest on
/// the replication id most slaves are on.
fn master_history(candidates: &[Candidate]) -> Option<History<'_>> {
    if let Some(c) = candidates.iter().filter(|c| c.follows_master).max_by_key(|c| c.offset) {
        return Some(c.history());
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for c in candidates {
        match counts.iter_mut().find(|(r, _)| *r == c.replid) {
            Some((_, n)) => *n += 1,
            None => counts.push((&c.replid, 1)),
        }
    }
    let (replid, _) = counts.into_iter().max_by_key(|(_, n)| *n)?;
    candidates.iter().filter(|c| c.replid == replid).max_by_key(|c| c.offset).map(Candidate::history)
}

/// The topology after failing over to `slaves[chosen]`: it becomes the master,
/// and the old master becomes the last slave.
pub fn promote(topology: &Topology, chosen: usize) -> Option<Topology> {
    let master = topology.slaves.get(chosen)?.clone();
    let mut slaves: Vec<Member> =
        topology.slaves.iter().enumerate().filter(|(i, _)| *i != chosen).map(|(_, m)| m.clone()).collect();
    slaves.push(topology.master.clone());
    Topology::new(master, slaves).ok()?.with_durability(topology.durability).ok()
}

/// A failover to write: the new topology, and what to tell operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub topology: Topology,
    pub old_master: Member,
    /// The promoted slave's replication offset when it was chosen.
    pub offset: u64,
    /// Its host, and how many masters that host held when it was chosen.
    pub host: Option<(String, usize)>,
    /// Slaves the dictator refused to promote earlier in this failover, and why.
    pub refused: Vec<(Member, String)>,
}

/// The summary recorded as `failover` in `/status/<cluster>`.
impl fmt::Display for Promotion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "master {} down for longer than the failover delay; promoting {} (offset {})",
            self.old_master, self.topology.master, self.offset
        )?;
        if let Some((host, masters)) = &self.host {
            write!(f, " on host {host}, which held {masters} master(s)")?;
        }
        write_refused(f, &self.refused)
    }
}

fn write_refused(f: &mut fmt::Formatter<'_>, refused: &[(Member, String)]) -> fmt::Result {
    for (member, why) in refused {
        write!(f, "; the dictator refused {member}: {why}")?;
    }
    Ok(())
}

/// Why a dead master cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPromotion {
    #[error("master {master} is down and no healthy slave can be promoted ({reachable} reachable)")]
    NoCandidate { master: Member, reachable: usize },
    /// The best eligible slave lacks writes a reachable slave holds: the dictator
    /// would refuse it.
    #[error(
        "master {master} is down and no healthy slave holds every acknowledged write: the best, {best}, \
         lacks {lacking} bytes of replication history another slave holds"
    )]
    Behind { master: Member, best: Member, lacking: u64 },
    #[error("cannot build the new topology")]
    NoTopology,
}

/// Whom to promote in place of the dead master at `master`, given what the
/// slaves answered and how many masters each host holds.
pub fn plan(topology: &Topology, master: Option<SocketAddr>, slaves: &[SlaveFacts], load: &HostLoad) -> Result<Promotion, NoPromotion> {
    plan_without(topology, master, slaves, load, &[])
}

/// [`plan`], the slaves in `refused` (with the dictator's reasons) no longer eligible.
fn plan_without(
    topology: &Topology,
    master: Option<SocketAddr>,
    slaves: &[SlaveFacts],
    load: &HostLoad,
    refused: &[(Member, String)],
) -> Result<Promotion, NoPromotion> {
    let mut candidates = candidates(topology, master, slaves);
    for c in &mut candidates {
        if refused.iter().any(|(m, _)| topology.slaves.get(c.index) == Some(m)) {
            c.healthy = false;
        }
    }
    let chosen = best(&candidates, load).map_err(|why| match why {
        None => NoPromotion::NoCandidate { master: topology.master.clone(), reachable: candidates.len() },
        Some((index, lacking)) => {
            NoPromotion::Behind { master: topology.master.clone(), best: topology.slaves[index].clone(), lacking }
        }
    })?;
    let new = promote(topology, chosen.index).ok_or(NoPromotion::NoTopology)?;
    let host = chosen.host.clone().map(|h| {
        let masters = load.get(&h).copied().unwrap_or(0);
        (h, masters)
    });
    Ok(Promotion { topology: new, old_master: topology.master.clone(), offset: chosen.offset, host, refused: refused.to_vec() })
}

/// Whether the dictator's answer to applying a failover's topology (its HTTP
/// status and error) means the promoted slave will not do, so trying it again
/// fails the same way: 409 "would lose acknowledged writes" (it lacks writes a
/// member holds), or 502 "master ... is unreachable" (it died since it was chosen).
pub fn refuses_candidate(status: u16, error: &str) -> bool {
    match status {
        409 => error.contains("would lose acknowledged writes"),
        502 => error.starts_with("master ") && error.contains(" is unreachable"),
        _ => false,
    }
}

/// An automatic failover written to etcd and not applied yet: what to fall back
/// on if the dictator refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The topology the failover replaced: its slaves are the candidates, and a
    /// revert writes it back.
    pub previous: Topology,
    /// Where the dead master was reached, to know its followers.
    pub master_addr: Option<SocketAddr>,
    /// The topology written last.
    pub promotion: Promotion,
    /// The etcd mod revision it was written at: only its apply's answer counts.
    pub revision: i64,
    /// Masters per host when the failover was planned: the next candidate is
    /// preferred by the same counts.
    pub load: HostLoad,
}

/// What to do after the dictator refused a failover's candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterRefusal {
    /// Write this topology: the next candidate, the refused ones listed.
    Next(Promotion),
    /// Nobody else will do: write the topology before the failover back.
    Revert(Reverted),
}

/// A failover given up, with why; recorded as `failover` in `/status/<cluster>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reverted {
    pub topology: Topology,
    pub refused: Vec<(Member, String)>,
    pub why: NoPromotion,
}

impl fmt::Display for Reverted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failover of master {} given up, the topology before it restored", self.topology.master)?;
        write_refused(f, &self.refused)?;
        write!(f, "; {}", self.why)
    }
}

/// The dictator refused `attempt`'s candidate for `why`: the next candidate by the
/// same rule, judged on `slaves` as asked again now (facts about the previous
/// topology's slaves), the refused ones excluded; or, without one, the previous
/// topology back. Every refusal excludes a slave, so this ends.
pub fn after_refusal(attempt: &Attempt, why: &str, slaves: &[SlaveFacts]) -> AfterRefusal {
    let mut refused = attempt.promotion.refused.clone();
    refused.push((attempt.promotion.topology.master.clone(), why.to_string()));
    match plan_without(&attempt.previous, attempt.master_addr, slaves, &attempt.load, &refused) {
        Ok(next) => AfterRefusal::Next(next),
        Err(why) => AfterRefusal::Revert(Reverted { topology: attempt.previous.clone(), refused, why }),
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
            probe_every: Some(Duration::from_millis(500)),
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
        let c = |index, replid: &str, offset| cand(index, replid, offset, false, true);
        // One slave far along another history, two on the common one.
        let candidates = [c(0, "other", 100), c(1, "common", 10), c(2, "common", 20)];
        assert_eq!(choose(&candidates, &HostLoad::new()).map(|c| c.index), Some(2));
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
    fn a_master_that_answers_but_fenced_itself_is_failed_over_like_a_silent_one() {
        let fenced = MasterSeen::Down(MasterCheck::Fenced);
        let mut w = FailoverClock::default();
        assert_eq!(w.assess(fenced, &policy(), false, 10_000), WaitFor(Duration::from_millis(1000)));
        assert_eq!(w.assess(fenced, &policy(), false, 11_000), FailOver);
        // Registered and healthy, a fenced master is not failed over: the topology
        // is applied again instead, which lifts the fence.
        assert_eq!(FailoverClock::default().assess(MasterSeen::Healthy, &policy(), false, 0), Healthy);
    }

    #[test]
    fn the_slaves_lost_their_master_only_when_every_healthy_follower_says_so() {
        let view = |healthy, follows_master, upstream_down| SlaveView { healthy, follows_master, upstream_down };
        assert!(!replicas_lost_master(&[]), "no slave: no second view");
        assert!(replicas_lost_master(&[view(true, true, true)]));
        assert!(replicas_lost_master(&[view(true, true, true), view(true, true, true)]));
        assert!(!replicas_lost_master(&[view(true, true, true), view(true, true, false)]), "one still reaches it");
        assert!(!replicas_lost_master(&[view(true, true, false)]));
        // Only healthy slaves that follow the master count.
        assert!(replicas_lost_master(&[view(true, true, true), view(false, true, false), view(true, false, false)]));
        assert!(!replicas_lost_master(&[view(false, true, true), view(true, false, true)]), "nobody who counts");
    }

    #[test]
    fn etcd_saying_healthy_is_overruled_only_by_a_refusal_or_silence_on_both_sides() {
        use MasterCheck::*;
        assert_eq!(master_seen(true, None), MasterSeen::Healthy);
        assert_eq!(master_seen(true, Some(Answers)), MasterSeen::Healthy);
        assert_eq!(master_seen(true, Some(NoAnswer)), MasterSeen::Healthy, "the observer alone may be cut off");
        assert_eq!(master_seen(true, Some(Fenced)), MasterSeen::Healthy, "registered and fenced: re-applied, not failed over");
        assert_eq!(master_seen(true, Some(Refused)), MasterSeen::Healthy, "its replicas must confirm it (Silent)");
        assert_eq!(master_seen(true, Some(Silent)), MasterSeen::Down(Silent));
        for check in [Answers, NoAnswer, Fenced, Refused, Silent] {
            assert_eq!(master_seen(false, Some(check)), MasterSeen::Down(check));
        }
        assert_eq!(master_seen(false, None), MasterSeen::Down(NoAnswer));
    }

    #[test]
    fn a_silent_master_is_failed_over_without_the_blip_delay() {
        let silent = MasterSeen::Down(MasterCheck::Silent);
        assert_eq!(FailoverClock::default().assess(silent, &policy(), false, 10_000), FailOver);
        let slow = Policy { failover_after_refused: Duration::from_millis(300), ..policy() };
        assert_eq!(FailoverClock::default().assess(silent, &slow, false, 0), WaitFor(Duration::from_millis(300)));
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
            fenced: false,
            upstream_down: false,
            host: None,
        };
        assert!(serving(Some(&record(true))));
        assert!(!serving(Some(&record(false))));
        assert!(!serving(None), "an expired lease is no registration");
    }

    const NONE: &str = "0000000000000000000000000000000000000000";

    fn cand(index: usize, replid: &str, offset: u64, follows: bool, healthy: bool) -> Candidate {
        Candidate { index, replid: replid.into(), replid2: NONE.into(), offset, second_offset: -1, follows_master: follows, healthy, host: None }
    }

    #[test]
    fn chooses_the_furthest_healthy_slave_of_the_master() {
        let c = [cand(0, "r1", 100, true, true), cand(1, "r1", 120, true, false), cand(2, "r1", 120, true, true)];
        assert_eq!(choose(&c, &HostLoad::new()).map(|c| c.index), Some(2), "unhealthy ones are never chosen, even listed first");
        // A slave on another history is ignored even if further along.
        let c = [cand(0, "r1", 100, true, true), cand(1, "other", 900, false, true)];
        assert_eq!(choose(&c, &HostLoad::new()).map(|c| c.index), Some(0));
        // Ties go to the first listed.
        let c = [cand(0, "r1", 100, true, true), cand(1, "r1", 100, true, true)];
        assert_eq!(choose(&c, &HostLoad::new()).map(|c| c.index), Some(0));
        // Nobody follows the master (links already reset): the most common history.
        let c = [cand(0, "r1", 100, false, true), cand(1, "r1", 90, false, true), cand(2, "x", 500, false, true)];
        assert_eq!(choose(&c, &HostLoad::new()).map(|c| c.index), Some(0));
        assert_eq!(choose(&[cand(0, "r1", 1, true, false)], &HostLoad::new()), None, "no healthy candidate, no failover");
        assert_eq!(choose(&[], &HostLoad::new()), None);
    }

    #[test]
    fn the_old_master_stays_as_a_slave() {
        let t: Topology = r#"{"master":{"address":"a"},"slaves":[{"address":"b"},{"address":"c"}]}"#.parse().unwrap();
        let after = promote(&t, 1).unwrap();
        assert_eq!(after.to_json(), r#"{"master":{"address":"c"},"slaves":[{"address":"b"},{"address":"a"}]}"#);
        assert!(promote(&t, 5).is_none());
    }

    #[test]
    fn a_failover_keeps_the_groups_durability() {
        let t: Topology = r#"{"master":{"address":"a"},"slaves":[{"address":"b"}],"durability":{"min_replicas_to_write":1,"min_replicas_max_lag":2}}"#
            .parse()
            .unwrap();
        assert_eq!(promote(&t, 0).unwrap().durability, t.durability);
    }

    fn topology() -> Topology {
        r#"{"master":{"address":"10.0.0.1"},"slaves":[{"address":"10.0.0.2"},{"address":"10.0.0.3"}]}"#.parse().unwrap()
    }

    const MASTER: &str = "10.0.0.1:6379";

    fn facts(address: &str, registered_healthy: bool, offset: Option<u64>) -> SlaveFacts {
        SlaveFacts {
            member: Member::parse_host_port(address).unwrap(),
            host: None,
            registered_healthy,
            replication: offset.map(|offset| SlaveReplication {
                replid: "r1".into(),
                replid2: NONE.into(),
                offset,
                second_offset: -1,
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
        let promotion = plan(&topology(), MASTER.parse().ok(), &slaves, &HostLoad::new()).unwrap();
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
        let refused = plan(&topology(), MASTER.parse().ok(), &slaves, &HostLoad::new()).unwrap_err();
        assert_eq!(refused, NoPromotion::NoCandidate { master: topology().master, reachable: 1 });
        assert_eq!(refused.to_string(), "master 10.0.0.1 is down and no healthy slave can be promoted (1 reachable)");
    }

    #[test]
    fn a_slave_that_cannot_be_promoted_but_is_further_along_stops_the_failover() {
        // The dictator judges every slave it reaches, registered or not: promoting
        // the one at 100 would discard 50 bytes the unhealthy one holds.
        let c = [cand(0, "r1", 100, true, true), cand(1, "r1", 150, true, false)];
        assert_eq!(choose(&c, &HostLoad::new()), None);
        let slaves = [facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", false, Some(150))];
        let refused = plan(&topology(), MASTER.parse().ok(), &slaves, &HostLoad::new()).unwrap_err();
        assert_eq!(refused, NoPromotion::Behind { master: topology().master, best: topology().slaves[0].clone(), lacking: 50 });
        assert_eq!(
            refused.to_string(),
            "master 10.0.0.1 is down and no healthy slave holds every acknowledged write: the best, 10.0.0.2, \
             lacks 50 bytes of replication history another slave holds"
        );
    }

    #[test]
    fn a_slave_restarted_from_its_rdb_is_still_on_the_masters_history() {
        // It restarted with a new id, the master's kept as replid2 up to 52, and
        // holds more of it than the slave still following the dead master.
        let restarted = Candidate { replid2: "r1".into(), second_offset: 53, ..cand(1, "new", 52, false, true) };
        let c = [cand(0, "r1", 40, true, true), restarted];
        assert_eq!(choose(&c, &HostLoad::new()).map(|c| c.index), Some(1));
    }

    /// The dictator's refusal over slaves, as `plan.rs` wrote it before it became
    /// `topology::history::discards`: some slave on a history the new master
    /// shares has bytes it lacks.
    fn dictator_refuses(new: &Candidate, slaves: &[Candidate]) -> bool {
        slaves.iter().any(|s| {
            let c = topology::history::coverage(&new.history(), &s.history());
            (c.held > 0 || s.replid == new.replid) && !c.holds_all()
        })
    }

    /// Every history of up to 2 bytes over two ids, as redis can show it.
    fn small_histories() -> Vec<(&'static str, &'static str, u64, i64)> {
        let mut all = Vec::new();
        for (replid, other) in [("a", "b"), ("b", "a")] {
            for offset in 0..=2u64 {
                all.push((replid, NONE, offset, -1));
                for second in 1..=offset as i64 + 1 {
                    all.push((replid, other, offset, second));
                }
            }
        }
        all
    }

    /// A candidate at `index` with a history `(replid, replid2, offset, second_offset)`.
    fn candidate_from(
        index: usize,
        (replid, replid2, offset, second_offset): (&str, &str, u64, i64),
        follows_master: bool,
        healthy: bool,
        host: Option<&str>,
    ) -> Candidate {
        Candidate {
            index,
            replid: replid.into(),
            replid2: replid2.into(),
            offset,
            second_offset,
            follows_master,
            healthy,
            host: host.map(str::to_string),
        }
    }

    #[test]
    fn never_chooses_a_slave_the_dictator_would_refuse_while_another_would_do() {
        let histories = small_histories();
        let candidate = |index, history, follows, healthy| candidate_from(index, history, follows, healthy, None);
        let mut worlds = 0;
        let mut chosen = 0;
        let mut triples = Vec::new();
        for x in &histories {
            for y in &histories {
                triples.extend(histories.iter().map(|z| (*x, *y, *z)));
            }
        }
        for (x, y, z) in triples {
            for flags in 0..16u8 {
                let healthy = |i: u8| flags & (1 << i) != 0;
                let c = [candidate(0, x, flags & 8 != 0, healthy(0)), candidate(1, y, false, healthy(1)), candidate(2, z, false, healthy(2))];
                let accepted: Vec<usize> = c.iter().filter(|n| n.healthy && !dictator_refuses(n, &c)).map(|n| n.index).collect();
                let got = choose(&c, &HostLoad::new());
                if let Some(got) = got {
                    assert!(got.healthy && !dictator_refuses(got, &c), "chose {} the dictator refuses in {c:?}", got.index);
                    chosen += 1;
                }
                // On one history, whatever the master's offset, nobody is chosen
                // only when the dictator would refuse everybody.
                let one_history = c.iter().all(|a| c.iter().all(|b| shares(&a.history(), &b.history())));
                if one_history {
                    assert_eq!(got.is_some(), !accepted.is_empty(), "{c:?}");
                }
                worlds += 1;
            }
        }
        assert!(worlds > 50_000 && chosen > 10_000, "{worlds} {chosen}");
    }

    fn on(host: Option<&str>, c: Candidate) -> Candidate {
        Candidate { host: host.map(str::to_string), ..c }
    }

    fn load(counts: &[(&str, usize)]) -> HostLoad {
        counts.iter().map(|(h, n)| (h.to_string(), *n)).collect()
    }

    #[test]
    fn among_equals_the_host_with_the_fewest_masters_wins() {
        let c = [
            on(Some("h1"), cand(0, "r1", 100, true, true)),
            on(Some("h2"), cand(1, "r1", 100, true, true)),
            on(Some("h3"), cand(2, "r1", 100, true, true)),
        ];
        let chosen = |l: &HostLoad| choose(&c, l).map(|c| c.index);
        assert_eq!(chosen(&load(&[("h1", 2), ("h2", 1), ("h3", 1)])), Some(1), "ties among the least loaded: first listed");
        assert_eq!(chosen(&load(&[("h1", 2), ("h2", 1)])), Some(2), "a host not counted holds none");
        assert_eq!(chosen(&load(&[])), Some(0), "nobody holds a master: first listed");
        assert_eq!(chosen(&load(&[("h9", 4)])), Some(0), "counts of other hosts change nothing");
    }

    #[test]
    fn without_host_information_the_first_listed_wins_and_unknown_hosts_come_last() {
        let c = [cand(0, "r1", 100, true, true), cand(1, "r1", 100, true, true)];
        assert_eq!(choose(&c, &load(&[("h1", 3)])).map(|c| c.index), Some(0));
        let c = [cand(0, "r1", 100, true, true), on(Some("h1"), cand(1, "r1", 100, true, true))];
        assert_eq!(choose(&c, &load(&[("h1", 7)])).map(|c| c.index), Some(1), "a known host beats an unknown one");
    }

    #[test]
    fn history_always_comes_before_placement() {
        // The idle host's slave is behind by one byte: the dictator would refuse it.
        let c = [on(Some("busy"), cand(0, "r1", 101, true, true)), on(Some("idle"), cand(1, "r1", 100, true, true))];
        assert_eq!(choose(&c, &load(&[("busy", 9)])).map(|c| c.index), Some(0));
        // An ineligible one on the idle host is never chosen either.
        let c = [on(Some("busy"), cand(0, "r1", 100, true, true)), on(Some("idle"), cand(1, "r1", 100, true, false))];
        assert_eq!(choose(&c, &load(&[("busy", 9)])).map(|c| c.index), Some(0));
        // Nor one further along another history.
        let c = [on(Some("busy"), cand(0, "r1", 100, true, true)), on(Some("idle"), cand(1, "x", 900, false, true))];
        assert_eq!(choose(&c, &load(&[("busy", 9)])).map(|c| c.index), Some(0));
    }

    #[test]
    fn the_plan_and_the_next_candidate_after_a_refusal_prefer_the_emptier_host() {
        let mut slaves = [facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", true, Some(100))];
        slaves[0].host = Some("h2".into());
        slaves[1].host = Some("h3".into());
        let l = load(&[("h2", 2), ("h3", 1)]);
        let promotion = plan(&topology(), MASTER.parse().ok(), &slaves, &l).unwrap();
        assert_eq!(promotion.topology.master.to_string(), "10.0.0.3");
        assert_eq!(
            promotion.to_string(),
            "master 10.0.0.1 down for longer than the failover delay; promoting 10.0.0.3 (offset 100) on host h3, which held 1 master(s)",
            "the status says where the master went and why"
        );
        let first = Attempt { previous: topology(), master_addr: MASTER.parse().ok(), promotion, revision: 7, load: l };
        let AfterRefusal::Next(next) = after_refusal(&first, DICTATOR_409, &slaves) else { panic!("reverted") };
        assert_eq!(next.topology.master.to_string(), "10.0.0.2", "the refused one is out, whatever its host");
    }

    /// Every world of three slaves over short histories, eligibility, hosts and
    /// a fixed count of masters: placement only ever picks among slaves that hold
    /// exactly what the history rule's own choice holds, and then the emptier host.
    #[test]
    fn placement_never_overrides_history_in_any_small_world() {
        let histories: Vec<_> = small_histories().into_iter().filter(|(_, _, offset, _)| *offset <= 1).collect();
        let hosts = [None, Some("a"), Some("b")];
        let l = load(&[("a", 2), ("b", 1)]);
        let masters_on = |c: &Candidate| c.host.as_ref().map_or(usize::MAX, |h| l.get(h).copied().unwrap_or(0));
        let candidate = candidate_from;
        let (mut worlds, mut moved) = (0, 0);
        for x in &histories {
            for y in &histories {
                for z in &histories {
                    for flags in 0..16u8 {
                        let healthy = |i: u8| flags & (1 << i) != 0;
                        let unplaced = [
                            candidate(0, *x, flags & 8 != 0, healthy(0), None),
                            candidate(1, *y, false, healthy(1), None),
                            candidate(2, *z, false, healthy(2), None),
                        ];
                        // Without hosts, as before placement; hosts change nothing else.
                        let plain = choose(&unplaced, &HostLoad::new()).map(|c| c.index);
                        for placed in 0..27usize {
                            let mut c = unplaced.clone();
                            for (i, candidate) in c.iter_mut().enumerate() {
                                candidate.host = hosts[placed / 3usize.pow(i as u32) % 3].map(str::to_string);
                            }
                            let placed = choose(&c, &l);
                            assert_eq!(plain.is_some(), placed.is_some(), "{c:?}");
                            let (Some(plain), Some(placed)) = (plain.map(|i| &c[i]), placed) else { continue };
                            assert!(placed.healthy && !dictator_refuses(placed, &c), "{c:?}");
                            let same = |a: &Candidate, b: &Candidate| topology::history::coverage(&a.history(), &b.history()).holds_all();
                            assert!(same(placed, plain) && same(plain, placed), "placement chose by more than a tie: {c:?}");
                            assert!(masters_on(placed) <= masters_on(plain), "{c:?}");
                            if placed.index != plain.index {
                                assert!(masters_on(placed) < masters_on(plain), "moved away from the first listed for nothing: {c:?}");
                                moved += 1;
                            }
                            worlds += 1;
                        }
                    }
                }
            }
        }
        assert!(worlds > 10_000 && moved > 1_000, "{worlds} {moved}");
    }

    fn attempt(slaves: &[SlaveFacts]) -> Attempt {
        let promotion = plan(&topology(), MASTER.parse().ok(), slaves, &HostLoad::new()).unwrap();
        Attempt { previous: topology(), master_addr: MASTER.parse().ok(), promotion, revision: 7, load: HostLoad::new() }
    }

    const DICTATOR_409: &str = "409 Conflict: applying would lose acknowledged writes: 127.0.0.1:7002 has applied 20 bytes";

    #[test]
    fn after_a_refusal_the_next_candidate_by_the_same_rule_is_promoted() {
        // The observer could not reach 10.0.0.3 and promoted 10.0.0.2; asked again,
        // 10.0.0.3 answers, further along: the dictator's reason.
        let first = attempt(&[facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", true, None)]);
        assert_eq!(first.promotion.topology.master.to_string(), "10.0.0.2");
        let now = [facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", true, Some(120))];
        let AfterRefusal::Next(next) = after_refusal(&first, DICTATOR_409, &now) else { panic!("reverted") };
        assert_eq!(
            next.topology.to_json(),
            r#"{"master":{"address":"10.0.0.3"},"slaves":[{"address":"10.0.0.2"},{"address":"10.0.0.1"}]}"#,
            "the old master stays the last slave, as in the first try"
        );
        assert_eq!(next.refused, [(topology().slaves[0].clone(), DICTATOR_409.to_string())]);
        assert_eq!(
            next.to_string(),
            format!("master 10.0.0.1 down for longer than the failover delay; promoting 10.0.0.3 (offset 120); the dictator refused 10.0.0.2: {DICTATOR_409}")
        );
    }

    #[test]
    fn a_refused_slave_is_not_chosen_again_however_it_looks() {
        // Asked again, the refused slave still looks best (what the dictator saw is
        // gone again): the other one, which holds as much, is promoted.
        let first = attempt(&[facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", true, Some(100))]);
        let now = [facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", true, Some(100))];
        let AfterRefusal::Next(next) = after_refusal(&first, DICTATOR_409, &now) else { panic!("reverted") };
        assert_eq!(next.topology.master.to_string(), "10.0.0.3");
    }

    #[test]
    fn without_another_acceptable_candidate_the_previous_topology_is_restored_and_says_why() {
        let first = attempt(&[facts("10.0.0.2", true, Some(120)), facts("10.0.0.3", true, Some(100))]);
        // 10.0.0.3 lacks what the refused 10.0.0.2 holds: the dictator would refuse it too.
        let now = [facts("10.0.0.2", true, Some(120)), facts("10.0.0.3", true, Some(100))];
        let AfterRefusal::Revert(reverted) = after_refusal(&first, DICTATOR_409, &now) else { panic!("promoted") };
        assert_eq!(reverted.topology, topology());
        assert_eq!(
            reverted.to_string(),
            format!(
                "failover of master 10.0.0.1 given up, the topology before it restored; the dictator refused 10.0.0.2: \
                 {DICTATOR_409}; master 10.0.0.1 is down and no healthy slave holds every acknowledged write: the best, \
                 10.0.0.3, lacks 20 bytes of replication history another slave holds"
            )
        );
    }

    #[test]
    fn refusals_end_once_every_slave_was_refused() {
        let slaves = [facts("10.0.0.2", true, Some(100)), facts("10.0.0.3", true, Some(100))];
        let mut attempt = attempt(&slaves);
        let mut tried = vec![attempt.promotion.topology.master.to_string()];
        let reverted = loop {
            match after_refusal(&attempt, "409 Conflict: applying would lose acknowledged writes", &slaves) {
                AfterRefusal::Next(next) => {
                    tried.push(next.topology.master.to_string());
                    attempt.promotion = next;
                }
                AfterRefusal::Revert(reverted) => break reverted,
            }
            assert!(tried.len() <= 2, "a refused slave was tried again: {tried:?}");
        };
        assert_eq!(tried, ["10.0.0.2", "10.0.0.3"]);
        assert_eq!(reverted.refused.len(), 2);
        assert_eq!(reverted.why, NoPromotion::NoCandidate { master: topology().master, reachable: 2 });
    }

    #[test]
    fn only_answers_that_condemn_the_candidate_move_on_from_it() {
        assert!(refuses_candidate(409, "applying would lose acknowledged writes: x; pass force=true to apply anyway"));
        assert!(refuses_candidate(502, "master 127.0.0.1:7001 is unreachable: connection refused"));
        // Another apply holds the lock, a slave could not be re-pointed, a timeout:
        // the candidate may still do, so the apply is retried as usual.
        assert!(!refuses_candidate(409, "another apply to cluster redis-1 is still running after 10s; try again"));
        assert!(!refuses_candidate(502, "replicate 127.0.0.1:7002: connection refused"));
        // Both halves of the 502 rule: about the master, and that it is unreachable.
        assert!(!refuses_candidate(502, "slave 127.0.0.1:7002 is unreachable: connection refused"));
        assert!(!refuses_candidate(502, "master 127.0.0.1:7001: INFO failed"));
        assert!(!refuses_candidate(504, "catch-up of 127.0.0.1:7001 timed out"));
        assert!(!refuses_candidate(422, "master.address: node-1 is not registered"));
    }
}
