//! Role checks for load balancers that cannot follow SRV records (HAProxy's
//! `option httpchk`), as Patroni has them:
//!
//! - `GET /master`: 200 only while this redis is the master the topology names
//!   AND takes writes (answers, reports the master role, carries no write
//!   fence); 503 otherwise, with the reason.
//! - `GET /replica?lag=<bytes>`: 200 while this redis is a healthy slave of the
//!   topology, replicating from its master, at most `lag` bytes behind the
//!   master's offset (no `lag`: any lag); 503 otherwise.
//!
//! Each check asks redis (`CONFIG GET min-replicas-to-write`, `INFO
//! replication`), etcd (the topology, the registrations) and, for a `lag`, the
//! master itself (`INFO replication`: registrations carry no current offset)
//! afresh: a check never answers from a state older than the request. [`master`] and
//! [`replica`] decide, pure.

use std::sync::Arc;

use etcd_client::GetOptions;
use serde::Deserialize;
use service::etcd::LazyClient;
use service::redis_auth::{connect_host, Credentials, Timeouts};
use service::redis_info::{read_offset, Info, ReplicationRole};
use topology::keys::Key;
use topology::records::NodeRecord;
use topology::{Address, Member, Topology};

use crate::config::RedisTarget;

/// What one check found.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `None`: redis did not answer (the reason).
    pub redis: Option<Result<RedisFacts, String>>,
    /// The desired topology; `Err`: etcd unreadable or no valid topology.
    pub topology: Option<Result<Topology, String>>,
    pub registrations: Vec<(String, NodeRecord)>,
    /// The master's `master_repl_offset`, read from it for a `lag` check.
    pub master_offset: Option<Result<u64, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisFacts {
    pub master: bool,
    pub fenced: bool,
    pub offset: u64,
    /// A slave's `master_host:master_port`.
    pub upstream: Option<String>,
    pub link_up: bool,
}

/// Who this agent is: its node name and cluster, and the address it advertises.
#[derive(Debug, Clone)]
pub struct Identity {
    pub cluster: String,
    pub node: String,
    pub address: String,
    pub port: u16,
}

impl Identity {
    /// Whether a topology member names this node: `<node>.<cluster>.` at the
    /// start of a name (the names rule leaves only the zone to vary), or the
    /// advertised IP and port.
    pub fn is(&self, member: &Member) -> bool {
        match &member.address {
            Address::Name(name) => name.starts_with(&format!("{}.{}.", self.node, self.cluster)),
            Address::Ip(ip) => ip.to_string() == self.address && member.port_or_default() == self.port,
        }
    }

    /// The registration of the node a member names.
    fn registration<'a>(&self, member: &Member, registrations: &'a [(String, NodeRecord)]) -> Option<&'a NodeRecord> {
        registrations.iter().find_map(|(node, record)| {
            let named = match &member.address {
                Address::Name(name) => name.starts_with(&format!("{node}.{}.", self.cluster)),
                Address::Ip(ip) => ip.to_string() == record.address && member.port_or_default() == record.port,
            };
            named.then_some(record)
        })
    }
}

/// `GET /master`: `Ok` for 200, `Err(reason)` for 503.
pub fn master(me: &Identity, facts: &Facts) -> Result<(), String> {
    let redis = redis_up(facts)?;
    let topology = topology_of(facts)?;
    if !me.is(&topology.master) {
        return Err(format!("not the topology's master ({} is)", topology.master));
    }
    if !redis.master {
        return Err("redis is not a master".into());
    }
    if redis.fenced {
        return Err("redis carries the dictator's write fence: it takes no writes".into());
    }
    Ok(())
}

/// `GET /replica?lag=N`: `Ok` for 200, `Err(reason)` for 503.
pub fn replica(me: &Identity, facts: &Facts, max_lag: Option<u64>) -> Result<(), String> {
    let redis = redis_up(facts)?;
    let topology = topology_of(facts)?;
    if !topology.slaves.iter().any(|s| me.is(s)) {
        return Err("not a slave in the topology".into());
    }
    if redis.master {
        return Err("redis is a master".into());
    }
    if !redis.link_up {
        return Err("the replication link is down".into());
    }
    let master = me.registration(&topology.master, &facts.registrations);
    if let Some(master) = master {
        let expected = format!("{}:{}", master.address, master.port);
        if redis.upstream.as_deref().is_some_and(|u| u != expected) {
            return Err(format!("replicates from {}, not from the master {expected}", redis.upstream.as_deref().unwrap_or("?")));
        }
    }
    if let Some(max_lag) = max_lag {
        let master_offset = match &facts.master_offset {
            Some(Ok(offset)) => *offset,
            Some(Err(e)) => return Err(format!("the master's offset: {e}")),
            None => return Err("the master's offset was not read: lag unknown".into()),
        };
        let lag = master_offset.saturating_sub(redis.offset);
        if lag > max_lag {
            return Err(format!("{lag} bytes behind the master, more than {max_lag}"));
        }
    }
    Ok(())
}

