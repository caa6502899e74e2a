//! From the topology an operator (or the observer) PUTs to what dnsd stores at
//! `/dns/<cluster>`: every member resolved to a host and port. Pure.
//!
//! A member may be given as
//! - a node name of this cluster, `<node>.<cluster>.<domain>`: the node must be
//!   registered (`/nodes/<cluster>/<node>`); its address is used, with the member's
//!   port or else the registration's;
//! - an IP literal (port default 6379): published as is, and recognised as a node when
//!   a registration of the cluster has that address and port.
//!
//! Nothing else: dnsd is the authority for these names and never resolves names of
//! other zones, so publishing one would make its answers depend on another server.

use std::collections::BTreeMap;
use std::net::IpAddr;

use topology::records::{NodeRecord, PublishedMember, PublishedTopology};
use topology::revision::{order, Order, Stale};
use topology::{Member, MemberName, Names, NotANode, Topology};

/// Why a topology cannot be published: the field and the reason (a 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Unpublishable {
    pub field: String,
    pub message: String,
}

/// Why one member cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum MemberError {
    #[error("node {node} of cluster {cluster} is not registered (no /nodes/{cluster}/{node} in etcd)")]
    NotRegistered { node: String, cluster: String },
    #[error(transparent)]
    NotANode(#[from] NotANode),
}

/// Resolves `topology` for `cluster` against its registrations (by node name).
/// A node that is no longer registered (a dead node kept in the topology as a
/// slave after a failover, or whose agent died) keeps the address it had in
/// `previous`, the topology published before; only a node never seen is refused.
pub fn resolve(
    names: &Names,
    cluster: &str,
    topology: &Topology,
    registrations: &BTreeMap<String, NodeRecord>,
    previous: Option<&PublishedTopology>,
) -> Result<PublishedTopology, Unpublishable> {
    let fields = std::iter::once("master".to_string()).chain((0..topology.slaves.len()).map(|i| format!("slaves[{i}]")));
    let mut members: Vec<(String, PublishedMember)> = Vec::new();
    for (field, member) in fields.zip(topology.members()) {
        let published = resolve_member(names, cluster, member, registrations, previous)
            .map_err(|e| Unpublishable { field: format!("{field}.address"), message: e.to_string() })?;
        if let Some((other, _)) =
            members.iter().find(|(_, m)| m.host == published.host && m.port == published.port)
        {
            return Err(Unpublishable {
                field,
                message: format!(
                    "{member} is {}:{}, the same instance as {other}",
                    published.host, published.port
                ),
            });
        }
        members.push((field, published));
    }
    let mut members = members.into_iter().map(|(_, m)| m);
    let master = members.next().ok_or_else(|| Unpublishable {
        field: "master".into(),
        message: "is required".into(),
    })?;
    Ok(PublishedTopology { master, slaves: members.collect(), topology_revision: None })
}

fn resolve_member(
    names: &Names,
    cluster: &str,
    member: &Member,
    registrations: &BTreeMap<String, NodeRecord>,
    previous: Option<&PublishedTopology>,
) -> Result<PublishedMember, MemberError> {
    match names.member_node(cluster, member)? {
        MemberName::Ip(ip) => {
            let port = member.port_or_default();
            let node = registrations
                .iter()
                .find(|(_, r)| r.port == port && r.address.parse::<IpAddr>().ok() == Some(ip))
                .map(|(node, _)| node.clone());
            Ok(PublishedMember { host: ip.to_string(), port, node })
        }
        MemberName::Node(node) => match registrations.get(&node) {
            Some(r) => Ok(PublishedMember {
                host: r.address.clone(),
                port: member.port.unwrap_or(r.port),
                node: Some(node),
            }),
            None => match previous.and_then(|p| {
                std::iter::once(&p.master).chain(&p.slaves).find(|m| m.node.as_deref() == Some(node.as_str()))
            }) {
                Some(last) => Ok(PublishedMember {
                    host: last.host.clone(),
                    port: member.port.unwrap_or(last.port),
                    node: Some(node.clone()),
                }),
                None => Err(MemberError::NotRegistered { node: node.clone(), cluster: cluster.to_string() }),
            },
        },
    }
}

/// What a publish does, given its revision and what is published now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Store this (the resolved topology, carrying the revision floor).
    Publish(PublishedTopology),
    /// A duplicate: the same revision, resolved to what is already published (this).
    Unchanged(PublishedTopology),
}

