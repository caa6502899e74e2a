//! Reading every cluster's keys from etcd into [`ClusterState`]s (for
//! `redis-topology` and the observer's status page), and the operator's writes:
//! a topology (a plain put, as an operator's write always wins; a switchover
//! only over the topology it read), a trigger, the maintenance flag.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use topology::keys::Key;
use topology::records::{NodeRecord, PublishedTopology, StatusRecord};
use topology::{Keys, Names, Topology};

use topology::cluster::{ClusterState, SwitchoverError};

use crate::redis_auth::{connect, Credentials, Timeouts};
use crate::redis_info::read_offset;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("the topology of {0} changed while the switchover was computed; run it again")]
    Raced(String),
    /// The switchover asked for does not fit the topology read: nothing written.
    #[error(transparent)]
    Switchover(#[from] SwitchoverError),
}

/// Reads the replication offset of every healthy registered node of `states`
/// from redis itself, in parallel, each within `timeout`, into
/// [`ClusterState::offsets`]: registrations carry no current offset. A node
/// that does not answer in time is left out.
pub async fn read_offsets(states: &mut [ClusterState], credentials: &Credentials, timeout: Duration) {
    let timeouts = Timeouts { connect: timeout, command: timeout };
    let wanted: Vec<(usize, String, SocketAddr)> = states
        .iter()
        .enumerate()
        .flat_map(|(i, s)| {
            s.nodes.iter().filter(|(_, r)| r.healthy).filter_map(move |(node, r)| {
                let ip: std::net::IpAddr = r.address.parse().ok()?;
                Some((i, node.clone(), SocketAddr::new(ip, r.port)))
            })
        })
        .collect();
    let read = futures::future::join_all(wanted.into_iter().map(|(i, node, addr)| async move {
        let offset = tokio::time::timeout(timeout * 2, async {
            let mut conn = connect(addr, timeouts, credentials).await.ok()?;
            read_offset(&mut conn).await.ok()
        })
        .await
        .ok()
        .flatten();
        (i, node, offset)
    }))
    .await;
    for (i, node, offset) in read {
        if let (Some(state), Some(offset)) = (states.get_mut(i), offset) {
            state.offsets.insert(node, offset);
        }
    }
}

/// `<key>: <why>` for a value that does not parse.
fn unreadable(kv: &etcd_client::KeyValue, error: serde_json::Error) -> String {
    format!("{}: {error}", String::from_utf8_lossy(kv.key()))
}

pub struct Store {
    pub etcd: Client,
    pub keys: Keys,
}

impl Store {
    /// Every cluster with a topology, a registration, a publication or a status;
    /// only `cluster` when given.
    pub async fn clusters(&mut self, cluster: Option<&str>) -> Result<Vec<ClusterState>, StoreError> {
        let prefixes = [
            self.keys.config_prefix(),
            self.keys.nodes_prefix(),
            self.keys.dns_prefix(),
            format!("{}/status/", self.keys.prefix()),
        ];
        self.read(&prefixes, cluster).await
    }

    /// Every cluster's topology, maintenance and registrations, and nothing else:
    /// what placement counts (a failover holds a lock across every cluster while
    /// it reads this, so the publications and the rounds' histories stay unread).
    pub async fn placement(&mut self) -> Result<Vec<ClusterState>, StoreError> {
        let prefixes = [self.keys.config_prefix(), self.keys.nodes_prefix()];
        self.read(&prefixes, None).await
    }

