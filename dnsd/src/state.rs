//! What dnsd knows of etcd, and the rules for changing it. Pure.
//!
//! Changes arrive from two places: the watch on `/dns/` and `/nodes/` (every replica),
//! and this replica's own `PUT /dns`, which applies the topology it just stored
//! without waiting for the watch to echo it (that saves the watch round trip). The two
//! race, so every published topology carries the etcd revision it was written at and
//! a change older than what is already known for that cluster is dropped: an echo, or
//! an event delayed behind a newer PUT, can never bring back an old master.

use std::collections::BTreeMap;

use topology::records::{NodeRecord, PublishedTopology, Role, SentinelRecord};

use crate::zone::{Published, Registrations};

/// One change to a key dnsd follows. `None` is a deletion.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Registration { cluster: String, node: String, record: Option<NodeRecord> },
    Published { cluster: String, topology: Option<PublishedTopology> },
    /// A dnsd replica answering the Sentinel protocol (`/sentinels/<run id>`).
    Sentinel { run_id: String, record: Option<SentinelRecord> },
}

/// The dnsd replicas answering the Sentinel protocol, by run id.
pub type Sentinels = BTreeMap<String, SentinelRecord>;

/// The registrations and published topologies, with the revisions that order them.
#[derive(Debug, Clone, Default)]
pub struct Records {
    registrations: Registrations,
    published: Published,
    sentinels: Sentinels,
    /// Revision of the last put or delete of `/dns/<cluster>` seen, per cluster.
    dns_revisions: BTreeMap<String, i64>,
    /// Revision of the last full listing: it reflected every change up to here.
    listed_at: i64,
    /// Newest revision applied; the zone's serial.
    revision: i64,
}

impl Records {
    /// The state as a listing at `revision` found it. `published` carries each
    /// key's modification revision.
    pub fn listed(registrations: Registrations, published: Published, revision: i64) -> Records {
        let dns_revisions = published.iter().map(|(c, (_, rev))| (c.clone(), *rev)).collect();
        Records { registrations, published, sentinels: Sentinels::new(), dns_revisions, listed_at: revision, revision }
    }

    /// The same listing, with the Sentinel replicas it found.
    pub fn with_sentinels(mut self, sentinels: Sentinels) -> Records {
        self.sentinels = sentinels;
        self
    }

    /// Replaces everything with a fresh listing (after a reconnect), keeping the serial
    /// from going backwards. Returns whether what is served changed.
    pub fn relist(&mut self, listed: Records) -> bool {
        let changed = !same_registrations(&self.registrations, &listed.registrations)
            || self.published != listed.published
            || self.sentinels != listed.sentinels;
        let revision = self.revision.max(listed.revision);
        *self = listed;
        self.revision = revision;
        changed
    }

    /// Applies one change made at etcd `revision`. Returns whether what is served
    /// changed (a node-agent's periodic refresh of its offset does not).
    pub fn apply(&mut self, change: Change, revision: i64) -> bool {
        let changed = match change {
            Change::Registration { cluster, node, record } => {
                let key = (cluster, node);
                match record {
                    Some(record) => {
                        let changed = self.registrations.get(&key).map(served) != Some(served(&record));
                        self.registrations.insert(key, record);
                        changed
                    }
                    None => self.registrations.remove(&key).is_some(),
                }
            }
            Change::Published { cluster, topology } => {
                let floor = self.dns_revisions.get(&cluster).copied().unwrap_or(self.listed_at);
                if revision <= floor {
                    return false;
                }
                self.dns_revisions.insert(cluster.clone(), revision);
                match topology {
                    Some(topology) => {
                        self.published.insert(cluster, (topology, revision));
                        true
                    }
                    None => self.published.remove(&cluster).is_some(),
                }
            }
            Change::Sentinel { run_id, record } => match record {
                Some(record) => self.sentinels.insert(run_id, record.clone()) != Some(record),
                None => self.sentinels.remove(&run_id).is_some(),
            },
        };
        self.revision = self.revision.max(revision);
        changed
    }

    pub fn registrations(&self) -> &Registrations {
        &self.registrations
    }

    pub fn published(&self) -> &Published {
        &self.published
    }

    pub fn sentinels(&self) -> &Sentinels {
        &self.sentinels
    }

    /// Newest etcd revision applied.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The zone serial: the newest revision, in the 32 bits SOA has.
    pub fn serial(&self) -> u32 {
        (self.revision.max(0) as u64 & u64::from(u32::MAX)) as u32
    }
}

fn same_registrations(a: &Registrations, b: &Registrations) -> bool {
    a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, ra), (kb, rb))| ka == kb && served(ra) == served(rb))
}

/// What of a registration the zone depends on: where the node is, and whether it is
/// healthy and not a master (else a published slave leaves the read pool).
fn served(record: &NodeRecord) -> (&str, u16, bool, bool) {
    (record.address.as_str(), record.port, record.healthy, record.role == Role::Master)
}

#[cfg(test)]
mod tests {
    use super::*;
    use topology::records::{PublishedMember, Role};

