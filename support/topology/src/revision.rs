//! The revision rule: every apply (dictator) and publish (dnsd) may carry the etcd
//! `mod_revision` of the topology it comes from (`?revision=N`). A service refuses a
//! revision older than the newest it accepted for that cluster, so a late request from
//! a slow or deposed observer can never roll roles or DNS back. Pure.
//!
//! - older than the last accepted: refused (409, [`Stale`]);
//! - the same: accepted again and idempotent (a trigger re-applies the same topology;
//!   it changes nothing that already holds);
//! - newer: accepted, and it becomes the last accepted;
//! - none (an operator's manual request): neither checked nor recorded.

use serde_json::{json, Value};

/// How a request's revision compares with the last accepted one for its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Nothing accepted yet, or an older one: accept and record.
    Newer,
    /// A duplicate: accept, record nothing.
    Same,
    Older { applied: i64 },
}

pub fn order(revision: i64, applied: Option<i64>) -> Order {
    match applied {
        Some(applied) if revision < applied => Order::Older { applied },
        Some(applied) if revision == applied => Order::Same,
        _ => Order::Newer,
    }
}

/// A refused request: its revision is older than the one last accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topology revision {revision} is older than revision {applied}, the last one accepted for cluster {cluster}: refused, so as not to go back")]
pub struct Stale {
    pub cluster: String,
    pub revision: i64,
    pub applied: i64,
}

impl Stale {
    /// The 409 body: `{"error", "revision", "applied_revision"}`.
    pub fn body(&self) -> Value {
        json!({ "error": self.to_string(), "revision": self.revision, "applied_revision": self.applied })
    }
}

/// The `?revision=N` query parameter (absent for an operator's manual request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct RevisionQuery {
    pub revision: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_is_refused_same_is_a_duplicate_newer_is_accepted() {
        assert_eq!(order(5, None), Order::Newer);
        assert_eq!(order(6, Some(5)), Order::Newer);
        assert_eq!(order(5, Some(5)), Order::Same);
        assert_eq!(order(4, Some(5)), Order::Older { applied: 5 });
    }

    #[test]
    fn the_refusal_names_both_revisions() {
        let stale = Stale { cluster: "redis-1".into(), revision: 4, applied: 9 };
        let body = stale.body();
        assert_eq!((body["revision"].as_i64(), body["applied_revision"].as_i64()), (Some(4), Some(9)));
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("revision 4") && error.contains("revision 9") && error.contains("redis-1"), "{error}");
    }
}