    async fn read(&mut self, prefixes: &[String], cluster: Option<&str>) -> Result<Vec<ClusterState>, StoreError> {
        let mut states: BTreeMap<String, ClusterState> = BTreeMap::new();
        for prefix in prefixes {
            let got = self.etcd.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await?;
            for kv in got.kvs() {
                let Some(key) = kv.key_str().ok().and_then(|k| self.keys.parse(k)) else { continue };
                let name = match &key {
                    Key::Topology { cluster }
                    | Key::Maintenance { cluster }
                    | Key::Node { cluster, .. }
                    | Key::Dns { cluster }
                    | Key::Status { cluster } => cluster.clone(),
                    _ => continue,
                };
                if cluster.is_some_and(|c| c != name) {
                    continue;
                }
                let state = states.entry(name.clone()).or_insert_with(|| ClusterState { name, ..ClusterState::default() });
                match key {
                    Key::Topology { .. } => match Topology::from_json(kv.value()) {
                        Ok(topology) => state.topology = Some((topology, kv.mod_revision())),
                        Err(e) => state.topology_error = Some(e.to_string()),
                    },
                    Key::Maintenance { .. } => state.paused = Some(String::from_utf8_lossy(kv.value()).into_owned()),
                    Key::Node { node, .. } => match serde_json::from_slice::<NodeRecord>(kv.value()) {
                        Ok(record) => {
                            state.nodes.insert(node, record);
                        }
                        Err(e) => state.unreadable.push(unreadable(kv, e)),
                    },
                    Key::Dns { .. } => match serde_json::from_slice::<PublishedTopology>(kv.value()) {
                        Ok(published) => state.published = Some(published),
                        Err(e) => state.unreadable.push(unreadable(kv, e)),
                    },
                    Key::Status { .. } => match serde_json::from_slice::<StatusRecord>(kv.value()) {
                        Ok(status) => state.status = Some(status),
                        Err(e) => state.unreadable.push(unreadable(kv, e)),
                    },
                    _ => {}
                }
            }
        }
        Ok(states.into_values().collect())
    }

    /// One cluster, empty when etcd holds nothing about it.
    pub async fn cluster(&mut self, cluster: &str) -> Result<ClusterState, StoreError> {
        let found = self.clusters(Some(cluster)).await?.into_iter().next();
        Ok(found.unwrap_or_else(|| ClusterState { name: cluster.to_string(), ..ClusterState::default() }))
    }

    /// The zone dnsd recorded (`/domain`), if any dnsd has run.
    pub async fn domain(&mut self) -> Result<Option<String>, StoreError> {
        let got = self.etcd.get(self.keys.domain(), None).await?;
        Ok(got.kvs().first().and_then(|kv| kv.value_str().ok()).map(str::to_string))
    }

    pub async fn status(&mut self, cluster: &str) -> Result<Option<StatusRecord>, StoreError> {
        let got = self.etcd.get(self.keys.status(cluster), None).await?;
        Ok(got.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Writes the desired topology; returns its revision.
    pub async fn define(&mut self, cluster: &str, topology: &Topology) -> Result<i64, StoreError> {
        let put = self.etcd.put(self.keys.topology(cluster), topology.to_json(), None).await?;
        Ok(put.header().map_or(0, |h| h.revision()))
    }

    /// Writes `topology` only over the one at `revision`; returns the new revision.
    pub async fn replace(&mut self, cluster: &str, topology: &Topology, revision: i64) -> Result<i64, StoreError> {
        let key = self.keys.topology(cluster);
        let txn = Txn::new()
            .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, revision)])
            .and_then([TxnOp::put(key.as_str(), topology.to_json(), None)]);
        let response = self.etcd.txn(txn).await?;
        if !response.succeeded() {
            return Err(StoreError::Raced(cluster.to_string()));
        }
        Ok(response.header().map_or(0, |h| h.revision()))
    }

    /// Writes the switchover of `state`'s cluster to `to` (a node name, or a member
    /// as the topology names it), only over the topology `state` was read with:
    /// the new topology and its revision. `redis-topology switchover`, its
    /// `rebalance` and the observer's rebalance all move a master this way.
    pub async fn switch_over(&mut self, state: &ClusterState, names: &Names, to: &str) -> Result<(Topology, i64), StoreError> {
        let topology = topology::cluster::switchover(state, names, to)?;
        let read = state.topology.as_ref().map_or(0, |(_, revision)| *revision);
        let revision = self.replace(&state.name, &topology, read).await?;
        Ok((topology, revision))
    }

    /// A fresh trigger: the observer applies the topology again.
    pub async fn trigger(&mut self, cluster: &str) -> Result<String, StoreError> {
        let trigger = uuid::Uuid::new_v4().to_string();
        self.etcd.put(self.keys.trigger(cluster), trigger.as_str(), None).await?;
        Ok(trigger)
    }

    /// Sets (`Some(reason)`) or clears the maintenance flag.
    pub async fn pause(&mut self, cluster: &str, reason: Option<&str>) -> Result<(), StoreError> {
        let key = self.keys.maintenance(cluster);
        match reason {
            Some(reason) => self.etcd.put(key, reason, None).await.map(drop)?,
            None => self.etcd.delete(key, None).await.map(drop)?,
        }
        Ok(())
    }
}
