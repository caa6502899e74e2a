//! Where masters run, pure: how many masters each host holds, and the
//! rebalance plan that brings every live host back to its fair share.
//!
//! A host is the machine a node-agent registers (`NodeRecord::host`). Losing a
//! machine fails over every master on it, and those masters land on the hosts
//! that survived; when the machine comes back it holds none, and the survivors
//! hold more than their share. [`plan`] says which masters to move back:
//!
//! - the fair share is `ceil(groups / live hosts)` masters per host;
//! - a master moves only to a slave of its own group that is eligible (registered
//!   healthy, a slave, following the master: a lossless switchover can catch it
//!   up), on a live host, and only when its master serves (a switchover needs the
//!   master's writes to reach the slave);
//! - a group in maintenance does not move;
//! - a group moves at most once, and as few groups move as possible: the plan is
//!   a minimum-cost flow (one unit per group, one unit of cost per move), with a
//!   host's seats above its share priced above any number of moves, so it first
//!   gets every host as close to its share as it can, then moves the fewest;
//! - when no set of moves reaches the fair share, [`Unreachable`] says which hosts
//!   stay above it and which of their groups cannot leave.
//!
//! The failover's preference ([`masters_per_host`]) uses the same counts: among
//! equally up-to-date slaves, the one on the host holding the fewest masters.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::cluster::ClusterState;
use crate::records::Role;
use crate::Names;

/// One member of a group as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seat {
    /// The registered node, or the member as the topology names it.
    pub node: String,
    /// The host its node-agent registered; `None`: not registered, or an agent
    /// that predates hosts.
    pub host: Option<String>,
    /// A master: it serves (registered healthy, redis a master). A slave: it may
    /// become master by a lossless switchover (registered healthy, redis a slave
    /// following the master).
    pub eligible: bool,
}

/// One group (cluster): its topology's master and slaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    pub name: String,
    pub master: Seat,
    pub slaves: Vec<Seat>,
    /// In maintenance (`/config/<cluster>/maintenance`): someone works on it, its
    /// master stays where it is.
    pub paused: bool,
}

/// One switchover of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Move {
    pub group: String,
    pub from: String,
    pub from_host: String,
    pub to: String,
    pub to_host: String,
}

impl fmt::Display for Move {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({}) -> {} ({})", self.group, self.from, self.from_host, self.to, self.to_host)
    }
}

/// The moves that bring every live host to at most `fair_share` masters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub fair_share: usize,
    /// Masters per live host now, and after the moves (every live host listed).
    pub before: BTreeMap<String, usize>,
    pub after: BTreeMap<String, usize>,
    /// In the order to run them: each lands, where it can, on a host that has
    /// room at that point.
    pub moves: Vec<Move>,
}

/// Why no plan reaches the fair share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum Unreachable {
    #[error("no live host: no healthy node-agent registers a host")]
    NoLiveHost,
    #[error(
        "the fair share is {fair_share} master(s) per host ({groups} groups on {hosts} live hosts), and no moves to healthy slaves reach it: {}",
        over.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Stuck { fair_share: usize, groups: usize, hosts: usize, over: Vec<Over> },
}

/// A host that stays above the fair share at best, and why its groups stay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Over {
    pub host: String,
    /// Masters it holds at best.
    pub masters: usize,
    /// Its groups that cannot leave it, each with why.
    pub stuck: Vec<(String, String)>,
}

impl fmt::Display for Over {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} would still hold {}", self.host, self.masters)?;
        if !self.stuck.is_empty() {
            let why: Vec<String> = self.stuck.iter().map(|(g, why)| format!("{g} {why}")).collect();
            write!(f, " ({})", why.join(", "))?;
        }
        Ok(())
    }
}

