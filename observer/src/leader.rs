//! Leadership and the watch. Every observer campaigns in etcd's election
//! (`/election/observer`) under its own lease; the one that wins lists `/config/`,
//! starts a worker per cluster (which reconciles it at once: level-triggered) and
//! watches `/config/` to wake them. Losing the lease (a partition, a stalled
//! process) stops the workers before another observer can have won; etcd
//! restarts and compactions end in a fresh list and watch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use topology::keys::Key;
use topology::records::NodeRecord;

use service::backoff::delay_after;
use crate::worker::{self, Context};

/// Observable state, for `/healthz`.
#[derive(Default)]
pub struct State {
    pub leader: AtomicBool,
}

/// Campaigns, leads, and campaigns again, until `shutdown` completes.
pub async fn run(
    cx: Arc<Context>,
    lease_ttl: Duration,
    state: Arc<State>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut failures = 0;
    loop {
        let mut term = Term { cx: cx.clone(), lease: None, workers: HashMap::new(), health: HashMap::new() };
        let outcome = tokio::select! {
            outcome = term.campaign_and_lead(lease_ttl, &state) => outcome,
            () = &mut shutdown => {
                term.stop(&state).await;
                return;
            }
        };
        term.stop(&state).await;
        if let Err(error) = outcome {
            failures += 1;
            let wait = delay_after(failures, Duration::from_millis(200), Duration::from_secs(5));
            tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "lost leadership or etcd; campaigning again");
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                () = &mut shutdown => return,
            }
        } else {
            failures = 0;
        }
    }
}

/// One campaign and, if won, one term of leadership.
struct Term {
    cx: Arc<Context>,
    lease: Option<i64>,
    workers: HashMap<String, (watch::Sender<u64>, JoinHandle<()>)>,
    /// Last seen health of every registration, to wake workers only on a change.
    health: HashMap<(String, String), bool>,
}

impl Term {
    async fn campaign_and_lead(&mut self, lease_ttl: Duration, state: &State) -> Result<(), String> {
        let mut etcd = self.cx.etcd.clone();
        let ttl = i64::try_from(lease_ttl.as_secs().max(1)).unwrap_or(5);
        let lease = etcd.lease_grant(ttl, None).await.map_err(|e| format!("lease grant: {e}"))?.id();
        self.lease = Some(lease);
        let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
        let keeper = tokio::spawn(keep_alive(etcd.clone(), lease, lease_ttl, lost_tx));
        let _keeper = AbortOnDrop(keeper);

        tracing::info!(observer = %self.cx.observer_id, "campaigning for leadership");
        let campaign = etcd.campaign(self.cx.keys.election(), self.cx.observer_id.clone(), lease);
        tokio::select! {
            won = campaign => { won.map_err(|e| format!("campaign: {e}"))?; }
            reason = &mut lost => return Err(reason.unwrap_or_else(|_| "lease keeper stopped".into())),
        }
        tracing::info!(observer = %self.cx.observer_id, "leader: reconciling every cluster");
        state.leader.store(true, Ordering::SeqCst);
        tokio::select! {
            result = self.lead() => result,
            reason = &mut lost => Err(reason.unwrap_or_else(|_| "lease keeper stopped".into())),
        }
    }

    /// List, start workers, watch; on a broken watch, list and watch again.
    async fn lead(&mut self) -> Result<(), String> {
        let mut failures = 0;
        loop {
            match self.list_and_watch().await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    let wait = delay_after(failures, Duration::from_millis(100), Duration::from_secs(2));
                    tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "watch on /config/ broken; listing again");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn list_and_watch(&mut self) -> Result<(), String> {
        let mut etcd = self.cx.etcd.clone();
        let prefix = self.cx.keys.config_prefix();
        let listed = etcd
            .get(prefix.as_str(), Some(GetOptions::new().with_prefix().with_keys_only()))
            .await
            .map_err(|e| format!("list {prefix}: {e}"))?;
        let revision = listed.header().map_or(0, |h| h.revision());
        for kv in listed.kvs() {
            if let Some(cluster) = self.cluster_of(kv.key_str().unwrap_or_default()) {
                self.wake(&cluster);
            }
        }
        // Something may have changed while the watch was down: wake everyone.
        let known: Vec<String> = self.workers.keys().cloned().collect();
        for cluster in known {
            self.wake(&cluster);
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut config = etcd.watch(prefix.as_str(), Some(options.clone())).await.map_err(|e| format!("watch {prefix}: {e}"))?;
        // Registrations matter only for automatic failover.
        let nodes_prefix = self.cx.keys.nodes_prefix();
        let mut nodes = match self.cx.failover {
            Some(_) => Some(etcd.watch(nodes_prefix.as_str(), Some(options)).await.map_err(|e| format!("watch {nodes_prefix}: {e}"))?),
            None => None,
        };
        loop {
            let (what, message) = tokio::select! {
                m = config.message() => (prefix.as_str(), m),
                m = next_message(&mut nodes) => (nodes_prefix.as_str(), m),
            };
            let message = message.map_err(|e| format!("watch {what}: {e}"))?;
            let Some(response) = message else { return Err(format!("watch {what}: stream ended")) };
            if response.canceled() {
                return Err(format!(
                    "watch {what} canceled (compacted at {}): {}",
                    response.compact_revision(),
                    response.cancel_reason()
                ));
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let key = kv.key_str().unwrap_or_default();
                match self.cx.keys.parse(key) {
                    Some(Key::Node { cluster, node }) => {
                        // Agents rewrite their key every interval: wake the worker only
                        // when a node's health flips, or it appears or disappears.
                        let healthy = event.event_type() == EventType::Put
                            && serde_json::from_slice::<NodeRecord>(kv.value()).is_ok_and(|r| r.healthy);
                        let before = self.health.insert((cluster.clone(), node), healthy);
                        if before != Some(healthy) && self.workers.contains_key(&cluster) {
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
    async fn stop(&mut self, state: &State) {
        for (_, (_, task)) in self.workers.drain() {
            task.abort();
        }
        state.leader.store(false, Ordering::SeqCst);
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

/// Keeps the lease alive at a third of its TTL; reports through `lost` when it
/// cannot, with a margin so the workers stop before the lease can expire.
async fn keep_alive(mut etcd: Client, lease: i64, ttl: Duration, lost: tokio::sync::oneshot::Sender<String>) {
    let reason = async {
        let (mut keeper, mut responses) = etcd.lease_keep_alive(lease).await.map_err(|e| format!("keep-alive: {e}"))?;
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(ttl / 3).await;
            if last_ok.elapsed() > ttl * 2 / 3 {
                return Err::<(), String>("lease keep-alive unanswered for 2/3 of its TTL".into());
            }
            keeper.keep_alive().await.map_err(|e| format!("keep-alive: {e}"))?;
            match tokio::time::timeout(ttl / 3, responses.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => last_ok = tokio::time::Instant::now(),
                Ok(Ok(Some(_))) => return Err("lease expired".into()),
                Ok(Ok(None)) => return Err("keep-alive stream ended".into()),
                Ok(Err(e)) => return Err(format!("keep-alive: {e}")),
                Err(_) => {} // counted by last_ok
            }
        }
    }
    .await;
    if let Err(reason) = reason {
        let _ = lost.send(reason);
    }
}

/// The next message of an optional watch; never completes when there is none.
async fn next_message(
    stream: &mut Option<etcd_client::WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match stream {
        Some(stream) => stream.message().await,
        None => std::future::pending().await,
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
