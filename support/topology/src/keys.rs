//! The etcd key layout of DESIGN.md, behind an optional prefix (`--etcd-prefix`) so
//! that several installations, or several tests, can share one etcd.

use crate::{validate_label, NameError};

/// Builds and parses the keys of one installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// A key this project owns, as [`Keys::parse`] recognises it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Topology { cluster: String },
    Trigger { cluster: String },
    Maintenance { cluster: String },
    Node { cluster: String, node: String },
    Dns { cluster: String },
    Status { cluster: String },
    Applied { cluster: String },
    Domain,
    Sentinel { run_id: String },
}

impl Keys {
    /// `prefix` may be empty, `foo`, `/foo` or `/foo/`; all but empty mean `/foo`.
    pub fn new(prefix: &str) -> Keys {
        let trimmed = prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() { String::new() } else { format!("/{trimmed}") };
        Keys { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `/config/<cluster>/topology`: the desired topology JSON.
    pub fn topology(&self, cluster: &str) -> String {
        format!("{}/config/{cluster}/topology", self.prefix)
    }

    /// `/config/<cluster>/topology-trigger`: a fresh uuid asks for a re-apply.
    pub fn trigger(&self, cluster: &str) -> String {
        format!("{}/config/{cluster}/topology-trigger", self.prefix)
    }

    /// `/config/<cluster>/maintenance`: present means "no automatic failover".
    pub fn maintenance(&self, cluster: &str) -> String {
        format!("{}/config/{cluster}/maintenance", self.prefix)
    }

    /// `/config/`: everything operators configure, for every cluster.
    pub fn config_prefix(&self) -> String {
        format!("{}/config/", self.prefix)
    }

    /// `/nodes/<cluster>/<node>`: a node-agent's registration.
    pub fn node(&self, cluster: &str, node: &str) -> String {
        format!("{}/nodes/{cluster}/{node}", self.prefix)
    }

    /// `/nodes/<cluster>/`: every registration of one cluster.
    pub fn cluster_nodes_prefix(&self, cluster: &str) -> String {
        format!("{}/nodes/{cluster}/", self.prefix)
    }

    /// `/nodes/`: every registration.
    pub fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    /// `/dns/<cluster>`: the topology dnsd publishes.
    pub fn dns(&self, cluster: &str) -> String {
        format!("{}/dns/{cluster}", self.prefix)
    }

    /// `/dns/`: every published topology.
    pub fn dns_prefix(&self) -> String {
        format!("{}/dns/", self.prefix)
    }

    /// `/status/<cluster>`: the observer's record of its last round.
    pub fn status(&self, cluster: &str) -> String {
        format!("{}/status/{cluster}", self.prefix)
    }

    /// `/applied/<cluster>`: the newest topology revision a dictator accepted for the
    /// cluster (decimal), so every dictator refuses older ones (`revision`).
    pub fn applied(&self, cluster: &str) -> String {
        format!("{}/applied/{cluster}", self.prefix)
    }

    /// `/domain`: the zone dnsd serves (its `--domain`), written by the first dnsd to
    /// start, so the observer and the operator scripts check node names against it.
    pub fn domain(&self) -> String {
        format!("{}/domain", self.prefix)
    }

    /// `/sentinels/<run id>`: a dnsd replica answering the Sentinel protocol, held
    /// under its lease, so every replica can list the others (`SENTINEL sentinels`).
    pub fn sentinel(&self, run_id: &str) -> String {
        format!("{}/sentinels/{run_id}", self.prefix)
    }

    /// `/sentinels/`: every dnsd replica answering the Sentinel protocol.
    pub fn sentinels_prefix(&self) -> String {
        format!("{}/sentinels/", self.prefix)
    }

    /// `/election/observer`: the observers' leader election.
    pub fn election(&self) -> String {
        format!("{}/election/observer", self.prefix)
    }

    /// Recognises one of our keys. Anything else (other prefixes, malformed cluster
    /// or node names, unknown leaves) is `None`, so watchers can skip it safely.
    pub fn parse(&self, key: &str) -> Option<Key> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let cluster = |c: &str| validate_label("cluster", c).ok().map(|()| c.to_string());
        match parts.as_slice() {
            ["config", c, "topology"] => Some(Key::Topology { cluster: cluster(c)? }),
            ["config", c, "topology-trigger"] => Some(Key::Trigger { cluster: cluster(c)? }),
            ["config", c, "maintenance"] => Some(Key::Maintenance { cluster: cluster(c)? }),
            ["nodes", c, n] => {
                validate_node_name(n).ok()?;
                Some(Key::Node { cluster: cluster(c)?, node: n.to_string() })
            }
            ["dns", c] => Some(Key::Dns { cluster: cluster(c)? }),
            ["status", c] => Some(Key::Status { cluster: cluster(c)? }),
            ["applied", c] => Some(Key::Applied { cluster: cluster(c)? }),
            ["domain"] => Some(Key::Domain),
            ["sentinels", id] if is_run_id(id) => Some(Key::Sentinel { run_id: id.to_string() }),
            _ => None,
        }
    }
}

/// A Sentinel run id: 40 lowercase hexadecimal digits, as redis makes them.
pub fn is_run_id(id: &str) -> bool {
    id.len() == 40 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Names under a cluster's DNS zone that a node may not take.
pub const RESERVED_NODE_NAMES: [&str; 3] = ["master", "slaves", "version"];

/// A node name is a DNS label that does not collide with the cluster's own records.
pub fn validate_node_name(node: &str) -> Result<(), NameError> {
    validate_label("node", node)?;
    if RESERVED_NODE_NAMES.contains(&node) {
        return Err(NameError::Reserved(node.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_without_prefix() {
        let k = Keys::new("");
        assert_eq!(k.topology("redis-1"), "/config/redis-1/topology");
        assert_eq!(k.trigger("redis-1"), "/config/redis-1/topology-trigger");
        assert_eq!(k.node("redis-1", "node-1"), "/nodes/redis-1/node-1");
        assert_eq!(k.dns("redis-1"), "/dns/redis-1");
        assert_eq!(k.status("redis-1"), "/status/redis-1");
        assert_eq!(k.applied("redis-1"), "/applied/redis-1");
        assert_eq!(k.domain(), "/domain");
        assert_eq!(k.election(), "/election/observer");
        assert_eq!(k.config_prefix(), "/config/");
    }

    #[test]
    fn prefix_is_normalized() {
        for p in ["t1", "/t1", "/t1/", "t1/"] {
            assert_eq!(Keys::new(p).topology("c"), "/t1/config/c/topology", "{p}");
        }
        assert_eq!(Keys::new("/").topology("c"), "/config/c/topology");
    }

    #[test]
    fn parse_recognises_only_our_keys() {
        let k = Keys::new("/p");
        assert_eq!(
            k.parse("/p/nodes/redis-1/node-2"),
            Some(Key::Node { cluster: "redis-1".into(), node: "node-2".into() })
        );
        assert_eq!(k.parse("/p/config/r/topology-trigger"), Some(Key::Trigger { cluster: "r".into() }));
        assert_eq!(k.parse("/nodes/redis-1/node-2"), None, "other prefix");
        assert_eq!(k.parse("/px/nodes/redis-1/node-2"), None, "prefix must end at a slash");
        assert_eq!(k.parse("/p/nodes/Redis/node-2"), None);
        assert_eq!(k.parse("/p/nodes/redis-1/master"), None, "reserved node name");
        assert_eq!(k.parse("/p/config/r/other"), None);
        assert_eq!(k.parse("/p/dns/r/extra"), None);
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(k.parse(&k.sentinel(id)), Some(Key::Sentinel { run_id: id.into() }));
        assert_eq!(k.parse("/p/sentinels/0123"), None, "not a run id");
        assert_eq!(k.parse(&k.sentinel(&id.to_uppercase())), None, "not lowercase");
    }

    proptest! {
        #[test]
        fn built_keys_parse_back(cluster in "[a-z][a-z0-9-]{0,20}[a-z0-9]", node in "n[a-z0-9-]{0,20}[a-z0-9]", prefix in "(/[a-z]{1,5}){0,2}") {
            let k = Keys::new(&prefix);
            prop_assert_eq!(k.parse(&k.topology(&cluster)), Some(Key::Topology { cluster: cluster.clone() }));
            prop_assert_eq!(k.parse(&k.trigger(&cluster)), Some(Key::Trigger { cluster: cluster.clone() }));
            prop_assert_eq!(k.parse(&k.dns(&cluster)), Some(Key::Dns { cluster: cluster.clone() }));
            prop_assert_eq!(k.parse(&k.status(&cluster)), Some(Key::Status { cluster: cluster.clone() }));
            prop_assert_eq!(k.parse(&k.applied(&cluster)), Some(Key::Applied { cluster: cluster.clone() }));
            prop_assert_eq!(k.parse(&k.node(&cluster, &node)), Some(Key::Node { cluster: cluster.clone(), node: node.clone() }));
        }

        #[test]
        fn parse_never_panics(key in "[ -~]{0,60}") {
            let _ = Keys::new("/x").parse(&key);
            let _ = Keys::new("").parse(&key);
        }
    }
}
