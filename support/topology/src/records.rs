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
///
/// The agent writes it only when its [`Facts`] change; its lease's keep-alive,
/// not a write, says that the agent lives. So `repl_offset` and `updated_ms` are
/// those of the last change: whoever needs an offset now asks redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The address clients must use (the agent's `--advertise-address`).
    pub address: String,
    pub port: u16,
    pub role: Role,
    /// The replication offset when the record was written (not kept current).
    pub repl_offset: u64,
    pub run_id: String,
    pub healthy: bool,
    /// Milliseconds since the Unix epoch when the record was written.
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
    /// A slave whose master did not answer a PING from the slave's host: the
    /// observer's second view of a master it cannot reach itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upstream_down: bool,
    /// The machine redis runs on (the agent's `--host`, by default its hostname),
    /// for placement: no two members of a group on one host, masters spread.
    /// Absent from agents that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// What readers act on in a registration: a change in it is written by the
/// node-agent and wakes the observer's worker for the cluster. Not the offset
/// and `updated_ms`, which move with every write redis takes: writing them would
/// make every idle group cost etcd a write per probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    address: String,
    port: u16,
    role: Role,
    upstream: Option<String>,
    run_id: String,
    healthy: bool,
    fenced: bool,
    upstream_down: bool,
    host: Option<String>,
}

impl NodeRecord {
    /// What a reader acts on (see [`Facts`]).
    pub fn facts(&self) -> Facts {
        Facts {
            address: self.address.clone(),
            port: self.port,
            role: self.role,
            upstream: self.upstream.clone(),
            run_id: self.run_id.clone(),
            healthy: self.healthy,
            fenced: self.fenced,
            upstream_down: self.upstream_down,
            host: self.host.clone(),
        }
    }
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
    /// `ok`: applied to every member and published. `partial`: the master is in
    /// place and published, but the report lists members `unreachable`,
    /// `lagging` or `failed` (retried only for `failed`: `retry` says so). Or the
    /// stage that failed: `dictator`, `dnsd`.
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
    /// The dictator's report of the round as it answered it (members unreachable,
    /// lagging, forced and failed, the steps and their timings), also with a
    /// refusal when it sent one. Absent when the dictator did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<serde_json::Value>,
    /// The last rounds, oldest first, at most [`HISTORY_LEN`]: what was applied,
    /// why and how it went ([`push_history`]). Kept in this record so that
    /// history costs no etcd write of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// How many rounds `/status/<cluster>` remembers.
pub const HISTORY_LEN: usize = 20;

/// One round in [`StatusRecord::history`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When the round finished (ms since the Unix epoch); for repeats, the last.
    pub at_ms: u64,
    pub topology_revision: i64,
    /// The master of the applied topology, as the topology names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// As [`StatusRecord::result`].
    pub result: String,
    /// Why the round ran: a new topology, a trigger, a divergence, a failover.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How many consecutive rounds this entry stands for (retries of one failure).
    #[serde(default = "one")]
    pub rounds: u32,
}

fn one() -> u32 {
    1
}

