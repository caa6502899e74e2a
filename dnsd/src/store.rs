//! The etcd side: list `/dns/`, `/nodes/` and `/sentinels/`, then watch them from the listed
//! revision, feeding every change into [`Live`].
//!
//! The list, watch and relist after any failure are `service::etcd::follow`'s; this
//! module only turns keys into zone changes. The last zone keeps being served while
//! etcd is away: a DNS answer never depends on etcd being up.

use std::sync::Arc;

use etcd_client::{Event, EventType, KeyValue};
use service::cli::EtcdArgs;
use service::etcd::{FollowError, FollowPolicy, Follower};
use service::Shutdown;
use topology::keys::Key;
use topology::records::{NodeRecord, PublishedTopology, SentinelRecord};
use topology::Keys;

use crate::live::Live;
use crate::state::{Change, Records, Sentinels};
use crate::zone::{Published, Registrations};

/// Follows etcd until `shutdown`. `first_list` (if given) is told once the first
/// list was attempted: `true` when it succeeded, `false` when etcd did not answer
/// (dnsd then serves an empty zone until it does).
pub async fn follow(
    etcd: EtcdArgs,
    live: Arc<Live>,
    shutdown: Shutdown,
    first_list: Option<tokio::sync::oneshot::Sender<bool>>,
) {
    let keys = etcd.keys();
    let prefixes = [keys.dns_prefix(), keys.nodes_prefix(), keys.sentinels_prefix()];
    let mut zone = ZoneFollower { keys, live, first_list };
    let policy = FollowPolicy::default();
    tokio::select! {
        () = service::etcd::follow(|| etcd.connect(), &prefixes, &policy, &mut zone) => {}
        () = shutdown.requested() => tracing::debug!("etcd follower stopped"),
    }
}

/// Feeds what etcd holds under `/dns/` and `/nodes/` into the served zone.
struct ZoneFollower {
    keys: Keys,
    live: Arc<Live>,
    first_list: Option<tokio::sync::oneshot::Sender<bool>>,
}

impl Follower for ZoneFollower {
    fn listed(&mut self, revision: i64, kvs: &[KeyValue]) {
        metrics::gauge!("redis_topology_dnsd_etcd_connected").set(1.0);
        let mut registrations = Registrations::new();
        let mut published = Published::new();
        let mut sentinels = Sentinels::new();
        for kv in kvs {
            match parse_change(&self.keys, kv, false) {
                Some(Change::Registration { cluster, node, record: Some(record) }) => {
                    registrations.insert((cluster, node), record);
                }
                Some(Change::Published { cluster, topology: Some(topology) }) => {
                    published.insert(cluster, (topology, kv.mod_revision()));
                }
                Some(Change::Sentinel { run_id, record: Some(record) }) => {
                    sentinels.insert(run_id, record);
                }
                _ => {}
            }
        }
        let (registration_count, published_count) = (registrations.len(), published.len());
        let changed = self.live.relist(Records::listed(registrations, published, revision).with_sentinels(sentinels));
        tracing::info!(revision, registrations = registration_count, published = published_count, changed,
            "listed etcd; watching /dns/, /nodes/ and /sentinels/");
        if let Some(first) = self.first_list.take() {
            let _ = first.send(true);
        }
    }

    fn changed(&mut self, events: &[Event]) {
        let changes: Vec<(Change, i64)> = events
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let change = parse_change(&self.keys, kv, event.event_type() == EventType::Delete)?;
                Some((change, kv.mod_revision()))
            })
            .collect();
        if !changes.is_empty() {
            let count = changes.len();
            let changed = self.live.apply(changes);
            tracing::debug!(events = count, changed, serial = self.live.zone().serial(), "applied etcd events");
        }
    }

    fn unavailable(&mut self, _error: &FollowError) {
        metrics::gauge!("redis_topology_dnsd_etcd_connected").set(0.0);
        if let Some(first) = self.first_list.take() {
            let _ = first.send(false);
        }
    }
}

/// The change a key-value (or its deletion) makes. Keys dnsd does not follow are
/// `None`; so are values that are not valid JSON, with a warning: a broken value must
/// not take the other records down with it.
fn parse_change(keys: &Keys, kv: &KeyValue, deleted: bool) -> Option<Change> {
    let key = kv.key_str().ok()?;
    match keys.parse(key)? {
        Key::Node { cluster, node } => {
            let record = if deleted { None } else { Some(parse_value::<NodeRecord>(key, kv.value())?) };
            Some(Change::Registration { cluster, node, record })
        }
        Key::Dns { cluster } => {
            let topology = if deleted { None } else { Some(parse_value::<PublishedTopology>(key, kv.value())?) };
            Some(Change::Published { cluster, topology })
        }
        Key::Sentinel { run_id } => {
            let record = if deleted { None } else { Some(parse_value::<SentinelRecord>(key, kv.value())?) };
            Some(Change::Sentinel { run_id, record })
        }
        _ => None,
    }
}

fn parse_value<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(key, %error, "ignoring a value that is not the expected JSON");
            None
        }
    }
}