/// The groups etcd holds, as placement sees them: every cluster with a topology.
pub fn groups(states: &[ClusterState], names: &Names) -> Vec<Group> {
    states
        .iter()
        .filter_map(|state| {
            let (topology, _) = state.topology.as_ref()?;
            let record = |member| state.node_of(names, member).and_then(|n| state.nodes.get(&n).map(|r| (n, r)));
            let master_record = record(&topology.master);
            let master_at = master_record.map(|(_, r)| format!("{}:{}", r.address, r.port));
            let seat = |member, eligible: &dyn Fn(&crate::records::NodeRecord) -> bool| match record(member) {
                Some((node, r)) => Seat { node, host: r.host.clone(), eligible: eligible(r) },
                None => Seat { node: member.to_string(), host: None, eligible: false },
            };
            let master = seat(&topology.master, &|r| r.healthy && r.role == Role::Master && !r.fenced);
            let follows = |r: &crate::records::NodeRecord| {
                r.healthy && r.role == Role::Slave && master_at.is_some() && r.upstream == master_at
            };
            let slaves = topology.slaves.iter().map(|s| seat(s, &follows)).collect();
            Some(Group { name: state.name.clone(), master, slaves, paused: state.paused.is_some() })
        })
        .collect()
}

/// Hosts with at least one healthy registration: the machines that are up.
pub fn live_hosts(states: &[ClusterState]) -> BTreeSet<String> {
    states.iter().flat_map(|s| s.nodes.values()).filter(|r| r.healthy).filter_map(|r| r.host.clone()).collect()
}

/// How many topology masters each host holds (hosts with none are not listed);
/// masters on no known host are not counted.
pub fn masters_per_host(groups: &[Group]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for host in groups.iter().filter_map(|g| g.master.host.as_ref()) {
        *counts.entry(host.clone()).or_default() += 1;
    }
    counts
}

/// The moves that leave no live host above `ceil(groups / live hosts)` masters,
/// moving as few masters as possible (see the module doc).
pub fn plan(groups: &[Group], live: &BTreeSet<String>) -> Result<Plan, Unreachable> {
    if live.is_empty() {
        return Err(Unreachable::NoLiveHost);
    }
    let hosts: Vec<&String> = live.iter().collect();
    let fair_share = groups.len().div_ceil(hosts.len());
    let host_index = |h: &Option<String>| h.as_ref().and_then(|h| hosts.iter().position(|x| *x == h));
    // Nodes: source, groups, hosts, sink.
    let (source, sink) = (0, groups.len() + hosts.len() + 1);
    let host_node = |i: usize| groups.len() + 1 + i;
    let mut flow = Flow::new(sink + 1);
    // A seat above the share costs more than moving every group.
    let over_cost = groups.len() as i64 + 1;
    // For each group and host, the slave it would move to.
    let mut targets: BTreeMap<(usize, usize), usize> = BTreeMap::new();
    for (g, group) in groups.iter().enumerate() {
        flow.edge(source, g + 1, 1, 0);
        let Some(here) = host_index(&group.master.host) else {
            // On no live host (or none known): it stays where it is, uncounted.
            flow.edge(g + 1, sink, 1, 0);
            continue;
        };
        flow.edge(g + 1, host_node(here), 1, 0);
        if !group.master.eligible || group.paused {
            continue;
        }
        for (s, slave) in group.slaves.iter().enumerate() {
            let Some(there) = host_index(&slave.host) else { continue };
            if slave.eligible && there != here && !targets.contains_key(&(g, there)) {
                targets.insert((g, there), s);
                flow.edge(g + 1, host_node(there), 1, 1);
            }
        }
    }
    for h in 0..hosts.len() {
        flow.edge(host_node(h), sink, fair_share as i64, 0);
        flow.edge(host_node(h), sink, groups.len() as i64, over_cost);
    }
    flow.run(source, sink);

    let mut before: BTreeMap<String, usize> = hosts.iter().map(|h| ((*h).clone(), 0)).collect();
    let mut after = before.clone();
    let mut moves = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let Some(here) = host_index(&group.master.host) else { continue };
        *before.entry(hosts[here].clone()).or_default() += 1;
        let there = (0..hosts.len()).find(|h| flow.used(g + 1, host_node(*h))).unwrap_or(here);
        *after.entry(hosts[there].clone()).or_default() += 1;
        if there != here
            && let Some(slave) = targets.get(&(g, there)).and_then(|s| group.slaves.get(*s))
        {
            moves.push(Move {
                group: group.name.clone(),
                from: group.master.node.clone(),
                from_host: hosts[here].clone(),
                to: slave.node.clone(),
                to_host: hosts[there].clone(),
            });
        }
    }
    let over: Vec<Over> = after
        .iter()
        .filter(|(_, n)| **n > fair_share)
        .map(|(host, masters)| Over { host: host.clone(), masters: *masters, stuck: stuck_on(groups, host, live) })
        .collect();
    if !over.is_empty() {
        return Err(Unreachable::Stuck { fair_share, groups: groups.len(), hosts: hosts.len(), over });
    }
    Ok(Plan { fair_share, moves: ordered(moves, &before, fair_share), before, after })
}

