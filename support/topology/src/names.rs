//! The DNS names dnsd serves, and the reverse: what a query name asks for.
//!
//! Under zone `<domain>` (default `cluster.local`), per cluster:
//! - `master.<cluster>` and `_redis._tcp.master.<cluster>`: SRV to the master node;
//! - `slaves.<cluster>` and `_redis._tcp.slaves.<cluster>`: one SRV per slave;
//! - `version.<cluster>`: TXT with the etcd revision of the published topology;
//! - `<node>.<cluster>`: A/AAAA and SRV of one registered node.

use crate::keys::validate_node_name;
use crate::spec::{Address, Member, SpecError, Topology};
use crate::{validate_label, NameError};

pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// Builds and parses the names of one zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    domain: String,
}

/// What a query name inside (or outside) the zone refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryName {
    /// The zone apex itself (SOA/NS live here).
    Apex,
    /// `<cluster>.<domain>`: exists only as a parent of the names below.
    Cluster { cluster: String },
    /// `master.<cluster>` (`srv: false`) or `_redis._tcp.master.<cluster>` (`srv: true`).
    Master { cluster: String, srv: bool },
    Slaves { cluster: String, srv: bool },
    Version { cluster: String },
    Node { cluster: String, node: String },
    /// Inside the zone but not a name we could ever serve: NXDOMAIN.
    Unknown,
    /// Not in our zone at all: REFUSED (we are no open resolver).
    OutsideZone,
}

impl Names {
    /// `domain` is normalized to lowercase without a trailing dot.
    pub fn new(domain: &str) -> Result<Names, NameError> {
        let domain = domain.strip_suffix('.').unwrap_or(domain).to_ascii_lowercase();
        if domain.is_empty() {
            return Err(NameError::EmptyDomain);
        }
        for label in domain.split('.') {
            validate_label("domain", label)
                .map_err(|e| NameError::Domain { domain: domain.clone(), label: Box::new(e) })?;
        }
        Ok(Names { domain })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn cluster(&self, cluster: &str) -> String {
        format!("{cluster}.{}", self.domain)
    }

    pub fn node(&self, cluster: &str, node: &str) -> String {
        format!("{node}.{cluster}.{}", self.domain)
    }

    pub fn master(&self, cluster: &str) -> String {
        format!("master.{cluster}.{}", self.domain)
    }

    pub fn master_srv(&self, cluster: &str) -> String {
        format!("_redis._tcp.master.{cluster}.{}", self.domain)
    }

    pub fn slaves(&self, cluster: &str) -> String {
        format!("slaves.{cluster}.{}", self.domain)
    }

    pub fn slaves_srv(&self, cluster: &str) -> String {
        format!("_redis._tcp.slaves.{cluster}.{}", self.domain)
    }

    pub fn version(&self, cluster: &str) -> String {
        format!("version.{cluster}.{}", self.domain)
    }

    /// Classifies a query name (any case, with or without the trailing dot).
    pub fn parse(&self, qname: &str) -> QueryName {
        let qname = qname.strip_suffix('.').unwrap_or(qname).to_ascii_lowercase();
        if qname == self.domain {
            return QueryName::Apex;
        }
        let Some(rest) = qname
            .strip_suffix(self.domain.as_str())
            .and_then(|r| r.strip_suffix('.'))
        else {
            return QueryName::OutsideZone;
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let cluster = |c: &&str| validate_label("cluster", c).ok().map(|()| c.to_string());
        let parsed = match labels.as_slice() {
            [c] => cluster(c).map(|cluster| QueryName::Cluster { cluster }),
            ["master", c] => cluster(c).map(|cluster| QueryName::Master { cluster, srv: false }),
            ["slaves", c] => cluster(c).map(|cluster| QueryName::Slaves { cluster, srv: false }),
            ["_redis", "_tcp", "master", c] => {
                cluster(c).map(|cluster| QueryName::Master { cluster, srv: true })
            }
            ["_redis", "_tcp", "slaves", c] => {
                cluster(c).map(|cluster| QueryName::Slaves { cluster, srv: true })
            }
            ["version", c] => cluster(c).map(|cluster| QueryName::Version { cluster }),
            [n, c] if validate_node_name(n).is_ok() => {
                cluster(c).map(|cluster| QueryName::Node { cluster, node: n.to_string() })
            }
            _ => None,
        };
        parsed.unwrap_or(QueryName::Unknown)
    }
}

/// A topology member that breaks the names rule ([`Names::member_node`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} is not a node of cluster {cluster}; only node names (<node>.{zone}) and IP addresses can be used")]
pub struct NotANode {
    pub name: String,
    pub cluster: String,
    pub zone: String,
}

/// What a member that keeps the names rule is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberName {
    Ip(std::net::IpAddr),
    Node(String),
}

impl Names {
    /// THE names rule, one for the dictator and dnsd: a member of `cluster` is an IP
    /// literal or `<node>.<cluster>.<domain>`. Any other name could be applied by the
    /// dictator but never published by dnsd, and the observer could not match it to a
    /// registration.
    pub fn member_node(&self, cluster: &str, member: &Member) -> Result<MemberName, NotANode> {
        match &member.address {
            Address::Ip(ip) => Ok(MemberName::Ip(*ip)),
            Address::Name(name) => match self.parse(name) {
                QueryName::Node { cluster: c, node } if c == cluster => Ok(MemberName::Node(node)),
                _ => Err(NotANode { name: name.clone(), cluster: cluster.to_string(), zone: self.cluster(cluster) }),
            },
        }
    }

