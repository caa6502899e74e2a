//! Shared vocabulary of redis-topology.
//!
//! Every service speaks the same three dialects, and they live here so that they
//! cannot drift apart:
//!
//! - [`spec`]: the topology JSON operators write (`{"master": {...}, "slaves": [...]}`),
//!   parsed with validation that names the offending field.
//! - [`keys`]: the etcd key layout (`/config/<cluster>/topology`, `/nodes/<cluster>/<node>`, ...)
//!   with the configurable prefix, and the JSON values stored under those keys ([`records`]).
//! - [`names`]: the DNS names dnsd serves (`_redis._tcp.master.<cluster>.<domain>`, ...) and
//!   the reverse mapping from a query name to what it asks for.
//!
//! - [`cluster`]: one cluster as etcd holds it (topology, registrations, what DNS
//!   publishes, the observer's status), its node table and the check of roles
//!   against the topology and DNS; shared by `redis-topology` and the status page.
//! - [`history`]: whether one instance holds everything another has written, from
//!   their replication ids and offsets; the write fence's recorded point.
//! - [`revision`]: the rule that refuses an apply or publish older than the last one.
//! - [`placement`]: masters per host, and the rebalance plan that gives every
//!   live host back its fair share of masters.
//!
//! Nothing in this crate does I/O; it is all pure functions and data.

pub mod cluster;
pub mod history;
pub mod keys;
pub mod names;
pub mod placement;
pub mod records;
pub mod revision;
pub mod spec;

pub use keys::Keys;

pub use names::{MemberName, Names, NotANode, QueryName};
pub use spec::{Address, AddressError, Durability, Member, SpecError, Topology, DEFAULT_REDIS_PORT};

/// `min-replicas-to-write` at or above this value is the dictator's write fence on
/// a master being demoted: no deployment has a million replicas, so writes are
/// refused (`NOREPLICAS`) while it is set. Anything that must tell a fenced master
/// from a writable one (the dictator, the counter) compares against this.
pub const FENCE_MIN_REPLICAS: u32 = 1_000_000;

/// Why a cluster, node or domain name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name must be 1 to 63 characters, got {len}")]
    Length { kind: &'static str, len: usize },
    #[error("{kind} name {name:?} may only hold lowercase letters, digits and '-'")]
    Characters { kind: &'static str, name: String },
    #[error("{kind} name {name:?} must not start or end with '-'")]
    Hyphen { kind: &'static str, name: String },
    #[error("node name {0:?} is reserved for the cluster's records")]
    Reserved(String),
    #[error("domain must not be empty")]
    EmptyDomain,
    #[error("domain {domain:?}: {label}")]
    Domain { domain: String, label: Box<NameError> },
}

/// Checks that `name` can be a cluster or node name: one DNS label of lowercase
/// letters, digits and inner hyphens, at most 63 characters. Names end up both in
/// etcd keys and in DNS names, so the stricter of the two rules applies.
pub fn validate_label(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > 63 {
        return Err(NameError::Length { kind, len: name.len() });
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(NameError::Characters { kind, name: name.to_string() });
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::Hyphen { kind, name: name.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(validate_label("cluster", "redis-1").is_ok());
        assert!(validate_label("cluster", "a").is_ok());
        assert!(validate_label("cluster", "").is_err());
        assert!(validate_label("cluster", "-a").is_err());
        assert!(validate_label("cluster", "a-").is_err());
        assert!(validate_label("cluster", "Redis").is_err());
        assert!(validate_label("cluster", "a.b").is_err());
        assert!(validate_label("cluster", "a/b").is_err());
        assert!(validate_label("cluster", &"a".repeat(64)).is_err());
        assert!(validate_label("cluster", &"a".repeat(63)).is_ok());
        assert_eq!(
            validate_label("node", "a_b").unwrap_err().to_string(),
            "node name \"a_b\" may only hold lowercase letters, digits and '-'"
        );
    }
}