/// The groups whose master is on `host` and cannot leave it, with why.
fn stuck_on(groups: &[Group], host: &str, live: &BTreeSet<String>) -> Vec<(String, String)> {
    groups
        .iter()
        .filter(|g| g.master.host.as_deref() == Some(host))
        .filter_map(|g| {
            let why = if g.paused {
                "is in maintenance"
            } else if !g.master.eligible {
                "has a master that does not serve"
            } else if !g.slaves.iter().any(|s| s.eligible && s.host.as_ref().is_some_and(|h| h != host && live.contains(h))) {
                "has no healthy slave on another live host"
            } else {
                return None;
            };
            Some((g.name.clone(), why.to_string()))
        })
        .collect()
}

/// The moves in an order where each lands, if any can, on a host below the
/// share at that point (a chain's far end first); otherwise by group.
fn ordered(mut moves: Vec<Move>, before: &BTreeMap<String, usize>, fair_share: usize) -> Vec<Move> {
    let mut counts = before.clone();
    let mut out = Vec::with_capacity(moves.len());
    while !moves.is_empty() {
        let next = moves.iter().position(|m| counts.get(&m.to_host).copied().unwrap_or(0) < fair_share).unwrap_or(0);
        let m = moves.remove(next);
        if let Some(n) = counts.get_mut(&m.from_host) {
            *n = n.saturating_sub(1);
        }
        *counts.entry(m.to_host.clone()).or_default() += 1;
        out.push(m);
    }
    out
}

/// A minimum-cost flow by successive shortest paths (Bellman-Ford: the reverse
/// edges carry negative costs). The graphs are tiny: groups plus hosts.
struct Flow {
    /// `(to, capacity left, cost)`; edge `i ^ 1` is edge `i`'s reverse.
    edges: Vec<(usize, i64, i64)>,
    out: Vec<Vec<usize>>,
}

impl Flow {
    fn new(nodes: usize) -> Flow {
        Flow { edges: Vec::new(), out: vec![Vec::new(); nodes] }
    }

    fn edge(&mut self, from: usize, to: usize, capacity: i64, cost: i64) {
        self.out[from].push(self.edges.len());
        self.edges.push((to, capacity, cost));
        self.out[to].push(self.edges.len());
        self.edges.push((from, 0, -cost));
    }

    /// Whether one unit flows on an edge from `from` to `to`.
    fn used(&self, from: usize, to: usize) -> bool {
        self.out[from].iter().any(|&e| e % 2 == 0 && self.edges[e].0 == to && self.edges[e ^ 1].1 > 0)
    }

