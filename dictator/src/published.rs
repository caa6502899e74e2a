//! Where clients are sent now: the master dnsd publishes for a cluster, read from
//! `/dns/<cluster>`. Asked only when an apply would otherwise be refused for
//! writes another master holds: if clients already write to the new master, that
//! member is quarantined and the rest of the group applied (see `plan`).
//! Any failure to read it counts as "unknown", which keeps the refusal.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use service::etcd::LazyClient;
use topology::records::PublishedTopology;
use topology::Keys;

/// How long an apply waits for the answer before treating it as unknown.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

pub struct Published {
    etcd: Arc<LazyClient>,
    keys: Keys,
}

impl Published {
    pub fn new(etcd: Arc<LazyClient>) -> Published {
        let keys = etcd.args().keys();
        Published { etcd, keys }
    }

    /// The published master's address; `None` when nothing is published, etcd
    /// does not answer in time, or the record does not name an IP address.
    pub async fn master(&self, cluster: &str) -> Option<SocketAddr> {
        let key = self.keys.dns(cluster);
        let read = async {
            let mut client = self.etcd.client().await?;
            client.get(key.as_str(), None).await
        };
        let got = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Ok(Ok(got)) => got,
            Ok(Err(error)) => {
                self.etcd.reset().await;
                tracing::warn!(cluster, %error, endpoints = self.etcd.endpoints(), "cannot read the published master");
                return None;
            }
            Err(_) => {
                tracing::warn!(cluster, endpoints = self.etcd.endpoints(), "no answer from etcd for the published master");
                return None;
            }
        };
        let kv = got.kvs().first()?;
        let published: PublishedTopology = match serde_json::from_slice(kv.value()) {
            Ok(p) => p,
            Err(error) => {
                tracing::warn!(cluster, %key, %error, "the published topology does not parse");
                return None;
            }
        };
        let ip: IpAddr = published.master.host.parse().ok()?;
        Some(SocketAddr::new(ip, published.master.port))
    }
}
