//! What one cluster looks like in etcd, and every decision `redis-topology` and
//! the observer's status page make from it, pure: the node table (role, health, lag, what DNS publishes), the
//! check of roles against the desired topology and DNS, the members an operator
//! names on the command line, and the topology of a switchover.

use std::collections::BTreeMap;

use serde::Serialize;
use crate::records::{NodeRecord, PublishedMember, PublishedTopology, Role, StatusRecord};
use crate::{Address, Member, MemberName, Names, SpecError, Topology};

/// Everything etcd holds about one cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterState {
    pub name: String,
    /// The desired topology and its etcd mod revision.
    pub topology: Option<(Topology, i64)>,
    /// A topology that does not parse (written by hand): its error.
    pub topology_error: Option<String>,
    /// `/config/<cluster>/maintenance`: automatic failover paused, and why.
    pub paused: Option<String>,
    pub nodes: BTreeMap<String, NodeRecord>,
    /// What dnsd publishes (`/dns/<cluster>`).
    pub published: Option<PublishedTopology>,
    /// The observer's last round.
    pub status: Option<StatusRecord>,
    /// Replication offsets read from redis itself, by node: registrations carry
    /// none that is current. A node missing here shows no offset and no lag.
    pub offsets: BTreeMap<String, u64>,
    /// Values of this cluster's keys that do not parse (written by hand, or by
    /// another version): `<key>: <why>`. Shown, never silently left out.
    pub unreadable: Vec<String>,
}

/// One row of `list` / `status`: a registered node, or a member of the topology
/// no node-agent registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The registered node's name, or the member as the topology names it.
    pub node: String,
    /// `host:port` as registered; `None` for an unregistered member.
    pub address: Option<String>,
    /// What the topology wants: `master`, `slave`, or `-` (not a member).
    pub desired: &'static str,
    /// What the node-agent last saw redis be.
    pub role: Option<Role>,
    pub healthy: Option<bool>,
    /// As read from redis (see [`ClusterState::offsets`]).
    pub offset: Option<u64>,
    /// Bytes behind the registered master's offset, both read from redis (slaves only).
    pub lag_bytes: Option<u64>,
    /// What dnsd publishes it as: `master`, `slave`, or `-`.
    pub dns: &'static str,
}

/// `list`'s and `status`'s summary of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterView {
    pub cluster: String,
    pub desired_master: Option<String>,
    /// The topology's durability setting, if it has one.
    pub durability: Option<crate::Durability>,
    pub topology_revision: Option<i64>,
    pub dns_master: Option<String>,
    pub paused: Option<String>,
    pub last_round: Option<String>,
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_finished_ms: Option<u64>,
    pub nodes: Vec<NodeRow>,
    /// Keys whose values do not parse, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

impl ClusterState {
    /// The registered node a member names, if any: `<node>.<cluster>.<domain>`,
    /// or an IP literal and port matching a registration.
    pub fn node_of(&self, names: &Names, member: &Member) -> Option<String> {
        match names.member_node(&self.name, member).ok()? {
            MemberName::Node(node) => Some(node),
            MemberName::Ip(ip) => self
                .nodes
                .iter()
                .find(|(_, r)| r.address == ip.to_string() && r.port == member.port_or_default())
                .map(|(n, _)| n.clone()),
        }
    }

