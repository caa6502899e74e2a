//! Leadership and the watch. Every observer campaigns in etcd's election
//! (`/election/observer`) under its own lease; the one that wins lists `/config/`
//! and `/nodes/`, starts a worker per cluster (which reconciles it at once:
//! level-triggered) and watches both to wake them. etcd restarts and compactions
//! end in a fresh list and watch (`service::etcd::follow`).
//!
//! A leader must stop acting before another can start: `service::etcd::KeptLease`
//! reports the lease lost after one unanswered renewal, at most 2/3 of the TTL
//! after the last answered renewal was sent, while etcd still counts at least a
//! third of the TTL on it. The term's `select!` then drops the watch and
//! [`Term::stop`] aborts every worker and clears the leader flag *before* trying
//! to revoke the lease (which may wait on an unreachable etcd).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Event, EventType, KeyValue};
use service::backoff::delay_after;
use service::etcd::{FollowPolicy, Follower, KeptLease, LeaseLost};
use service::Shutdown;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use topology::keys::Key;
use topology::records::{Facts, NodeRecord};

use crate::worker::{self, Context};

/// Observable state, for `/status`.
#[derive(Default)]
pub struct Leadership {
    pub leader: AtomicBool,
}

/// Why a campaign or a term ended.
#[derive(Debug, thiserror::Error)]
enum TermEnded {
    #[error("lease grant: {0}")]
    Grant(#[source] etcd_client::Error),
    #[error("campaign: {0}")]
    Campaign(#[source] etcd_client::Error),
    #[error("the etcd watch ended")]
    WatchEnded,
    #[error("lease lost: {0}")]
    LeaseLost(#[from] LeaseLost),
}

/// Campaigns, leads, and campaigns again, until `shutdown`.
pub async fn run(cx: Arc<Context>, lease_ttl: Duration, state: Arc<Leadership>, shutdown: Shutdown) {
    let mut failures = 0;
    loop {
        let mut term = Term { cx: cx.clone(), lease: None, workers: HashMap::new(), health: HashMap::new() };
        let outcome = tokio::select! {
            outcome = term.campaign_and_lead(lease_ttl, &state) => outcome,
            () = shutdown.requested() => {
                term.stop(&state).await;
                return;
            }
        };
        term.stop(&state).await;
        failures += 1;
        let wait = delay_after(failures, Duration::from_millis(200), Duration::from_secs(5));
        service::systemd::status(&format!("not leading: {outcome}; campaigning again"));
        tracing::warn!(error = %outcome, retry_in_ms = wait.as_millis() as u64, "lost leadership or etcd; campaigning again");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = shutdown.requested() => return,
        }
    }
}

/// One campaign and, if won, one term of leadership.
struct Term {
    cx: Arc<Context>,
    lease: Option<i64>,
    workers: HashMap<String, (watch::Sender<u64>, JoinHandle<()>)>,
    /// What workers judge in every registration (`records::Facts`), to wake
    /// them on a change and not on every refresh; `None`: deleted or unreadable.
    health: HashMap<(String, String), Option<Facts>>,
}

fn seen(value: &[u8]) -> Option<Facts> {
    serde_json::from_slice::<NodeRecord>(value).ok().map(|r| r.facts())
}

impl Term {
    /// Returns only when the term ends: leading never finishes by itself.
    async fn campaign_and_lead(&mut self, lease_ttl: Duration, state: &Leadership) -> TermEnded {
        let mut etcd = self.cx.etcd.clone();
        let mut lease = match KeptLease::grant(&mut etcd, lease_ttl).await {
            Ok(lease) => lease,
            Err(e) => return TermEnded::Grant(e),
        };
        self.lease = Some(lease.id());

        tracing::info!(observer = %self.cx.observer_id, "campaigning for leadership");
        service::systemd::status("standing by: another observer leads (campaigning)");
        let campaign = etcd.campaign(self.cx.keys.election(), self.cx.observer_id.clone(), lease.id());
        tokio::select! {
            won = campaign => if let Err(e) = won { return TermEnded::Campaign(e) },
            lost = lease.lost() => return lost.into(),
        }
        tracing::info!(observer = %self.cx.observer_id, "leader: reconciling every cluster");
        state.leader.store(true, Ordering::SeqCst);
        metrics::gauge!("redis_topology_observer_leader").set(1.0);
        service::systemd::status("leading: applying topologies and watching masters");
        let keys = self.cx.keys.clone();
        // Registrations: for failover, and for members whose role diverged.
        let prefixes = vec![keys.config_prefix(), keys.nodes_prefix()];
        let policy = FollowPolicy { backoff_min: Duration::from_millis(100), backoff_max: Duration::from_secs(2) };
        // Dropped with the term, like the watch: only the leader moves masters.
        let (cx, after) = (self.cx.clone(), self.cx.rebalance_after);
        let rebalance = async move {
            match after {
                Some(after) => crate::rebalance::run(cx, after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = service::etcd::follow(|| std::future::ready(Ok(etcd.clone())), &prefixes, &policy, self) => {
                TermEnded::WatchEnded
            }
            () = rebalance => TermEnded::WatchEnded,
            lost = lease.lost() => lost.into(),
        }
    }

    fn cluster_of(&self, key: &str) -> Option<String> {
        match self.cx.keys.parse(key)? {
            Key::Topology { cluster } | Key::Trigger { cluster } | Key::Maintenance { cluster } => Some(cluster),
            _ => None,
        }
    }

    /// Tells the cluster's worker to look again, starting it if needed.
    fn wake(&mut self, cluster: &str) {
        if let Some((notify, task)) = self.workers.get(cluster)
            && !task.is_finished() {
                notify.send_modify(|generation| *generation += 1);
                return;
            }
        let (notify, notified) = watch::channel(0);
        let task = tokio::spawn(worker::run(self.cx.clone(), cluster.to_string(), notified));
        self.workers.insert(cluster.to_string(), (notify, task));
    }

    /// Stops the workers, then gives up the lease (and with it leadership).
    async fn stop(&mut self, state: &Leadership) {
        let workers = self.workers.len();
        for (_, (_, task)) in self.workers.drain() {
            task.abort();
        }
        metrics::gauge!("redis_topology_observer_leader").set(0.0);
        if state.leader.swap(false, Ordering::SeqCst) {
            tracing::warn!(observer = %self.cx.observer_id, workers, "no longer leading: workers stopped");
        }
        if let Some(lease) = self.lease.take() {
            let mut etcd = self.cx.etcd.clone();
            // Best effort: if etcd is gone the lease expires by itself.
            let revoke = tokio::time::timeout(Duration::from_secs(1), etcd.lease_revoke(lease));
            if let Ok(Err(e)) = revoke.await {
                tracing::debug!(error = %e, "lease revoke failed; it will expire");
            }
        }
    }
}

/// The watch wakes workers; it never carries their state.
impl Follower for Term {
    fn listed(&mut self, _revision: i64, kvs: &[KeyValue]) {
        self.health.clear();
        for kv in kvs {
            let key = kv.key_str().unwrap_or_default();
            match self.cx.keys.parse(key) {
                Some(Key::Node { cluster, node }) => {
                    self.health.insert((cluster, node), seen(kv.value()));
                }
                Some(_) => {
                    if let Some(cluster) = self.cluster_of(key) {
                        self.wake(&cluster);
                    }
                }
                None => {}
            }
        }
        // Something may have changed while the watch was down: wake everyone.
        let known: Vec<String> = self.workers.keys().cloned().collect();
        for cluster in known {
            self.wake(&cluster);
        }
    }

    fn changed(&mut self, events: &[Event]) {
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let key = kv.key_str().unwrap_or_default();
            match self.cx.keys.parse(key) {
                Some(Key::Node { cluster, node }) => {
                    // Agents rewrite their key every interval: wake the worker only
                    // when what it judges of a node changes, or the node appears or
                    // disappears.
                    let now = (event.event_type() == EventType::Put).then(|| seen(kv.value())).flatten();
                    let before = self.health.insert((cluster.clone(), node), now.clone());
                    if before != Some(now) && self.workers.contains_key(&cluster) {
                        self.wake(&cluster);
                    }
                }
                Some(_) => {
                    if let Some(cluster) = self.cluster_of(key) {
                        tracing::debug!(cluster, key, deleted = event.event_type() == EventType::Delete, "config changed");
                        self.wake(&cluster);
                    }
                }
                None => {}
            }
        }
    }
}