/// Adds `entry` to `history`, keeping the last [`HISTORY_LEN`] entries. A round
/// that repeats the last one (same revision, result, reason and error: a retry)
/// only counts in it, so a failure retried for hours does not push out the
/// rounds before it.
pub fn push_history(history: &mut Vec<HistoryEntry>, entry: HistoryEntry) {
    if let Some(last) = history.last_mut()
        && last.topology_revision == entry.topology_revision
        && last.result == entry.result
        && last.reason == entry.reason
        && last.error == entry.error
    {
        last.rounds = last.rounds.saturating_add(entry.rounds);
        last.at_ms = entry.at_ms;
        return;
    }
    history.push(entry);
    let excess = history.len().saturating_sub(HISTORY_LEN);
    history.drain(..excess);
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

    fn entry(revision: i64, result: &str, at_ms: u64) -> HistoryEntry {
        HistoryEntry { at_ms, topology_revision: revision, master: None, result: result.into(), reason: "r".into(), error: None, rounds: 1 }
    }

    #[test]
    fn history_keeps_the_last_rounds_and_folds_repeats() {
        let mut history = Vec::new();
        push_history(&mut history, entry(1, "ok", 1));
        push_history(&mut history, entry(2, "dictator", 2));
        push_history(&mut history, entry(2, "dictator", 3));
        assert_eq!(history.len(), 2, "a retry failing the same way is the same entry");
        assert_eq!((history[1].rounds, history[1].at_ms), (2, 3));
        push_history(&mut history, entry(2, "ok", 4));
        assert_eq!(history.len(), 3, "the retry that succeeds is a new entry");
        for r in 3..40 {
            push_history(&mut history, entry(r, "ok", r as u64));
        }
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history.last().map(|e| e.topology_revision), Some(39), "the newest kept");
        assert_eq!(history.first().map(|e| e.topology_revision), Some(39 - HISTORY_LEN as i64 + 1), "the oldest dropped");
    }

    #[test]
    fn a_status_from_before_the_report_still_reads() {
        let old = serde_json::json!({"trigger":null,"topology_revision":3,"result":"ok","observer":"o","failures":0,"started_ms":1,"finished_ms":2});
        let status: StatusRecord = serde_json::from_value(old).unwrap();
        assert_eq!((status.report, status.history), (None, vec![]));
    }

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
            upstream_down: false,
            host: None,
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

    mod hostile {
        //! Values under `/nodes`, `/dns`, `/sentinels` and `/status` may be written
        //! by anyone with etcd access: every reader parses them with these types,
        //! so random or mutated bytes must be an error, never a panic, and what
        //! the services write must read back the same.
        use super::super::*;
        use proptest::prelude::*;

        fn arb_role() -> impl Strategy<Value = Role> {
            prop_oneof![Just(Role::Master), Just(Role::Slave), Just(Role::Unknown)]
        }

        fn arb_node() -> impl Strategy<Value = NodeRecord> {
            (
                ("[a-z0-9.:-]{1,20}", any::<u16>(), arb_role(), any::<u64>(), "[0-9a-f]{0,40}", any::<bool>(), any::<u64>()),
                (proptest::option::of("[0-9.:\\[\\]]{1,25}"), any::<bool>(), any::<bool>(), proptest::option::of("[a-z0-9.-]{1,20}")),
            )
                .prop_map(|((address, port, role, repl_offset, run_id, healthy, updated_ms), (upstream, fenced, upstream_down, host))| {
                    NodeRecord { address, port, role, repl_offset, run_id, healthy, updated_ms, upstream, fenced, upstream_down, host }
                })
        }

        fn arb_member() -> impl Strategy<Value = PublishedMember> {
            ("[a-z0-9.-]{1,20}", any::<u16>(), proptest::option::of("[a-z0-9-]{1,10}"))
                .prop_map(|(host, port, node)| PublishedMember { host, port, node })
        }

        fn arb_published() -> impl Strategy<Value = PublishedTopology> {
            (arb_member(), proptest::collection::vec(arb_member(), 0..4), proptest::option::of(any::<i64>()))
                .prop_map(|(master, slaves, topology_revision)| PublishedTopology { master, slaves, topology_revision })
        }

        fn arb_status() -> impl Strategy<Value = StatusRecord> {
            (proptest::option::of("[a-f0-9-]{0,36}"), any::<i64>(), "[a-z_]{1,10}", proptest::option::of(".{0,30}"),
             "[a-z0-9-]{1,12}", any::<u32>(), any::<u64>(), any::<u64>())
                .prop_map(|(trigger, topology_revision, result, error, observer, failures, started_ms, finished_ms)| StatusRecord {
                    trigger, topology_revision, result, error, observer, failures, started_ms, finished_ms,
                    failover: None, diverged: None, retry: None, report: None, history: Vec::new(),
                })
        }

        /// Flips, inserts or cuts bytes of `bytes`.
        fn mutate(mut bytes: Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) -> Vec<u8> {
            for (at, kind, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = *byte,
                    1 => bytes.insert(i, *byte),
                    _ => bytes.truncate(i),
                }
            }
            bytes
        }

        fn edits() -> impl Strategy<Value = Vec<(prop::sample::Index, u8, u8)>> {
            proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6)
        }

        /// Parses `bytes` as `T`; whatever parses must serialize and parse back to itself.
        fn parses_safely<T>(bytes: &[u8]) -> Result<(), TestCaseError>
        where
            T: serde::de::DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
        {
            if let Ok(value) = serde_json::from_slice::<T>(bytes) {
                let again = serde_json::to_vec(&value).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(serde_json::from_slice::<T>(&again).ok(), Some(value));
            }
            Ok(())
        }

        proptest! {
            #[test]
            fn records_round_trip(node in arb_node(), published in arb_published(), status in arb_status()) {
                prop_assert_eq!(serde_json::from_slice::<NodeRecord>(&serde_json::to_vec(&node).unwrap()).unwrap(), node);
                prop_assert_eq!(serde_json::from_slice::<PublishedTopology>(&serde_json::to_vec(&published).unwrap()).unwrap(), published);
                prop_assert_eq!(serde_json::from_slice::<StatusRecord>(&serde_json::to_vec(&status).unwrap()).unwrap(), status);
            }

            #[test]
            fn random_bytes_are_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                parses_safely::<NodeRecord>(&bytes)?;
                parses_safely::<PublishedTopology>(&bytes)?;
                parses_safely::<SentinelRecord>(&bytes)?;
                parses_safely::<StatusRecord>(&bytes)?;
            }

            #[test]
            fn mutated_records_are_never_a_panic(
                node in arb_node(), published in arb_published(), status in arb_status(), edits in edits(),
            ) {
                parses_safely::<NodeRecord>(&mutate(serde_json::to_vec(&node).unwrap(), &edits))?;
                parses_safely::<PublishedTopology>(&mutate(serde_json::to_vec(&published).unwrap(), &edits))?;
                parses_safely::<StatusRecord>(&mutate(serde_json::to_vec(&status).unwrap(), &edits))?;
                let sentinel = SentinelRecord { address: node.address.clone(), port: node.port };
                parses_safely::<SentinelRecord>(&mutate(serde_json::to_vec(&sentinel).unwrap(), &edits))?;
            }
        }
    }
}