    fn published_as(&self, node: &str, record: Option<&NodeRecord>) -> &'static str {
        let Some(published) = &self.published else { return "-" };
        let is = |p: &PublishedMember| {
            p.node.as_deref() == Some(node) || record.is_some_and(|r| r.address == p.host && r.port == p.port)
        };
        if is(&published.master) {
            "master"
        } else if published.slaves.iter().any(is) {
            "slave"
        } else {
            "-"
        }
    }

    /// The rows of every registered node and every unregistered member.
    pub fn rows(&self, names: &Names) -> Vec<NodeRow> {
        let mut desired: BTreeMap<String, &'static str> = BTreeMap::new();
        let mut unregistered = Vec::new();
        if let Some((topology, _)) = &self.topology {
            for (member, role) in std::iter::once((&topology.master, "master")).chain(topology.slaves.iter().map(|s| (s, "slave"))) {
                match self.node_of(names, member) {
                    Some(node) if self.nodes.contains_key(&node) => {
                        desired.insert(node, role);
                    }
                    Some(node) => unregistered.push((node, role)),
                    None => unregistered.push((member.to_string(), role)),
                }
            }
        }
        let master_offset = self
            .nodes
            .iter()
            .find(|(n, r)| desired.get(*n) == Some(&"master") && r.role == Role::Master)
            .and_then(|(n, _)| self.offsets.get(n).copied());
        let mut rows: Vec<NodeRow> = self
            .nodes
            .iter()
            .map(|(node, r)| NodeRow {
                node: node.clone(),
                address: Some(format!("{}:{}", r.address, r.port)),
                desired: desired.get(node).copied().unwrap_or("-"),
                role: Some(r.role),
                healthy: Some(r.healthy),
                offset: self.offsets.get(node).copied(),
                lag_bytes: self
                    .offsets
                    .get(node)
                    .filter(|_| r.role == Role::Slave)
                    .and_then(|o| master_offset.map(|m| m.saturating_sub(*o))),
                dns: self.published_as(node, Some(r)),
            })
            .collect();
        rows.extend(unregistered.into_iter().map(|(node, role)| NodeRow {
            dns: self.published_as(&node, None),
            node,
            address: None,
            desired: role,
            role: None,
            healthy: None,
            offset: None,
            lag_bytes: None,
        }));
        rows
    }

    pub fn view(&self, names: &Names) -> ClusterView {
        let published_master = self.published.as_ref().map(|p| match &p.master.node {
            Some(node) => node.clone(),
            None => format!("{}:{}", p.master.host, p.master.port),
        });
        ClusterView {
            cluster: self.name.clone(),
            desired_master: self.topology.as_ref().map(|(t, _)| self.node_of(names, &t.master).unwrap_or_else(|| t.master.to_string())),
            durability: self.topology.as_ref().and_then(|(t, _)| t.durability),
            topology_revision: self.topology.as_ref().map(|(_, r)| *r),
            dns_master: published_master,
            paused: self.paused.clone(),
            last_round: self.status.as_ref().and_then(|s| s.history.last().map(|e| e.reason.clone())),
            last_result: self.status.as_ref().map(|s| s.result.clone()),
            last_error: self.status.as_ref().and_then(|s| s.error.clone()),
            last_finished_ms: self.status.as_ref().map(|s| s.finished_ms),
            nodes: self.rows(names),
            unreadable: self.unreadable.clone(),
        }
    }

    /// What differs between the desired topology, the roles redis reports
    /// through the node-agents, and what DNS publishes (from etcd, and live
    /// from `dns_master` when a nameserver was asked). Empty: they agree.
    pub fn check(&self, names: &Names, dns_master: Option<&DnsAnswer>) -> Vec<String> {
        let mut diffs: Vec<String> = self.unreadable.iter().map(|u| format!("unreadable in etcd: {u}")).collect();
        if let Some(error) = &self.topology_error {
            diffs.push(format!("the topology in etcd is invalid: {error}"));
        }
        let Some((topology, revision)) = &self.topology else {
            if self.topology_error.is_none() {
                diffs.push("no topology is defined".to_string());
            }
            return diffs;
        };
        let master_node = self.node_of(names, &topology.master);
        let master_record = master_node.as_ref().and_then(|n| self.nodes.get(n));
        for (member, wanted) in std::iter::once((&topology.master, Role::Master)).chain(topology.slaves.iter().map(|s| (s, Role::Slave))) {
            let node = self.node_of(names, member);
            let Some(record) = node.as_ref().and_then(|n| self.nodes.get(n)) else {
                diffs.push(format!("{member}: no node-agent registers it"));
                continue;
            };
            let node = node.unwrap_or_default();
            if !record.healthy {
                diffs.push(format!("{node}: unhealthy (redis does not answer its node-agent)"));
            }
            if record.role != wanted {
                diffs.push(format!("{node}: redis is {}, the topology says {}", role_name(record.role), role_name(wanted)));
            } else if wanted == Role::Slave
                && let Some(master) = master_record
                && let Some(upstream) = &record.upstream
                && *upstream != format!("{}:{}", master.address, master.port)
            {
                diffs.push(format!("{node}: replicates from {upstream}, not from the master {}:{}", master.address, master.port));
            }
        }
        for node in self.nodes.keys() {
            let member = topology.members().any(|m| self.node_of(names, m).as_deref() == Some(node.as_str()));
            if !member {
                diffs.push(format!("{node}: registered but not in the topology"));
            }
        }
        match &self.published {
            None => diffs.push("dnsd publishes nothing for this cluster".to_string()),
            Some(published) => {
                let named = |p: &PublishedMember| p.node.clone().unwrap_or_else(|| format!("{}:{}", p.host, p.port));
                let wanted = master_node.clone().unwrap_or_else(|| topology.master.to_string());
                let same = match (&published.master.node, &master_node) {
                    (Some(p), Some(m)) => p == m,
                    _ => master_record.is_some_and(|r| r.address == published.master.host && r.port == published.master.port),
                };
                if !same {
                    diffs.push(format!("DNS publishes master {}, the topology says {wanted}", named(&published.master)));
                }
                if published.topology_revision.is_some_and(|r| r < *revision) {
                    diffs.push(format!(
                        "DNS publishes topology revision {}, etcd holds revision {revision}",
                        published.topology_revision.unwrap_or_default()
                    ));
                }
            }
        }
        if let Some(answer) = dns_master {
            match (answer, master_record) {
                (DnsAnswer::Error(e), _) => diffs.push(format!("DNS: {e}")),
                (DnsAnswer::Addresses(addresses), Some(r)) => {
                    let wanted = format!("{}:{}", r.address, r.port);
                    if addresses.as_slice() != [wanted.clone()] {
                        diffs.push(format!("DNS answers master {}, the topology's master is at {wanted}", addresses.join(", ")));
                    }
                }
                (DnsAnswer::Addresses(_), None) => {}
            }
        }
        if let Some(status) = &self.status {
            if status.topology_revision < *revision && status.result == "ok" {
                diffs.push(format!("the observer last applied revision {}, etcd holds {revision}", status.topology_revision));
            }
            if status.result != "ok" {
                let error = status.error.as_deref().unwrap_or("");
                diffs.push(format!("the observer's last round: {} {error}", status.result).trim_end().to_string());
            }
        } else {
            diffs.push("the observer has recorded no round".to_string());
        }
        diffs
    }
}

