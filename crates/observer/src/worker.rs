//! One task per cluster: reads what etcd holds, runs a round when it differs from
//! what was last applied, records the outcome at `/status/<cluster>`, and backs
//! off after failures. Notifications only say "look again": the worker always
//! reads the newest topology itself, so a burst of triggers becomes one round and
//! a stale topology is never applied after a newer one.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, GetOptions};
use tokio::sync::watch;
use topology::keys::Key;
use topology::records::{now_ms, StatusRecord};
use topology::Keys;

use crate::round::{RoundError, Stage, Targets};
use crate::schedule::{backoff, round_due, Target};

/// Shared by every worker.
pub struct Context {
    pub etcd: Client,
    pub keys: Keys,
    pub targets: Targets,
    pub observer_id: String,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Runs until aborted (the leader stops its workers when it loses leadership).
pub async fn run(cx: Arc<Context>, cluster: String, mut notified: watch::Receiver<u64>) {
    let mut last_applied: Option<Target> = None;
    let mut failures: u32 = 0;
    loop {
        notified.borrow_and_update();
        let outcome = match read(&cx, &cluster).await {
            Err(e) => Some(Err((Target::default(), e))),
            Ok((target, topology)) if round_due(&target, last_applied.as_ref()) => {
                let started_ms = now_ms();
                tracing::info!(cluster, topology_revision = target.topology_revision, trigger = ?target.trigger, "round: applying the topology");
                let result = cx.targets.round(&cluster, &topology).await;
                record(&cx, &cluster, &target, started_ms, result.as_ref().err(), if result.is_ok() { 0 } else { failures + 1 }).await;
                Some(result.map(|_| target.clone()).map_err(|e| (target, e)))
            }
            Ok(_) => None,
        };
        match outcome {
            None => {
                // Nothing new: sleep until etcd changes.
                if notified.changed().await.is_err() {
                    return;
                }
            }
            Some(Ok(target)) => {
                tracing::info!(cluster, topology_revision = target.topology_revision, "round: applied and published");
                last_applied = Some(target);
                failures = 0;
            }
            Some(Err((_, error))) => {
                failures += 1;
                let wait = backoff(failures, cx.retry_min, cx.retry_max);
                tracing::warn!(cluster, %error, failures, retry_in_ms = wait.as_millis() as u64, "round failed");
                // A newer trigger or topology retries at once; otherwise after the backoff.
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    changed = notified.changed() => if changed.is_err() { return },
                }
            }
        }
    }
}

/// Reads the cluster's topology and trigger in one request.
async fn read(cx: &Context, cluster: &str) -> Result<(Target, Vec<u8>), RoundError> {
    let fail = |message: String| RoundError { stage: Stage::Read, message };
    let prefix = format!("{}{cluster}/", cx.keys.config_prefix());
    let mut etcd = cx.etcd.clone();
    let response = etcd
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| fail(format!("etcd: {e}")))?;
    let mut target = Target::default();
    let mut topology = Vec::new();
    for kv in response.kvs() {
        match kv.key_str().ok().and_then(|k| cx.keys.parse(k)) {
            Some(Key::Topology { .. }) => {
                target.topology_revision = kv.mod_revision();
                topology = kv.value().to_vec();
            }
            Some(Key::Trigger { .. }) => {
                target.trigger_revision = kv.mod_revision();
                target.trigger = kv.value_str().ok().map(str::to_string);
            }
            _ => {}
        }
    }
    if !target.has_topology() && target.trigger.is_some() {
        return Err(fail(format!("cluster {cluster} has a trigger but no topology at {}", cx.keys.topology(cluster))));
    }
    Ok((target, topology))
}

async fn record(cx: &Context, cluster: &str, target: &Target, started_ms: u64, error: Option<&RoundError>, failures: u32) {
    let status = StatusRecord {
        trigger: target.trigger.clone(),
        topology_revision: target.topology_revision,
        result: error.map_or("ok", |e| e.stage.as_str()).to_string(),
        error: error.map(|e| e.message.clone()),
        observer: cx.observer_id.clone(),
        failures,
        started_ms,
        finished_ms: now_ms(),
        failover: None,
    };
    let value = serde_json::to_string(&status).unwrap_or_default();
    let mut etcd = cx.etcd.clone();
    if let Err(e) = etcd.put(cx.keys.status(cluster), value, None).await {
        tracing::warn!(cluster, error = %e, "cannot record the round's status");
    }
}
