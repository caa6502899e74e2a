//! The zone being served, and the one place that replaces it.
//!
//! DNS queries read the current [`Zone`] with one atomic load and never wait; writers
//! (the etcd watch and this replica's own `PUT /dns`) take a mutex, change the
//! [`Records`], then build a whole new zone and swap it in. A query therefore sees either
//! the old zone or the new one, never a mix: no gap and no half-applied change.
//!
//! Builds are coalesced: one runs at a time, from the newest state, and a writer
//! returns once a build that includes its change is served. A herd of publishes (an
//! observer reconciling a thousand groups at once) then costs a few builds of the
//! whole zone, not one per publish.
//!
//! The Sentinel side reads the state the zone was built from ([`Live::records`], one
//! atomic load too) and hears of every published master change ([`Live::switches`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::sentinel::{switches, Switch};
use crate::state::{Change, Records};
use crate::zone::{Zone, ZoneConfig};

/// Master changes buffered per Sentinel subscriber; one that falls further behind
/// misses some (and is told so in the log).
const SWITCH_BUFFER: usize = 1024;

/// The state, and the zone built from it.
pub struct Live {
    config: ZoneConfig,
    state: Mutex<Records>,
    zone: ArcSwap<Zone>,
    records: ArcSwap<Records>,
    switches: tokio::sync::broadcast::Sender<Switch>,
    /// Told after every swap (the HAProxy pusher waits on it).
    swapped: tokio::sync::watch::Sender<()>,
    /// Whether etcd was listed once: the zone is loaded from then on.
    listed: AtomicBool,
    /// Bumped (under the state's lock) by every change of the state.
    generation: AtomicU64,
    /// The generation the served zone was built from.
    built: AtomicU64,
    /// Held while building: one build at a time.
    building: Mutex<()>,
}

impl Live {
    /// Starts with nothing published: every name of the domain is REFUSED until
    /// the first etcd listing arrives.
    pub fn new(config: ZoneConfig) -> Live {
        let state = Records::default();
        let zone = Zone::build(&config, state.registrations(), state.published(), state.serial()).before_first_listing();
        let records = ArcSwap::from_pointee(state.clone());
        let (switches, _) = tokio::sync::broadcast::channel(SWITCH_BUFFER);
        let (swapped, _) = tokio::sync::watch::channel(());
        Live {
            config,
            state: Mutex::new(state),
            zone: ArcSwap::from_pointee(zone),
            records,
            switches,
            swapped,
            listed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            built: AtomicU64::new(0),
            building: Mutex::new(()),
        }
    }

    pub fn config(&self) -> &ZoneConfig {
        &self.config
    }

    /// The zone to answer from.
    pub fn zone(&self) -> Arc<Zone> {
        self.zone.load_full()
    }

    /// The state the current zone was built from.
    pub fn records(&self) -> Arc<Records> {
        self.records.load_full()
    }

    /// Every change of a published master from now on, in order.
    pub fn switches(&self) -> tokio::sync::broadcast::Receiver<Switch> {
        self.switches.subscribe()
    }

    /// The zone's holder, for the DNS handler's lock-free reads.
    pub fn zone_swap(&self) -> &ArcSwap<Zone> {
        &self.zone
    }

    /// Applies changes made at `revision` (one etcd watch response, or one PUT) and,
    /// if what is served changed, returns once a zone holding them is swapped in.
    /// Returns whether anything changed.
    pub fn apply(&self, changes: impl IntoIterator<Item = (Change, i64)>) -> bool {
        let generation = {
            let mut state = self.lock();
            let mut changed = false;
            for (change, revision) in changes {
                changed |= state.apply(change, revision);
            }
            if !changed {
                return false;
            }
            self.generation.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.build_through(generation);
        true
    }

    /// Replaces the state with a fresh listing; swaps in a new zone if it differs.
    pub fn relist(&self, listed: Records) -> bool {
        let (changed, generation) = {
            let mut state = self.lock();
            let changed = state.relist(listed);
            // The first listing loads the zone even when etcd holds nothing.
            let first = !self.listed.swap(true, Ordering::SeqCst);
            if !(changed || first) {
                return changed;
            }
            (changed, self.generation.fetch_add(1, Ordering::SeqCst) + 1)
        };
        self.build_through(generation);
        changed
    }

    /// Changes each time a new zone is swapped in.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.swapped.subscribe()
    }

    /// A copy of the state (for the HTTP API and tests).
    pub fn state(&self) -> Records {
        self.lock().clone()
    }

    /// Returns once the served zone was built from `generation` or a later one:
    /// builds it from the newest state unless a build since has.
    fn build_through(&self, generation: u64) {
        let _building = self.building.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.built.load(Ordering::SeqCst) >= generation {
            return;
        }
        let (state, newest) = {
            let state = self.lock();
            (state.clone(), self.generation.load(Ordering::SeqCst))
        };
        self.rebuild(state);
        self.built.store(newest, Ordering::SeqCst);
    }

    fn rebuild(&self, state: Records) {
        let before = self.records.load();
        for switch in switches(before.published(), state.published()) {
            tracing::info!(cluster = switch.cluster, from = %switch.from, to = %switch.to, "master switched");
            // No subscriber is not an error.
            let _ = self.switches.send(switch);
        }
        let mut zone = Zone::build(&self.config, state.registrations(), state.published(), state.serial());
        self.records.store(Arc::new(state));
        if !self.listed.load(Ordering::SeqCst) {
            zone = zone.before_first_listing();
        }
        for warning in zone.warnings() {
            tracing::warn!(%warning, "record not served");
        }
        tracing::debug!(serial = zone.serial(), names = zone.name_count(), "zone swapped");
        self.zone.store(Arc::new(zone));
        self.swapped.send_replace(());
    }

    // A panic while holding the lock cannot leave the state half-changed in a way that
    // matters (each change is one map operation), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Records> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use topology::records::{PublishedMember, PublishedTopology};
    use topology::Names;

    use super::*;

    fn published(cluster: &str, port: u16) -> Change {
        let master = PublishedMember { host: "10.0.0.1".into(), port, node: None };
        Change::Published { cluster: cluster.into(), topology: Some(PublishedTopology { master, slaves: vec![], topology_revision: None }) }
    }

    #[test]
    fn every_writer_returns_with_its_change_served_when_many_write_at_once() {
        let live = Arc::new(Live::new(ZoneConfig { names: Names::default(), ttl: 1, ns_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)) }));
        live.relist(Records::default());
        let writers: Vec<_> = (0..64u16)
            .map(|i| {
                let live = live.clone();
                std::thread::spawn(move || {
                    let cluster = format!("c{i}");
                    assert!(live.apply([(published(&cluster, 6000 + i), i64::from(i) + 10)]));
                    // Served by the time apply returns: no later build needed.
                    assert!(live.records().published().contains_key(&cluster), "{cluster} not served when its apply returned");
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("a writer panicked");
        }
        assert_eq!(live.records().published().len(), 64);
        assert_eq!(live.built.load(Ordering::SeqCst), live.generation.load(Ordering::SeqCst));
    }
}