/// `HH:MM:SS` UTC of a time in ms since the epoch, and how long before `now_ms`.
pub fn clock_and_age(ms: u64, now_ms: u64) -> String {
    let secs = ms / 1000;
    let ago = now_ms.saturating_sub(ms) / 1000;
    format!("{:02}:{:02}:{:02} ({ago}s ago)", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

/// What a nameserver answered for `_redis._tcp.master.<cluster>.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    Addresses(Vec<String>),
    Error(String),
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Slave => "slave",
        Role::Unknown => "unknown",
    }
}

/// A member as an operator names it on the command line: a bare node name
/// (`node-1`, made `node-1.<cluster>.<domain>`), a full node name, or an IP
/// address with an optional port.
pub fn member_arg(names: &Names, cluster: &str, arg: &str) -> Result<Member, SpecError> {
    let invalid = |message: String| SpecError::Invalid { field: arg.to_string(), message };
    let is_label = !arg.is_empty() && !arg.contains(['.', ':']);
    if is_label {
        crate::keys::validate_node_name(arg).map_err(|e| invalid(e.to_string()))?;
        return Ok(Member::new(Address::Name(names.node(cluster, arg)), None));
    }
    Member::parse_host_port(arg).map_err(|e| invalid(e.to_string()))
}

/// The topology `define` writes: the names rule and every topology rule hold.
pub fn checked(names: &Names, cluster: &str, topology: Topology) -> Result<Topology, SpecError> {
    names.check_topology(cluster, &topology)?;
    Ok(topology)
}