fn redis_up(facts: &Facts) -> Result<&RedisFacts, String> {
    match &facts.redis {
        Some(Ok(redis)) => Ok(redis),
        Some(Err(e)) => Err(format!("redis: {e}")),
        None => Err("redis not asked".into()),
    }
}

fn topology_of(facts: &Facts) -> Result<&Topology, String> {
    match &facts.topology {
        Some(Ok(topology)) => Ok(topology),
        Some(Err(e)) => Err(e.clone()),
        None => Err("no topology defined".into()),
    }
}

/// `?lag=<bytes>`.
#[derive(Debug, Deserialize)]
pub struct LagQuery {
    pub lag: Option<u64>,
}

/// Gathers [`Facts`] for one instance's checks.
pub struct Checker {
    pub me: Identity,
    redis: RedisTarget,
    credentials: Credentials,
    /// Shared by the checkers of all the agent's instances.
    etcd: Arc<LazyClient>,
}

impl Checker {
    pub fn new(me: Identity, redis: RedisTarget, credentials: Credentials, etcd: Arc<LazyClient>) -> Arc<Checker> {
        Arc::new(Checker { me, redis, credentials, etcd })
    }

    pub async fn facts(&self) -> Facts {
        let (redis, (topology, registrations)) = tokio::join!(self.redis_facts(), self.etcd_facts());
        Facts { redis: Some(redis), topology, registrations, master_offset: None }
    }

    /// The offset of the master this redis replicates from, read from it.
    pub async fn master_offset(&self, facts: &Facts) -> Result<u64, String> {
        let upstream = match &facts.redis {
            Some(Ok(RedisFacts { upstream: Some(upstream), .. })) => upstream.clone(),
            _ => return Err("this redis replicates from no master".into()),
        };
        let master = RedisTarget::parse(&upstream).map_err(|e| e.to_string())?;
        let mut conn = connect_host(&master.host, master.port, Timeouts::default(), &self.credentials)
            .await
            .map_err(|e| format!("{upstream}: {e}"))?;
        read_offset(&mut conn).await.map_err(|e| format!("{upstream}: {e}"))
    }

    async fn redis_facts(&self) -> Result<RedisFacts, String> {
        let mut conn = connect_host(&self.redis.host, self.redis.port, Timeouts::default(), &self.credentials)
            .await
            .map_err(|e| e.to_string())?;
        let info: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.map_err(|e| e.to_string())?;
        let fence: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg("min-replicas-to-write").query_async(&mut conn).await.map_err(|e| e.to_string())?;
        let info = Info::parse(&info);
        let master = matches!(info.role().map_err(|e| e.to_string())?, ReplicationRole::Master);
        let fenced = service::fence::is_fence(service::fence::setting(&fence));
        let upstream = match (info.field("master_host"), info.field("master_port")) {
            (Ok(host), Ok(port)) => Some(format!("{host}:{port}")),
            _ => None,
        };
        Ok(RedisFacts {
            master,
            fenced,
            offset: info.applied_offset().unwrap_or(0),
            upstream,
            link_up: info.field("master_link_status").is_ok_and(|s| s == "up"),
        })
    }