    /// The names rule for a whole topology; the error names the field
    /// (`slaves[1].address: ...`), like every other topology error (a 422).
    pub fn check_topology(&self, cluster: &str, topology: &Topology) -> Result<(), SpecError> {
        let fields = std::iter::once("master".to_string()).chain((0..topology.slaves.len()).map(|i| format!("slaves[{i}]")));
        for (field, member) in fields.zip(topology.members()) {
            self.member_node(cluster, member)
                .map_err(|e| SpecError::Invalid { field: format!("{field}.address"), message: e.to_string() })?;
        }
        Ok(())
    }
}

impl Default for Names {
    fn default() -> Self {
        Names { domain: DEFAULT_DOMAIN.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builds_the_design_names() {
        let n = Names::default();
        assert_eq!(n.node("redis-1", "node-1"), "node-1.redis-1.cluster.local");
        assert_eq!(n.master("redis-1"), "master.redis-1.cluster.local");
        assert_eq!(n.master_srv("redis-1"), "_redis._tcp.master.redis-1.cluster.local");
        assert_eq!(n.slaves_srv("redis-1"), "_redis._tcp.slaves.redis-1.cluster.local");
        assert_eq!(n.version("redis-1"), "version.redis-1.cluster.local");
    }

    #[test]
    fn domain_is_normalized_and_validated() {
        assert_eq!(Names::new("Example.ORG.").unwrap().domain(), "example.org");
        assert!(Names::new("").is_err());
        assert!(Names::new("a..b").is_err());
        assert!(Names::new("a_b.c").is_err());
    }

    #[test]
    fn classifies_queries() {
        let n = Names::default();
        let c = || "redis-1".to_string();
        assert_eq!(n.parse("cluster.local."), QueryName::Apex);
        assert_eq!(n.parse("CLUSTER.local"), QueryName::Apex);
        assert_eq!(n.parse("redis-1.cluster.local."), QueryName::Cluster { cluster: c() });
        assert_eq!(n.parse("master.redis-1.cluster.local."), QueryName::Master { cluster: c(), srv: false });
        assert_eq!(n.parse("_redis._tcp.master.redis-1.cluster.local"), QueryName::Master { cluster: c(), srv: true });
        assert_eq!(n.parse("_REDIS._tcp.Slaves.redis-1.cluster.local"), QueryName::Slaves { cluster: c(), srv: true });
        assert_eq!(n.parse("version.redis-1.cluster.local"), QueryName::Version { cluster: c() });
        assert_eq!(
            n.parse("node-1.redis-1.cluster.local."),
            QueryName::Node { cluster: c(), node: "node-1".into() }
        );
        assert_eq!(n.parse("a.b.redis-1.cluster.local"), QueryName::Unknown);
        assert_eq!(n.parse("_x._tcp.master.redis-1.cluster.local"), QueryName::Unknown);
        assert_eq!(n.parse("example.com."), QueryName::OutsideZone);
        assert_eq!(n.parse("xcluster.local."), QueryName::OutsideZone);
        assert_eq!(n.parse("."), QueryName::OutsideZone);
    }

    #[test]
    fn members_are_ip_literals_or_node_names_of_the_cluster() {
        let n = Names::new("example.org").unwrap();
        let t = |json: &str| Topology::from_json(json.as_bytes()).unwrap();
        assert_eq!(n.check_topology("redis-1", &t(r#"{"master":{"address":"node-1.redis-1.example.org"},
            "slaves":[{"address":"10.0.0.2"},{"address":"::1","port":7}]}"#)), Ok(()));
        for (name, field) in [
            ("node-1.redis-1.cluster.local", "slaves[1].address"), // another domain
            ("node-1.redis-2.example.org", "slaves[1].address"),   // another cluster
            ("redis.example.com", "slaves[1].address"),            // any A/AAAA name
            ("_redis._tcp.master.redis-1.example.org", "slaves[1].address"),
            ("master.redis-1.example.org", "slaves[1].address"),
        ] {
            let json = format!(r#"{{"master":{{"address":"10.0.0.1"}},"slaves":[{{"address":"10.0.0.2"}},{{"address":"{name}"}}]}}"#);
            let e = n.check_topology("redis-1", &t(&json)).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{field}: {name} is not a node of cluster redis-1; only node names (<node>.redis-1.example.org) and IP addresses can be used")
            );
        }
    }

    proptest! {
        #[test]
        fn built_names_parse_back(cluster in "[a-z][a-z0-9-]{0,20}[a-z0-9]", node in "n[a-z0-9-]{0,20}[a-z0-9]") {
            let n = Names::default();
            prop_assert_eq!(n.parse(&n.master(&cluster)), QueryName::Master { cluster: cluster.clone(), srv: false });
            prop_assert_eq!(n.parse(&n.master_srv(&cluster)), QueryName::Master { cluster: cluster.clone(), srv: true });
            prop_assert_eq!(n.parse(&n.slaves(&cluster)), QueryName::Slaves { cluster: cluster.clone(), srv: false });
            prop_assert_eq!(n.parse(&n.slaves_srv(&cluster)), QueryName::Slaves { cluster: cluster.clone(), srv: true });
            prop_assert_eq!(n.parse(&n.version(&cluster)), QueryName::Version { cluster: cluster.clone() });
            prop_assert_eq!(n.parse(&format!("{}.", n.node(&cluster, &node))), QueryName::Node { cluster: cluster.clone(), node: node.clone() });
        }

        #[test]
        fn parse_never_panics(q in "[ -~]{0,80}") {
            let _ = Names::default().parse(&q);
        }
    }
}