/// Members of `topology` that the registrations place on one host, as
/// `(host, members)`: losing that machine loses them together, so `define`
/// refuses it unless forced. Members not registered, or registered without a
/// host (agents that predate it), are not judged.
pub fn shared_hosts(state: &ClusterState, names: &Names, topology: &Topology) -> Vec<(String, Vec<String>)> {
    let mut by_host: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for member in topology.members() {
        let Some(node) = state.node_of(names, member) else { continue };
        if let Some(host) = state.nodes.get(&node).and_then(|r| r.host.clone()) {
            by_host.entry(host).or_default().push(node);
        }
    }
    by_host.into_iter().filter(|(_, members)| members.len() > 1).collect()
}

/// Why a switchover cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchoverError {
    #[error("cluster {0} has no topology defined")]
    NoTopology(String),
    #[error("{to} is not a member of {cluster}'s topology (members: {members})")]
    NotAMember { to: String, cluster: String, members: String },
    #[error("{0} is the master already")]
    AlreadyMaster(String),
}

/// The topology with `to` (a node name, or a member as the topology names it)
/// as master and the old master first among the slaves.
pub fn switchover(state: &ClusterState, names: &Names, to: &str) -> Result<Topology, SwitchoverError> {
    let (topology, _) = state.topology.as_ref().ok_or_else(|| SwitchoverError::NoTopology(state.name.clone()))?;
    let is_to = |m: &Member| m.to_string() == to || state.node_of(names, m).as_deref() == Some(to);
    if is_to(&topology.master) {
        return Err(SwitchoverError::AlreadyMaster(to.to_string()));
    }
    let Some(new_master) = topology.slaves.iter().find(|m| is_to(m)) else {
        let members = topology.members().map(|m| state.node_of(names, m).unwrap_or_else(|| m.to_string())).collect::<Vec<_>>();
        return Err(SwitchoverError::NotAMember { to: to.to_string(), cluster: state.name.clone(), members: members.join(", ") });
    };
    let slaves = std::iter::once(topology.master.clone()).chain(topology.slaves.iter().filter(|m| !is_to(m)).cloned()).collect();
    Ok(Topology { master: new_master.clone(), slaves, durability: topology.durability })
}

/// How a round the observer recorded ends a `switchover --wait`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not yet this revision, or a failure that is being retried.
    Pending,
    Done,
    /// Applied; members skipped or left lagging (exit 3).
    Partial,
    /// Failed and not retried until something changes (exit 1).
    Failed,
}

