//! JSON values stored in etcd under the keys of [`crate::keys`].

use serde::{Deserialize, Serialize};

/// Replication role as redis reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Slave,
    /// Not reachable, or not answered yet.
    Unknown,
}

/// `/nodes/<cluster>/<node>`: what a node-agent knows of its redis-server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The address clients must use (the agent's `--advertise-address`).
    pub address: String,
    pub port: u16,
    pub role: Role,
    pub repl_offset: u64,
    pub run_id: String,
    pub healthy: bool,
    /// Milliseconds since the Unix epoch of the last refresh.
    pub updated_ms: u64,
    /// A slave's `master_host:master_port` as redis reports it; absent on a
    /// master, while redis is down, and from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The write fence is set (`min-replicas-to-write` of
    /// [`crate::FENCE_MIN_REPLICAS`] or more): it takes no writes. A master the
    /// topology names that stays fenced is re-applied, which lifts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fenced: bool,
}

/// One member of a published topology: a resolved host and port, plus the node
/// name when the member is a registered node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedMember {
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// `/dns/<cluster>`: the topology dnsd serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedTopology {
    pub master: PublishedMember,
    #[serde(default)]
    pub slaves: Vec<PublishedMember>,
    /// The newest topology revision (`?revision=`) published for the cluster, kept
    /// with the topology so every dnsd replica refuses older ones
    /// ([`crate::revision`]). Absent until a publish carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_revision: Option<i64>,
}

/// `/sentinels/<run id>`: where a dnsd replica answers the Sentinel protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentinelRecord {
    pub address: String,
    pub port: u16,
}

/// `/status/<cluster>`: the outcome of the observer's last round for a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The trigger value the round acted on (`None` when there was none).
    pub trigger: Option<String>,
    /// etcd mod revision of the topology that was applied.
    pub topology_revision: i64,
    /// `ok`, or the stage that failed: `read`, `dictator`, `dnsd`.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which observer ran the round.
    pub observer: String,
    /// Consecutive failed rounds (0 after a success).
    pub failures: u32,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Set when the round was an automatic failover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<String>,
    /// Set when the round re-applied an unchanged topology because a member's
    /// registered role or upstream differs from it (no trigger was written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diverged: Option<String>,
    /// After a failure, when it is tried again: `backoff` (it may heal by
    /// itself), or `on_change` (it waits for a new topology, a trigger, or a
    /// change in a member's registration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_record_has_the_design_fields() {
        let r = NodeRecord {
            address: "127.0.0.1".into(),
            port: 6379,
            role: Role::Slave,
            repl_offset: 42,
            run_id: "abc".into(),
            healthy: true,
            updated_ms: 1,
            upstream: Some("127.0.0.1:6380".into()),
            fenced: false,
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"address":"127.0.0.1","port":6379,"role":"slave","repl_offset":42,"run_id":"abc",
                               "healthy":true,"updated_ms":1,"upstream":"127.0.0.1:6380"})
        );
        assert_eq!(serde_json::from_value::<NodeRecord>(v).unwrap(), r);
    }

    #[test]
    fn a_record_without_upstream_still_reads_and_a_master_writes_none() {
        let old = serde_json::json!({"address":"a","port":1,"role":"master","repl_offset":0,"run_id":"x","healthy":true,"updated_ms":0});
        let r: NodeRecord = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(r.upstream, None);
        assert_eq!(serde_json::to_value(&r).unwrap(), old, "no upstream field written when there is none");
        assert!(!r.fenced, "older agents registered no fence");
    }

    #[test]
    fn a_fenced_master_says_so_and_an_unfenced_one_writes_nothing() {
        let old = serde_json::json!({"address":"a","port":1,"role":"master","repl_offset":0,"run_id":"x","healthy":true,"updated_ms":0});
        let mut r: NodeRecord = serde_json::from_value(old).unwrap();
        r.fenced = true;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["fenced"], true);
        assert_eq!(serde_json::from_value::<NodeRecord>(v).unwrap(), r);
    }
}