    /// Pushes as much as fits, one unit per cheapest path.
    fn run(&mut self, source: usize, sink: usize) {
        let n = self.out.len();
        loop {
            let mut dist = vec![i64::MAX; n];
            let mut via: Vec<Option<usize>> = vec![None; n];
            dist[source] = 0;
            for _ in 0..n {
                let mut changed = false;
                for node in 0..n {
                    if dist[node] == i64::MAX {
                        continue;
                    }
                    for &e in &self.out[node] {
                        let (to, capacity, cost) = self.edges[e];
                        if capacity > 0 && dist[node] + cost < dist[to] {
                            dist[to] = dist[node] + cost;
                            via[to] = Some(e);
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
            if dist[sink] == i64::MAX {
                return;
            }
            let mut node = sink;
            while let Some(e) = via[node] {
                self.edges[e].1 -= 1;
                self.edges[e ^ 1].1 += 1;
                node = self.edges[e ^ 1].0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn seat(node: &str, host: &str, eligible: bool) -> Seat {
        Seat { node: node.into(), host: Some(host.into()), eligible }
    }

    /// A group whose master is on `hosts[0]` and slaves on the rest, all eligible.
    fn group(name: &str, hosts: &[&str]) -> Group {
        Group {
            name: name.into(),
            master: seat(&format!("{name}-{}", hosts[0]), hosts[0], true),
            slaves: hosts[1..].iter().map(|h| seat(&format!("{name}-{h}"), h, true)).collect(),
            paused: false,
        }
    }

    fn live(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn a_host_back_from_the_dead_gets_its_share_back_in_one_move() {
        // h1 came back: its groups failed over to h2.
        let groups = [group("g1", &["h2", "h1", "h3"]), group("g2", &["h2", "h3", "h1"]), group("g3", &["h3", "h1", "h2"])];
        let plan = plan(&groups, &live(&["h1", "h2", "h3"])).unwrap();
        assert_eq!(plan.fair_share, 1);
        assert_eq!(plan.moves.len(), 1, "{plan:?}");
        let m = &plan.moves[0];
        assert_eq!((m.from_host.as_str(), m.to_host.as_str()), ("h2", "h1"));
        assert!(m.group == "g1" || m.group == "g2");
        assert_eq!(m.to, format!("{}-h1", m.group));
        assert_eq!(plan.after.values().copied().collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(m.to_string(), format!("{0}: {0}-h2 (h2) -> {0}-h1 (h1)", m.group));
    }

    #[test]
    fn a_balanced_placement_needs_no_move() {
        let groups = [group("g1", &["h1", "h2"]), group("g2", &["h2", "h1"])];
        let plan = plan(&groups, &live(&["h1", "h2"])).unwrap();
        assert!(plan.moves.is_empty());
        // Two masters on one host of three, fair share 1... but 2 groups on 3 hosts: share 1.
        let groups = [group("g1", &["h1", "h2"]), group("g2", &["h1", "h3"])];
        assert_eq!(super::plan(&groups, &live(&["h1", "h2", "h3"])).unwrap().moves.len(), 1);
        assert!(super::plan(&groups, &live(&["h1"])).unwrap().moves.is_empty(), "one host: share 2");
    }

    #[test]
    fn only_eligible_slaves_on_live_hosts_are_moved_to() {
        let mut g1 = group("g1", &["h1", "h2", "h3"]);
        g1.slaves[0].eligible = false;
        let groups = [g1, group("g2", &["h1", "h2"])];
        let plan = plan(&groups, &live(&["h1", "h2", "h3"])).unwrap();
        // g1 cannot go to h2 (its slave there is not healthy), so it goes to h3, or g2 moves.
        assert_eq!(plan.moves.len(), 1);
        let m = &plan.moves[0];
        assert!((m.group == "g1" && m.to_host == "h3") || (m.group == "g2" && m.to_host == "h2"), "{m}");
        // A dead host is never a target, even with an eligible-looking slave there.
        let groups = [group("g1", &["h1", "h3"]), group("g2", &["h1", "h3"])];
        let err = super::plan(&groups, &live(&["h1", "h2"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the fair share is 1 master(s) per host (2 groups on 2 live hosts), and no moves to healthy slaves reach it: \
             h1 would still hold 2 (g1 has no healthy slave on another live host, g2 has no healthy slave on another live host)"
        );
    }

    #[test]
    fn a_master_that_does_not_serve_is_not_moved_and_says_so() {
        let mut g1 = group("g1", &["h1", "h2"]);
        g1.master.eligible = false;
        let groups = [g1, group("g2", &["h1", "h2"])];
        let plan = plan(&groups, &live(&["h1", "h2"])).unwrap();
        assert_eq!(plan.moves.iter().map(|m| m.group.as_str()).collect::<Vec<_>>(), ["g2"]);
        let mut g1 = group("g1", &["h1", "h2"]);
        g1.master.eligible = false;
        let mut g2 = group("g2", &["h1", "h2"]);
        g2.master.eligible = false;
        let err = super::plan(&[g1, g2], &live(&["h1", "h2"])).unwrap_err();
        assert!(err.to_string().ends_with("h1 would still hold 2 (g1 has a master that does not serve, g2 has a master that does not serve)"), "{err}");
    }

    #[test]
    fn a_group_in_maintenance_stays_and_says_so() {
        let mut g1 = group("g1", &["h1", "h2"]);
        g1.paused = true;
        let groups = [g1.clone(), group("g2", &["h1", "h2"])];
        let plan = plan(&groups, &live(&["h1", "h2"])).unwrap();
        assert_eq!(plan.moves.iter().map(|m| m.group.as_str()).collect::<Vec<_>>(), ["g2"]);
        let mut g2 = group("g2", &["h1", "h2"]);
        g2.paused = true;
        let err = super::plan(&[g1, g2], &live(&["h1", "h2"])).unwrap_err();
        assert!(err.to_string().ends_with("h1 would still hold 2 (g1 is in maintenance, g2 is in maintenance)"), "{err}");
    }

    #[test]
    fn masters_on_dead_or_unknown_hosts_stay_and_count_for_nobody() {
        let mut unknown = group("g3", &["h1", "h2"]);
        unknown.master.host = None;
        let groups = [group("g1", &["h9", "h1"]), group("g2", &["h1", "h2"]), unknown];
        let plan = plan(&groups, &live(&["h1", "h2"])).unwrap();
        assert_eq!(plan.fair_share, 2);
        assert!(plan.moves.is_empty());
        assert_eq!(plan.before, BTreeMap::from([("h1".to_string(), 1), ("h2".to_string(), 0)]));
        assert_eq!(super::plan(&groups, &BTreeSet::new()), Err(Unreachable::NoLiveHost));
    }

    #[test]
    fn a_chain_moves_only_when_no_direct_move_would_do_and_runs_its_far_end_first() {
        // h1 holds two; its groups can only go to h2, which holds one; h2's group can go to h3.
        let groups = [group("a", &["h1", "h2"]), group("b", &["h1", "h2"]), group("c", &["h2", "h3"])];
        let plan = plan(&groups, &live(&["h1", "h2", "h3"])).unwrap();
        assert_eq!(plan.moves.len(), 2, "{plan:?}");
        assert_eq!(plan.moves[0].group, "c", "h2 makes room first");
        assert_eq!((plan.moves[1].from_host.as_str(), plan.moves[1].to_host.as_str()), ("h1", "h2"));
    }

    #[test]
    fn counts_masters_by_host() {
        let mut unknown = group("g3", &["h1"]);
        unknown.master.host = None;
        let groups = [group("g1", &["h1", "h2"]), group("g2", &["h1", "h2"]), unknown, group("g4", &["h2"])];
        assert_eq!(masters_per_host(&groups), BTreeMap::from([("h1".to_string(), 2), ("h2".to_string(), 1)]));
    }

    #[test]
    fn groups_come_from_etcd_with_their_hosts_and_eligibility() {
        use crate::records::NodeRecord;
        use crate::Topology;
        let names = Names::default();
        let record = |port: u16, role, host: &str, upstream: Option<&str>| NodeRecord {
            address: "127.0.0.1".into(),
            port,
            role,
            repl_offset: 0,
            run_id: "r".into(),
            healthy: true,
            updated_ms: 0,
            upstream: upstream.map(str::to_string),
            fenced: false,
            upstream_down: false,
            host: Some(host.into()),
        };
        let topology = Topology::from_json(
            br#"{"master":{"address":"node-1.g.cluster.local"},"slaves":[{"address":"node-2.g.cluster.local"},{"address":"node-3.g.cluster.local"},{"address":"node-4.g.cluster.local"}]}"#,
        )
        .unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert("node-1".to_string(), record(7001, Role::Master, "h1", None));
        nodes.insert("node-2".to_string(), record(7002, Role::Slave, "h2", Some("127.0.0.1:7001")));
        nodes.insert("node-3".to_string(), record(7003, Role::Slave, "h3", Some("127.0.0.1:7009")));
        let mut down = record(7005, Role::Slave, "h5", None);
        down.healthy = false;
        nodes.insert("node-5".to_string(), down);
        let state = ClusterState { name: "g".into(), topology: Some((topology, 1)), nodes, ..ClusterState::default() };
        let groups = groups(std::slice::from_ref(&state), &names);
        assert_eq!(
            groups,
            [Group {
                name: "g".into(),
                master: seat("node-1", "h1", true),
                slaves: vec![
                    seat("node-2", "h2", true),
                    seat("node-3", "h3", false),
                    Seat { node: "node-4.g.cluster.local".into(), host: None, eligible: false },
                ],
                paused: false,
            }]
        );
        assert_eq!(live_hosts(&[state]), live(&["h1", "h2", "h3"]), "h5's only node is unhealthy");
        let no_topology = ClusterState { name: "x".into(), ..ClusterState::default() };
        assert!(super::groups(&[no_topology], &names).is_empty());
    }

    /// Every placement the brute force tries: each group ends on its master's
    /// host or on one of its eligible slaves' live hosts (never two moves).
    fn brute_force(groups: &[Group], live: &BTreeSet<String>) -> Option<usize> {
        let fair_share = groups.len().div_ceil(live.len());
        let choices: Vec<Vec<(Option<String>, usize)>> = groups
            .iter()
            .map(|g| {
                let mut c = vec![(g.master.host.clone(), 0)];
                if g.master.eligible && !g.paused && g.master.host.as_ref().is_some_and(|h| live.contains(h)) {
                    for s in &g.slaves {
                        if s.eligible && s.host.as_ref().is_some_and(|h| live.contains(h)) && s.host != g.master.host {
                            c.push((s.host.clone(), 1));
                        }
                    }
                }
                c
            })
            .collect();
        let mut best: Option<usize> = None;
        let mut pick = vec![0usize; groups.len()];
        loop {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            let mut moves = 0;
            for (g, &p) in pick.iter().enumerate() {
                let (host, cost) = &choices[g][p];
                moves += cost;
                if let Some(h) = host.as_deref().filter(|h| live.contains(*h)) {
                    *counts.entry(h).or_default() += 1;
                }
            }
            if counts.values().all(|n| *n <= fair_share) {
                best = Some(best.map_or(moves, |b| b.min(moves)));
            }
            // Next combination.
            let mut i = 0;
            loop {
                if i == pick.len() {
                    return best;
                }
                pick[i] += 1;
                if pick[i] < choices[i].len() {
                    break;
                }
                pick[i] = 0;
                i += 1;
            }
        }
    }

    fn arb_groups() -> impl Strategy<Value = (Vec<Group>, BTreeSet<String>)> {
        let hosts = ["h1", "h2", "h3", "h4"];
        let seat = (0..5usize, any::<bool>()).prop_map(move |(h, e)| (h, e));
        let group = (seat.clone(), proptest::collection::vec(seat, 0..3), proptest::bool::weighted(0.1));
        (proptest::collection::vec(group, 1..6), proptest::collection::btree_set(0..4usize, 1..4)).prop_map(
            move |(gs, live)| {
                // Host index 4 is no host at all (unregistered, or an old agent).
                let host = |h: usize| hosts.get(h).map(|h| h.to_string());
                let groups = gs
                    .into_iter()
                    .enumerate()
                    .map(|(i, ((mh, me), slaves, paused))| Group {
                        name: format!("g{i}"),
                        master: Seat { node: format!("g{i}-m"), host: host(mh), eligible: me },
                        slaves: slaves
                            .into_iter()
                            .enumerate()
                            .map(|(j, (sh, se))| Seat { node: format!("g{i}-s{j}"), host: host(sh), eligible: se })
                            .collect(),
                        paused,
                    })
                    .collect();
                (groups, live.into_iter().map(|h| hosts[h].to_string()).collect())
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_plan_reaches_the_fair_share_whenever_it_can_with_the_fewest_moves((groups, live) in arb_groups()) {
            let best = brute_force(&groups, &live);
            match plan(&groups, &live) {
                Ok(plan) => {
                    prop_assert_eq!(Some(plan.moves.len()), best, "{:?}", plan);
                    // Replaying the moves gives `after`, within the share.
                    let mut counts = plan.before.clone();
                    let mut moved = BTreeSet::new();
                    for m in &plan.moves {
                        prop_assert!(moved.insert(m.group.clone()), "two moves of {}", m.group);
                        let g = groups.iter().find(|g| g.name == m.group).unwrap();
                        prop_assert!(g.master.eligible && !g.paused && g.master.node == m.from && g.master.host.as_deref() == Some(m.from_host.as_str()));
                        let to = g.slaves.iter().find(|s| s.node == m.to).unwrap();
                        prop_assert!(to.eligible && to.host.as_deref() == Some(m.to_host.as_str()) && live.contains(&m.to_host));
                        *counts.get_mut(&m.from_host).unwrap() -= 1;
                        *counts.get_mut(&m.to_host).unwrap() += 1;
                    }
                    prop_assert_eq!(&counts, &plan.after);
                    prop_assert!(counts.values().all(|n| *n <= plan.fair_share));
                }
                Err(Unreachable::Stuck { over, .. }) => {
                    prop_assert_eq!(best, None, "a plan exists");
                    prop_assert!(!over.is_empty());
                }
                Err(Unreachable::NoLiveHost) => prop_assert!(false, "live hosts were given"),
            }
        }
    }
}