/// What `status` says about the switchover written at `revision`.
pub fn outcome(status: &StatusRecord, revision: i64) -> Outcome {
    if status.topology_revision < revision {
        return Outcome::Pending;
    }
    match (status.result.as_str(), status.retry.as_deref()) {
        ("ok", _) => Outcome::Done,
        ("partial", None) => Outcome::Partial,
        (_, Some("on_change")) => Outcome::Failed,
        _ => Outcome::Pending,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn record(port: u16, role: Role, offset: u64) -> NodeRecord {
        NodeRecord {
            address: "127.0.0.1".into(),
            port,
            role,
            repl_offset: offset,
            run_id: "r".into(),
            healthy: true,
            updated_ms: 0,
            upstream: (role == Role::Slave).then(|| "127.0.0.1:7001".into()),
            fenced: false,
            upstream_down: false,
            host: None,
        }
    }

    fn published(master: &str, slaves: &[&str], revision: i64) -> PublishedTopology {
        let m = |n: &str| PublishedMember { host: "127.0.0.1".into(), port: 7000 + n[5..].parse::<u16>().unwrap(), node: Some(n.into()) };
        PublishedTopology { master: m(master), slaves: slaves.iter().map(|s| m(s)).collect(), topology_revision: Some(revision) }
    }

    fn healthy_cluster() -> (ClusterState, Names) {
        let names = Names::default();
        let topology = Topology::from_json(
            br#"{"master":{"address":"node-1.redis-1.cluster.local"},"slaves":[{"address":"node-2.redis-1.cluster.local"},{"address":"node-3.redis-1.cluster.local"}]}"#,
        )
        .unwrap();
        let mut nodes = BTreeMap::new();
        nodes.insert("node-1".to_string(), record(7001, Role::Master, 1000));
        nodes.insert("node-2".to_string(), record(7002, Role::Slave, 1000));
        nodes.insert("node-3".to_string(), record(7003, Role::Slave, 900));
        let status: StatusRecord = serde_json::from_value(serde_json::json!({
            "trigger": null, "topology_revision": 5, "result": "ok", "observer": "o", "failures": 0, "started_ms": 1, "finished_ms": 2
        }))
        .unwrap();
        let offsets = [("node-1", 1000), ("node-2", 1000), ("node-3", 900)].map(|(n, o)| (n.to_string(), o)).into();
        let state = ClusterState {
            name: "redis-1".into(),
            topology: Some((topology, 5)),
            nodes,
            offsets,
            published: Some(published("node-1", &["node-2", "node-3"], 5)),
            status: Some(status),
            ..ClusterState::default()
        };
        (state, names)
    }

    #[test]
    fn times_read_as_utc_clock_and_age() {
        assert_eq!(clock_and_age(3_723_000, 3_733_000), "01:02:03 (10s ago)");
        assert_eq!(clock_and_age(5_000, 1_000), "00:00:05 (0s ago)", "a clock behind is no negative age");
    }

    #[test]
    fn rows_show_roles_lag_and_what_dns_publishes() {
        let (state, names) = healthy_cluster();
        let rows = state.rows(&names);
        assert_eq!(rows.len(), 3);
        assert_eq!((rows[0].desired, rows[0].dns, rows[0].lag_bytes), ("master", "master", None));
        assert_eq!((rows[1].desired, rows[1].dns, rows[1].lag_bytes), ("slave", "slave", Some(0)));
        assert_eq!(rows[2].lag_bytes, Some(100), "behind the master's offset");
        // Offsets not read (redis unreachable from here): none shown, not stale ones.
        let unread = ClusterState { offsets: BTreeMap::new(), ..state.clone() };
        assert!(unread.rows(&names).iter().all(|r| r.offset.is_none() && r.lag_bytes.is_none()));
    }

    #[test]
    fn a_healthy_cluster_checks_clean() {
        let (state, names) = healthy_cluster();
        assert_eq!(state.check(&names, Some(&DnsAnswer::Addresses(vec!["127.0.0.1:7001".into()]))), Vec::<String>::new());
    }

    #[test]
    fn check_names_every_difference() {
        let (mut state, names) = healthy_cluster();
        state.nodes.get_mut("node-2").unwrap().role = Role::Master;
        state.nodes.get_mut("node-3").unwrap().upstream = Some("127.0.0.1:7009".into());
        state.nodes.get_mut("node-3").unwrap().healthy = false;
        state.nodes.insert("node-4".into(), record(7004, Role::Slave, 0));
        state.published = Some(published("node-2", &["node-1"], 4));
        let diffs = state.check(&names, Some(&DnsAnswer::Addresses(vec!["127.0.0.1:7002".into()])));
        assert_eq!(
            diffs,
            vec![
                "node-2: redis is master, the topology says slave",
                "node-3: unhealthy (redis does not answer its node-agent)",
                "node-3: replicates from 127.0.0.1:7009, not from the master 127.0.0.1:7001",
                "node-4: registered but not in the topology",
                "DNS publishes master node-2, the topology says node-1",
                "DNS publishes topology revision 4, etcd holds revision 5",
                "DNS answers master 127.0.0.1:7002, the topology's master is at 127.0.0.1:7001",
            ]
        );
        state.nodes.remove("node-1");
        assert!(state.check(&names, None).contains(&"node-1.redis-1.cluster.local: no node-agent registers it".to_string()));
        assert_eq!(ClusterState { name: "x".into(), ..ClusterState::default() }.check(&names, None), vec!["no topology is defined"]);
    }

    #[test]
    fn members_on_the_command_line() {
        let names = Names::new("example.org").unwrap();
        assert_eq!(member_arg(&names, "r", "node-1").unwrap().to_string(), "node-1.r.example.org");
        assert_eq!(member_arg(&names, "r", "10.0.0.1:7000").unwrap().to_string(), "10.0.0.1:7000");
        assert_eq!(member_arg(&names, "r", "node-1.r.example.org").unwrap().to_string(), "node-1.r.example.org");
        assert!(member_arg(&names, "r", "master").unwrap_err().to_string().contains("reserved"));
        assert!(member_arg(&names, "r", "Node_1").is_err());
        let other = Topology::new(member_arg(&names, "r", "node-1.q.example.org").unwrap(), vec![]).unwrap();
        let refused = checked(&names, "r", other).unwrap_err().to_string();
        assert!(refused.starts_with("master.address: node-1.q.example.org is not a node of cluster r"), "{refused}");
    }

    #[test]
    fn members_that_share_a_host_are_named_with_it() {
        let (mut state, names) = healthy_cluster();
        let topology = state.topology.clone().unwrap().0;
        assert!(shared_hosts(&state, &names, &topology).is_empty(), "no host registered: nothing to judge");
        for (node, host) in [("node-1", "h1"), ("node-2", "h2"), ("node-3", "h1")] {
            state.nodes.get_mut(node).unwrap().host = Some(host.into());
        }
        assert_eq!(shared_hosts(&state, &names, &topology), vec![("h1".to_string(), vec!["node-1".to_string(), "node-3".to_string()])]);
        state.nodes.get_mut("node-3").unwrap().host = Some("h3".into());
        assert!(shared_hosts(&state, &names, &topology).is_empty());
        // A member with no registration is not judged.
        state.nodes.remove("node-2");
        state.nodes.get_mut("node-3").unwrap().host = Some("h1".into());
        assert_eq!(shared_hosts(&state, &names, &topology).len(), 1);
    }

    #[test]
    fn a_switchover_keeps_the_groups_durability() {
        let (mut state, names) = healthy_cluster();
        let durability = crate::Durability { min_replicas_to_write: 1, min_replicas_max_lag: 2 };
        if let Some((t, _)) = state.topology.as_mut() {
            t.durability = Some(durability);
        }
        assert_eq!(switchover(&state, &names, "node-3").unwrap().durability, Some(durability));
    }

    #[test]
    fn a_switchover_promotes_the_named_slave_and_demotes_the_master_first() {
        let (state, names) = healthy_cluster();
        let moved = switchover(&state, &names, "node-3").unwrap();
        assert_eq!(
            moved.to_json(),
            r#"{"master":{"address":"node-3.redis-1.cluster.local"},"slaves":[{"address":"node-1.redis-1.cluster.local"},{"address":"node-2.redis-1.cluster.local"}]}"#
        );
        assert_eq!(switchover(&state, &names, "node-2.redis-1.cluster.local").unwrap().master.to_string(), "node-2.redis-1.cluster.local");
        assert_eq!(switchover(&state, &names, "node-1"), Err(SwitchoverError::AlreadyMaster("node-1".into())));
        assert_eq!(
            switchover(&state, &names, "node-9").unwrap_err().to_string(),
            "node-9 is not a member of redis-1's topology (members: node-1, node-2, node-3)"
        );
    }

    #[test]
    fn a_switchover_waits_for_its_own_revision_and_a_final_result() {
        let status = |revision: i64, result: &str, retry: Option<&str>| {
            let mut s: StatusRecord = serde_json::from_value(serde_json::json!({
                "trigger": null, "topology_revision": revision, "result": result, "observer": "o", "failures": 0, "started_ms": 1, "finished_ms": 2
            }))
            .unwrap();
            s.retry = retry.map(str::to_string);
            s
        };
        assert_eq!(outcome(&status(4, "ok", None), 5), Outcome::Pending, "an older round");
        assert_eq!(outcome(&status(5, "ok", None), 5), Outcome::Done);
        assert_eq!(outcome(&status(6, "ok", None), 5), Outcome::Done, "superseded and applied");
        assert_eq!(outcome(&status(5, "partial", None), 5), Outcome::Partial);
        assert_eq!(outcome(&status(5, "partial", Some("backoff")), 5), Outcome::Pending, "retried");
        assert_eq!(outcome(&status(5, "dictator", Some("backoff")), 5), Outcome::Pending);
        assert_eq!(outcome(&status(5, "dictator", Some("on_change")), 5), Outcome::Failed);
    }
}
