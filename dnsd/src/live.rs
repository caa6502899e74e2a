//! The zone being served, and the one place that replaces it.
//!
//! DNS queries read the current [`Zone`] with one atomic load and never wait; writers
//! (the etcd watch and this replica's own `PUT /dns`) take a mutex, change the
//! [`Records`], build a whole new zone and swap it in. A query therefore sees either the
//! old zone or the new one, never a mix: no gap and no half-applied change.
//!
//! The Sentinel side reads the state the zone was built from ([`Live::records`], one
//! atomic load too) and hears of every published master change ([`Live::switches`]).

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
    listed: std::sync::atomic::AtomicBool,
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
            listed: std::sync::atomic::AtomicBool::new(false),
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

    /// Applies changes made at `revision` (one etcd watch response, or one PUT) and
    /// swaps in a new zone if what is served changed. Returns whether it did.
    pub fn apply(&self, changes: impl IntoIterator<Item = (Change, i64)>) -> bool {
        let mut state = self.lock();
        let mut changed = false;
        for (change, revision) in changes {
            changed |= state.apply(change, revision);
        }
        if changed {
            self.rebuild(&state);
        }
        changed
    }

    /// Replaces the state with a fresh listing; swaps in a new zone if it differs.
    pub fn relist(&self, listed: Records) -> bool {
        let mut state = self.lock();
        let changed = state.relist(listed);
        // The first listing loads the zone even when etcd holds nothing.
        let first = !self.listed.swap(true, std::sync::atomic::Ordering::SeqCst);
        if changed || first {
            self.rebuild(&state);
        }
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

    fn rebuild(&self, state: &Records) {
        let before = self.records.load();
        for switch in switches(before.published(), state.published()) {
            tracing::info!(cluster = switch.cluster, from = %switch.from, to = %switch.to, "master switched");
            // No subscriber is not an error.
            let _ = self.switches.send(switch);
        }
        self.records.store(Arc::new(state.clone()));
        let mut zone = Zone::build(&self.config, state.registrations(), state.published(), state.serial());
        if !self.listed.load(std::sync::atomic::Ordering::SeqCst) {
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