/// The revision rule (`topology::revision`) for dnsd: `revision` is the request's
/// `?revision=`, `previous` what `/dns/<cluster>` holds. A request without a revision
/// (an operator's) always publishes and keeps the floor, so it lowers nothing; a
/// duplicate that resolves differently (a node moved) is published again.
pub fn decide(
    cluster: &str,
    revision: Option<i64>,
    previous: Option<&PublishedTopology>,
    mut resolved: PublishedTopology,
) -> Result<Decision, Stale> {
    let floor = previous.and_then(|p| p.topology_revision);
    let Some(revision) = revision else {
        resolved.topology_revision = floor;
        return Ok(Decision::Publish(resolved));
    };
    resolved.topology_revision = Some(revision);
    match order(revision, floor) {
        Order::Older { applied } => Err(Stale { cluster: cluster.to_string(), revision, applied }),
        Order::Same if previous == Some(&resolved) => Ok(Decision::Unchanged(resolved)),
        Order::Same | Order::Newer => Ok(Decision::Publish(resolved)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::tests::reg;

    fn regs() -> BTreeMap<String, NodeRecord> {
        BTreeMap::from([("node-1".into(), reg("10.0.0.1", 7001)), ("node-2".into(), reg("10.0.0.2", 6379))])
    }

    #[test]
    fn an_unregistered_node_keeps_its_last_published_address() {
        let t: Topology = r#"{"master":{"address":"node-1.redis-1.cluster.local"},
            "slaves":[{"address":"node-7.redis-1.cluster.local"}]}"#.parse().unwrap();
        let previous = PublishedTopology {
            master: member("10.0.0.7", 7007, Some("node-7")),
            slaves: vec![member("10.0.0.1", 7001, Some("node-1"))],
            topology_revision: None,
        };
        let names = Names::default();
        let t = resolve(&names, "redis-1", &t, &regs(), Some(&previous)).unwrap();
        assert_eq!(t.slaves, vec![member("10.0.0.7", 7007, Some("node-7"))]);
        // Never published and not registered: refused.
        let t: Topology = r#"{"master":{"address":"node-8.redis-1.cluster.local"}}"#.parse().unwrap();
        assert!(resolve(&names, "redis-1", &t, &regs(), Some(&previous)).is_err());
    }

    fn resolve_json(json: &str) -> Result<PublishedTopology, Unpublishable> {
        resolve(&Names::default(), "redis-1", &Topology::from_json(json.as_bytes()).unwrap(), &regs(), None)
    }

    fn member(host: &str, port: u16, node: Option<&str>) -> PublishedMember {
        PublishedMember { host: host.into(), port, node: node.map(String::from) }
    }

    #[test]
    fn node_names_take_the_registration_address_and_port() {
        let t = resolve_json(
            r#"{"master":{"address":"node-1.redis-1.cluster.local"},
                "slaves":[{"address":"Node-2.redis-1.cluster.local.","port":6400}]}"#,
        )
        .unwrap();
        assert_eq!(t.master, member("10.0.0.1", 7001, Some("node-1")));
        assert_eq!(t.slaves, vec![member("10.0.0.2", 6400, Some("node-2"))]);
    }

    #[test]
    fn ip_literals_are_matched_to_registered_nodes() {
        let t = resolve_json(
            r#"{"master":{"address":"10.0.0.2"},
                "slaves":[{"address":"10.0.0.1","port":7001},{"address":"10.0.0.1"},{"address":"::1","port":7}]}"#,
        )
        .unwrap();
        assert_eq!(t.master, member("10.0.0.2", 6379, Some("node-2")));
        assert_eq!(
            t.slaves,
            vec![member("10.0.0.1", 7001, Some("node-1")), member("10.0.0.1", 6379, None), member("::1", 7, None)]
        );
    }

    #[test]
    fn rejects_with_the_field_and_the_reason() {
        let err = |json: &str| resolve_json(json).unwrap_err();
        let e = err(r#"{"master":{"address":"node-9.redis-1.cluster.local"}}"#);
        assert_eq!(e.field, "master.address");
        assert!(e.message.contains("node node-9 of cluster redis-1 is not registered"), "{e}");
        let e = err(r#"{"master":{"address":"10.0.0.1"},"slaves":[{"address":"node-1.redis-2.cluster.local"}]}"#);
        assert_eq!(e.field, "slaves[0].address");
        assert!(e.message.contains("not a node of cluster redis-1"), "{e}");
        for name in ["redis.example.com", "master.redis-1.cluster.local", "_redis._tcp.master.redis-1.cluster.local"] {
            let e = err(&format!(r#"{{"master":{{"address":"{name}"}}}}"#));
            assert_eq!(e.field, "master.address", "{name}");
            assert!(e.message.contains("only node names (<node>.redis-1.cluster.local) and IP addresses can be used"), "{e}");
        }
        // The same instance twice, once by name and once by address.
        let e = err(r#"{"master":{"address":"node-1.redis-1.cluster.local"},"slaves":[{"address":"10.0.0.1","port":7001}]}"#);
        assert_eq!(e.field, "slaves[0]");
        assert!(e.message.contains("the same instance as master"), "{e}");
    }

    fn published(host: &str, revision: Option<i64>) -> PublishedTopology {
        PublishedTopology { master: member(host, 6379, None), slaves: vec![], topology_revision: revision }
    }

    #[test]
    fn an_older_revision_is_refused_naming_both() {
        let previous = published("10.0.0.1", Some(9));
        let e = decide("redis-1", Some(8), Some(&previous), published("10.0.0.2", None)).unwrap_err();
        assert_eq!(e, Stale { cluster: "redis-1".into(), revision: 8, applied: 9 });
    }

    #[test]
    fn a_duplicate_changes_nothing_unless_it_resolves_differently() {
        let previous = published("10.0.0.1", Some(9));
        assert_eq!(decide("c", Some(9), Some(&previous), published("10.0.0.1", None)), Ok(Decision::Unchanged(previous.clone())));
        assert_eq!(
            decide("c", Some(9), Some(&previous), published("10.0.0.2", None)),
            Ok(Decision::Publish(published("10.0.0.2", Some(9))))
        );
    }

    #[test]
    fn a_newer_revision_publishes_and_raises_the_floor() {
        assert_eq!(decide("c", Some(3), None, published("10.0.0.1", None)), Ok(Decision::Publish(published("10.0.0.1", Some(3)))));
        let previous = published("10.0.0.1", Some(3));
        assert_eq!(
            decide("c", Some(4), Some(&previous), published("10.0.0.1", None)),
            Ok(Decision::Publish(published("10.0.0.1", Some(4))))
        );
    }

    #[test]
    fn without_a_revision_it_publishes_and_keeps_the_floor() {
        let previous = published("10.0.0.1", Some(9));
        assert_eq!(
            decide("c", None, Some(&previous), published("10.0.0.1", None)),
            Ok(Decision::Publish(published("10.0.0.1", Some(9))))
        );
        assert_eq!(decide("c", None, None, published("10.0.0.1", None)), Ok(Decision::Publish(published("10.0.0.1", None))));
    }
}