    async fn etcd_facts(&self) -> (Option<Result<Topology, String>>, Vec<(String, NodeRecord)>) {
        let mut client = match self.etcd.client().await {
            Ok(client) => client,
            Err(e) => return (Some(Err(format!("etcd: {e}"))), Vec::new()),
        };
        let keys = self.etcd.args().keys();
        let topology = match client.get(keys.topology(&self.me.cluster), None).await {
            Ok(got) => got.kvs().first().map(|kv| Topology::from_json(kv.value()).map_err(|e| format!("topology: {e}"))),
            Err(e) => {
                self.etcd.reset().await;
                return (Some(Err(format!("etcd: {e}"))), Vec::new());
            }
        };
        let registrations = match client.get(keys.cluster_nodes_prefix(&self.me.cluster), Some(GetOptions::new().with_prefix())).await {
            Ok(got) => got
                .kvs()
                .iter()
                .filter_map(|kv| match keys.parse(kv.key_str().ok()?)? {
                    Key::Node { node, .. } => Some((node, serde_json::from_slice::<NodeRecord>(kv.value()).ok()?)),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        (topology, registrations)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use topology::records::Role;

    fn me(node: &str) -> Identity {
        Identity { cluster: "r".into(), node: node.into(), address: "10.0.0.1".into(), port: 6379 }
    }

    fn facts(master: bool, fenced: bool, offset: u64) -> Facts {
        let topology = Topology::from_json(br#"{"master":{"address":"n1.r.cluster.local"},"slaves":[{"address":"n2.r.cluster.local"}]}"#).unwrap();
        let record = NodeRecord {
            address: "10.0.0.1".into(),
            port: 6379,
            role: Role::Master,
            repl_offset: 1000,
            run_id: "x".into(),
            healthy: true,
            updated_ms: 0,
            upstream: None,
            fenced: false,
            upstream_down: false,
            host: None,
        };
        Facts {
            redis: Some(Ok(RedisFacts { master, fenced, offset, upstream: (!master).then(|| "10.0.0.1:6379".into()), link_up: !master })),
            topology: Some(Ok(topology)),
            registrations: vec![("n1".into(), record)],
            master_offset: Some(Ok(1000)),
        }
    }

    #[test]
    fn master_is_200_only_for_the_topologys_writable_master() {
        assert_eq!(master(&me("n1"), &facts(true, false, 1000)), Ok(()));
        assert!(master(&me("n1"), &facts(true, true, 1000)).unwrap_err().contains("fence"));
        assert!(master(&me("n1"), &facts(false, false, 1000)).unwrap_err().contains("not a master"));
        assert!(master(&me("n2"), &facts(true, false, 1000)).unwrap_err().contains("not the topology's master"));
        let down = Facts { redis: Some(Err("refused".into())), ..facts(true, false, 0) };
        assert!(master(&me("n1"), &down).unwrap_err().starts_with("redis: refused"));
        let none = Facts { topology: None, ..facts(true, false, 0) };
        assert!(master(&me("n1"), &none).is_err(), "no topology, no master");
    }

    #[test]
    fn replica_is_200_for_a_linked_slave_within_the_lag() {
        assert_eq!(replica(&me("n2"), &facts(false, false, 900), None), Ok(()));
        assert_eq!(replica(&me("n2"), &facts(false, false, 900), Some(100)), Ok(()));
        assert_eq!(replica(&me("n2"), &facts(false, false, 900), Some(99)), Err("100 bytes behind the master, more than 99".into()));
        let unread = Facts { master_offset: None, ..facts(false, false, 900) };
        assert_eq!(replica(&me("n2"), &unread, None), Ok(()), "no lag asked, no offset needed");
        assert!(replica(&me("n2"), &unread, Some(100)).unwrap_err().contains("lag unknown"));
        let failed = Facts { master_offset: Some(Err("refused".into())), ..facts(false, false, 900) };
        assert_eq!(replica(&me("n2"), &failed, Some(100)), Err("the master's offset: refused".into()));
        assert!(replica(&me("n1"), &facts(false, false, 900), None).unwrap_err().contains("not a slave"));
        assert!(replica(&me("n2"), &facts(true, false, 900), None).unwrap_err().contains("is a master"));
        let mut elsewhere = facts(false, false, 900);
        if let Some(Ok(redis)) = &mut elsewhere.redis {
            redis.upstream = Some("10.0.0.9:6379".into());
        }
        assert!(replica(&me("n2"), &elsewhere, None).unwrap_err().contains("not from the master 10.0.0.1:6379"));
    }

    #[test]
    fn a_member_is_this_node_by_name_or_advertised_address() {
        let n1 = me("n1");
        assert!(n1.is(&Member::parse_host_port("n1.r.example.org").unwrap()));
        assert!(!n1.is(&Member::parse_host_port("n1.q.example.org").unwrap()), "another cluster's n1");
        assert!(!n1.is(&Member::parse_host_port("n10.r.example.org").unwrap()));
        assert!(n1.is(&Member::parse_host_port("10.0.0.1").unwrap()));
        assert!(!n1.is(&Member::parse_host_port("10.0.0.1:7000").unwrap()));
    }
}