    fn record(address: &str, port: u16, offset: u64) -> NodeRecord {
        NodeRecord {
            address: address.into(),
            port,
            role: Role::Master,
            repl_offset: offset,
            run_id: "r".into(),
            healthy: true,
            updated_ms: offset,
            upstream: None,
            fenced: false,
            upstream_down: false,
            host: None,
        }
    }

    fn topo(port: u16) -> PublishedTopology {
        PublishedTopology {
            master: PublishedMember { host: "10.0.0.1".into(), port, node: None },
            slaves: vec![],
            topology_revision: None,
        }
    }

    fn publish(cluster: &str, port: Option<u16>) -> Change {
        Change::Published { cluster: cluster.into(), topology: port.map(topo) }
    }

    fn register(node: &str, r: Option<NodeRecord>) -> Change {
        Change::Registration { cluster: "c".into(), node: node.into(), record: r }
    }

    #[test]
    fn an_older_publication_never_overwrites_a_newer_one() {
        let mut s = Records::listed(Default::default(), Default::default(), 10);
        assert!(s.apply(publish("c", Some(1)), 12), "local apply of our PUT");
        assert!(!s.apply(publish("c", Some(1)), 12), "the watch echo of the same PUT");
        assert!(!s.apply(publish("c", Some(9)), 11), "an older event arriving late");
        assert_eq!(s.published()["c"], (topo(1), 12));
        assert!(s.apply(publish("c", Some(2)), 13));
        assert_eq!(s.published()["c"], (topo(2), 13));
        assert!(s.apply(publish("c", None), 14), "deleted");
        assert!(!s.apply(publish("c", Some(2)), 13), "a stale put cannot resurrect a deleted topology");
        assert!(s.published().is_empty());
        assert_eq!(s.revision(), 14);
        assert_eq!(s.serial(), 14);
    }

    #[test]
    fn changes_older_than_the_listing_are_dropped() {
        let mut s = Records::listed(Default::default(), Default::default(), 20);
        assert!(!s.apply(publish("new", Some(1)), 19), "the listing at 20 already reflects it");
        assert!(s.apply(publish("new", Some(1)), 21));
    }

    #[test]
    fn refreshing_a_registration_is_not_a_change_moving_it_or_its_health_is() {
        let mut s = Records::default();
        assert!(s.apply(register("n1", Some(record("10.0.0.1", 6379, 1))), 2));
        assert!(!s.apply(register("n1", Some(record("10.0.0.1", 6379, 2))), 3), "offset refresh");
        assert_eq!(s.registrations()[&("c".into(), "n1".into())].repl_offset, 2, "still stored");
        assert!(s.apply(register("n1", Some(record("10.0.0.2", 6379, 3))), 4), "new address");
        assert!(s.apply(register("n1", Some(record("10.0.0.2", 6380, 3))), 5), "new port");
        let mut unhealthy = record("10.0.0.2", 6380, 4);
        unhealthy.healthy = false;
        assert!(s.apply(register("n1", Some(unhealthy.clone())), 5), "now unhealthy");
        assert!(!s.apply(register("n1", Some(unhealthy)), 5), "still unhealthy");
        assert!(s.apply(register("n1", Some(record("10.0.0.2", 6380, 5))), 5), "healthy again");
        assert!(s.apply(register("n1", None), 6));
        assert!(!s.apply(register("n1", None), 7), "already gone");
        assert_eq!(s.revision(), 7);
    }

    #[test]
    fn relisting_keeps_the_serial_increasing_and_reports_changes() {
        let mut s = Records::default();
        s.apply(publish("c", Some(1)), 30);
        let mut published = Published::new();
        published.insert("c".into(), (topo(1), 30));
        assert!(!s.relist(Records::listed(Default::default(), published.clone(), 25)));
        assert_eq!(s.revision(), 30);
        published.insert("c".into(), (topo(2), 40));
        assert!(s.relist(Records::listed(Default::default(), published, 41)));
        assert_eq!(s.revision(), 41);
        assert!(!s.apply(publish("c", Some(1)), 35), "older than the listing");
    }

    #[test]
    fn sentinel_replicas_come_and_go() {
        let mut s = Records::default();
        let at = |port| Some(SentinelRecord { address: "127.0.0.1".into(), port });
        let change = |record| Change::Sentinel { run_id: "a".into(), record };
        assert!(s.apply(change(at(1)), 2));
        assert!(!s.apply(change(at(1)), 3), "a lease renewal's re-put changes nothing");
        assert!(s.apply(change(at(2)), 4));
        assert_eq!(s.sentinels()["a"].port, 2);
        assert!(s.apply(change(None), 5));
        assert!(!s.apply(change(None), 6));
        let listed = Records::listed(Default::default(), Default::default(), 7)
            .with_sentinels(Sentinels::from([("b".to_string(), SentinelRecord { address: "h".into(), port: 3 })]));
        assert!(s.relist(listed), "a new replica in the listing is a change");
    }

    #[test]
    fn serial_is_the_low_32_bits() {
        let s = Records::listed(Default::default(), Default::default(), (1 << 32) + 5);
        assert_eq!(s.serial(), 5);
    }
}
