//! The executor: runs a [`Plan`] against the instances, one step (or one group of
//! parallel steps) at a time, timing each.
//!
//! Failure handling follows what is safe for the data:
//! - before the promotion (fence, catch-up, allow-writes fail): every fence set so
//!   far is lifted and every role is left as it was; nothing changed;
//! - at the promotion: it stops, and the fences stay (whether it took effect is unknown);
//! - after it (re-point, release): the other members go on, and the member is listed
//!   in `failed`, not as a failure of the apply: the new master takes writes and DNS
//!   must follow it. Fences stay where re-pointing did not happen, so a demoted
//!   master can never take writes again; the next apply converges from there.
//!
//! Every fence records the offset it was set at (`topology::history::fence_value`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::observe::{Members, Observed};
use service::redis_info::read_offset;
use service::fence::FenceError;
use service::redis_info::InfoError;
use crate::plan::{Plan, Step};

/// Write settings restored on members that carry a fence.
#[derive(Debug, Clone, Copy)]
pub struct WriteSettings {
    /// `min-replicas-to-write` for an instance whose fence is lifted (unless it had
    /// another, non-fence value before we fenced it).
    pub min_replicas_to_write: u32,
    /// `min-replicas-max-lag` set while fencing when it was 0 (the fence needs it).
    pub min_replicas_max_lag: u32,
}

/// How long the executor waits for things.
#[derive(Debug, Clone, Copy)]
pub struct ExecSettings {
    pub writes: WriteSettings,
    /// How long the new master may take to catch up before the apply aborts.
    pub catch_up_timeout: Duration,
    /// How long to wait for slaves to show the verification marker.
    pub verify_timeout: Duration,
}

impl ExecSettings {
    // The CLIENT PAUSE outlasts the catch-up so it never lapses mid-move; if the
    // dictator dies, the fence still refuses writes after the pause ends.
    fn pause(&self) -> Duration {
        self.catch_up_timeout + Duration::from_secs(5)
    }
}

/// A step as reported: executed (with `ms`, and its error if it failed) or, in a
/// dry run, only planned.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub step: Step,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StepReport {
    pub fn planned(step: Step) -> StepReport {
        StepReport { step, ms: None, error: None }
    }
}

/// Lifting a fence after an abort is reported like a step.
#[derive(Debug, Clone, Serialize)]
pub struct UndoReport {
    pub action: &'static str,
    pub node: SocketAddr,
    pub ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why the execution failed: something took too long, or an instance failed us.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    #[error("{node} reached offset {offset} of {target} within {timeout:?}; aborted, nothing changed")]
    CatchUpTimeout { node: SocketAddr, offset: u64, target: u64, timeout: Duration },
    /// `last_error` says what was seen last: a failed write or read, or nothing yet.
    #[error("{node} did not show the marker within {timeout:?} ({last_error})")]
    VerifyTimeout { node: SocketAddr, timeout: Duration, last_error: String },
    #[error("{node}: {error}")]
    Redis { node: SocketAddr, error: redis::RedisError },
    #[error("{node}: {error}")]
    Info { node: SocketAddr, error: InfoError },
    #[error("{0}: no connection")]
    NoConnection(SocketAddr),
    #[error("{0} was not re-pointed, so it stays fenced")]
    NotRepointed(SocketAddr),
}

/// A member left as it was because a step on it failed after the new master took
/// over (re-pointing, release, or a quarantine fence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedMember {
    pub node: SocketAddr,
    pub action: &'static str,
    pub error: String,
}

/// What happened, as the report shows it (times in ms, to the microsecond).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub steps: Vec<StepReport>,
    /// The new master was promoted in this run: it takes writes, so DNS must name
    /// it, even when `failed` lists members still to re-point.
    pub promoted: bool,
    /// Members a step failed on after the new master took over; a new apply
    /// retries them (a demoted master among them stays fenced meanwhile).
    pub failed: Vec<FailedMember>,
    /// From the first fence to the new master accepting writes.
    pub write_pause_ms: f64,
    /// Slaves that did not show the marker within the verify timeout.
    pub lagging: Vec<SocketAddr>,
    /// Steps that were planned but not run, because an earlier one failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_done: Vec<Step>,
    /// Fences lifted after an abort.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub undone: Vec<UndoReport>,
    /// Problems that did not stop the apply (e.g. CONFIG REWRITE refused).
    pub warnings: Vec<String>,
    /// What stopped the run; the caller takes it out to answer with.
    #[serde(skip)]
    pub failure: Option<Failure>,
}

impl Outcome {
    /// A dry run's: the plan, nothing done.
    pub fn planned(steps: impl IntoIterator<Item = Step>) -> Outcome {
        Outcome { steps: steps.into_iter().map(StepReport::planned).collect(), ..Outcome::default() }
    }
}

/// Runs `plan` through the connections in `members`, the observation the plan was
/// made from (which also tells the settings to restore).
pub async fn execute(plan: &Plan, members: &Members, settings: &ExecSettings) -> Outcome {
    let mut run = Run {
        members,
        settings,
        durability: plan.durability,
        outcome: Outcome::default(),
        fenced: Vec::new(),
        not_repointed: Vec::new(),
        pause_started: None,
        marker: format!("redis-topology:verify:{}", uuid::Uuid::new_v4()),
    };
    let steps = &plan.steps;
    let mut i = 0;
    while i < steps.len() {
        let group_len = 1 + steps[i + 1..].iter().take_while(|s| steps[i].runs_in_parallel_with(s)).count();
        let group = &steps[i..i + group_len];
        i += group_len;
        let reports = join_all(group.iter().map(|step| run.timed(*step))).await;
        let mut failure = None;
        for (step, (ms, result)) in group.iter().zip(reports) {
            let error = result.as_ref().err().map(ToString::to_string);
            run.record(*step, ms, error.clone());
            if let Err(f) = result {
                match step {
                    // A slow slave is reported as lagging, a refused CONFIG REWRITE as
                    // a warning; neither makes the apply fail.
                    Step::Verify { .. } | Step::Persist { .. } => {}
                    // These run once the new master takes writes: the apply goes on,
                    // and answers with the members still to fix.
                    Step::Replicate { node, .. } | Step::Release { node } | Step::Durability { node } | Step::Quarantine { node } => {
                        if !run.outcome.failed.iter().any(|f| f.node == *node) {
                            run.outcome.failed.push(FailedMember { node: *node, action: step.action(), error: f.to_string() });
                        }
                    }
                    _ => {
                        failure.get_or_insert(f);
                    }
                }
            }
            run.outcome.steps.push(StepReport { step: *step, ms: Some(round_ms(ms)), error });
        }
        if let Some(failure) = failure {
            let stop = run.stop_after_failure(group[0]).await;
            run.outcome.failure.get_or_insert(failure);
            if stop {
                run.outcome.not_done = steps[i..].to_vec();
                break;
            }
        }
    }
    run.remove_marker(steps).await;
    run.outcome
}

struct Run<'a> {
    members: &'a Members,
    settings: &'a ExecSettings,
    /// The group's `min-replicas-*`, set wherever a fence is lifted.
    durability: Option<topology::Durability>,
    outcome: Outcome,
    /// Nodes whose fence we set during this run.
    fenced: Vec<SocketAddr>,
    /// Demoted masters whose re-pointing failed: they keep their fence.
    not_repointed: Vec<SocketAddr>,
    pause_started: Option<Instant>,
    /// Key (and value) written on the new master to verify the slaves.
    marker: String,
}

impl Run<'_> {
    async fn timed(&self, step: Step) -> (f64, Result<(), Failure>) {
        let started = Instant::now();
        let result = self.run_step(step).await;
        (started.elapsed().as_secs_f64() * 1000.0, result)
    }

    /// Bookkeeping after a step, in plan order.
    fn record(&mut self, step: Step, ms: f64, error: Option<String>) {
        let ok = error.is_none();
        match step {
            Step::Fence { node } => {
                // A failed fence may still have paused clients: undo covers it too.
                self.fenced.push(node);
                self.pause_started.get_or_insert_with(|| Instant::now() - Duration::from_secs_f64(ms / 1000.0));
            }
            Step::Promote { .. } if ok => {
                self.outcome.promoted = true;
                if let Some(started) = self.pause_started {
                    self.outcome.write_pause_ms = round_ms(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Step::Replicate { node, .. } if !ok => self.not_repointed.push(node),
            Step::Verify { node, .. } if !ok => self.outcome.lagging.push(node),
            Step::Persist { node } => {
                if let Some(error) = error {
                    self.outcome.warnings.push(format!("CONFIG REWRITE on {node}: {error}"));
                }
            }
            _ => {}
        }
    }

    /// Whether a failure in `step`'s group stops the run; undoes fences where that is safe.
    async fn stop_after_failure(&mut self, step: Step) -> bool {
        match step {
            Step::Fence { .. } | Step::CatchUp { .. } | Step::AllowWrites { .. } => {
                self.undo_fences().await;
                true
            }
            // Whether REPLICAOF NO ONE took effect is unknown: keep the old masters
            // fenced so they cannot take writes the new one would never see.
            Step::Promote { .. } => true,
            // Other members go on; a demoted master that was not re-pointed keeps
            // its fence (see `run_step`).
            Step::Replicate { .. }
            | Step::Release { .. }
            | Step::Durability { .. }
            | Step::Verify { .. }
            | Step::Persist { .. }
            | Step::Quarantine { .. } => false,
        }
    }

    async fn undo_fences(&mut self) {
        let undo = self.fenced.clone();
        let this = &*self;
        let results = join_all(undo.iter().map(|node| async move {
            let started = Instant::now();
            let result = this.lift_fence(*node).await;
            (*node, started.elapsed().as_secs_f64() * 1000.0, result)
        }))
        .await;
        for (node, ms, result) in results {
            self.outcome.undone.push(UndoReport { action: "unfence", node, ms, error: result.err().map(|f| f.to_string()) });
        }
    }

    async fn run_step(&self, step: Step) -> Result<(), Failure> {
        match step {
            Step::Fence { node } => self.fence(node, true).await,
            Step::Quarantine { node } => self.fence(node, false).await,
            Step::CatchUp { node, from } => self.catch_up(node, from).await,
            Step::AllowWrites { node } => self.lift_fence(node).await,
            Step::Promote { node } => {
                let mut pipe = redis::pipe();
                pipe.cmd("REPLICAOF").arg("NO").arg("ONE").ignore();
                pipe.cmd("CLIENT").arg("UNPAUSE").ignore();
                self.pipeline(node, &pipe).await
            }
            Step::Replicate { node, master } => {
                let mut pipe = redis::pipe();
                // A replica that takes writes acknowledges what its master then
                // overwrites: a demoted master with replica-read-only no loses them.
                pipe.cmd("CONFIG").arg("SET").arg("replica-read-only").arg("yes").ignore();
                pipe.cmd("REPLICAOF").arg(master.ip().to_string()).arg(master.port()).ignore();
                self.pipeline(node, &pipe).await
            }
            Step::Release { node } => {
                if self.not_repointed.contains(&node) {
                    return Err(Failure::NotRepointed(node));
                }
                self.lift_fence(node).await
            }
            Step::Durability { node } => {
                let mut pipe = redis::pipe();
                self.restore_writes(node, &mut pipe);
                self.pipeline(node, &pipe).await
            }
            Step::Verify { node, master } => self.verify(node, master).await,
            Step::Persist { node } => {
                let mut pipe = redis::pipe();
                pipe.cmd("CONFIG").arg("REWRITE").ignore();
                self.pipeline(node, &pipe).await
            }
        }
    }

    /// Sets the write fence (after `CLIENT PAUSE WRITE` when `pause`) and records in
    /// it the offset it was set at, so that the bytes the master adds afterwards
    /// (replication pings) are known not to be writes. A fence that already records
    /// a point keeps it: moving it forward would count those pings as writes.
    async fn fence(&self, node: SocketAddr, pause: bool) -> Result<(), Failure> {
        let mut pipe = redis::pipe();
        if pause {
            pipe.cmd("CLIENT").arg("PAUSE").arg(self.settings.pause().as_millis() as u64).arg("WRITE").ignore();
        }
        if self.members.get(&node).and_then(Observed::replication).is_some_and(|r| r.fence_point().is_some()) {
            return if pause { self.pipeline(node, &pipe).await } else { Ok(()) };
        }
        let max_lag = (self.observed_max_lag(node) == 0).then_some(self.settings.writes.min_replicas_max_lag);
        let mut conn = self.conn(node)?;
        service::fence::set(&mut conn, pipe, max_lag).await.map(drop).map_err(|error| match error {
            FenceError::Redis(error) => Failure::Redis { node, error },
            FenceError::Info(error) => Failure::Info { node, error },
        })
    }

    /// Restores write settings and releases paused clients.
    async fn lift_fence(&self, node: SocketAddr) -> Result<(), Failure> {
        let mut pipe = redis::pipe();
        self.restore_writes(node, &mut pipe);
        pipe.cmd("CLIENT").arg("UNPAUSE").ignore();
        self.pipeline(node, &pipe).await
    }

    /// The write settings `node` gets where a fence is lifted: the group's
    /// durability; without one, what it had before we fenced it, or
    /// `--min-replicas-to-write`. The lag goes first: with it at 0 redis
    /// ignores `min-replicas-to-write`, so the guard never has a gap.
    fn restore_writes(&self, node: SocketAddr, pipe: &mut redis::Pipeline) {
        if let Some(d) = self.durability {
            pipe.cmd("CONFIG").arg("SET").arg("min-replicas-max-lag").arg(d.min_replicas_max_lag).ignore();
            pipe.cmd("CONFIG").arg("SET").arg("min-replicas-to-write").arg(d.min_replicas_to_write).ignore();
            return;
        }
        let restore = match self.members.get(&node).and_then(Observed::replication) {
            Some(r) if !r.is_fenced() => r.min_replicas_to_write,
            _ => self.settings.writes.min_replicas_to_write,
        };
        pipe.cmd("CONFIG").arg("SET").arg("min-replicas-to-write").arg(restore).ignore();
    }

    /// Waits until `node` has applied `from`'s whole history, reading both offsets
    /// from the instances themselves (no 1 s REPLCONF ACK floor).
    async fn catch_up(&self, node: SocketAddr, from: SocketAddr) -> Result<(), Failure> {
        let target = read_offset(&mut self.conn(from)?).await.map_err(|error| Failure::Info { node: from, error })?;
        let deadline = Instant::now() + self.settings.catch_up_timeout;
        let mut conn = self.conn(node)?;
        loop {
            let offset = read_offset(&mut conn).await.map_err(|error| Failure::Info { node, error })?;
            if offset >= target {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Failure::CatchUpTimeout { node, offset, target, timeout: self.settings.catch_up_timeout });
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Writes a marker on the master (once) and waits for `node` to serve it.
    async fn verify(&self, node: SocketAddr, master: SocketAddr) -> Result<(), Failure> {
        let key = &self.marker;
        let deadline = Instant::now() + self.settings.verify_timeout;
        let mut master_conn = self.conn(master)?;
        let mut conn = self.conn(node)?;
        let mut written = false;
        let mut last_error = String::from("marker not seen yet");
        while Instant::now() < deadline {
            if !written {
                // Every verifier writes the same key and value: idempotent, and it
                // needs no coordination between the parallel verifications.
                let set: redis::RedisResult<()> =
                    redis::cmd("SET").arg(key).arg(key).arg("PX").arg(30_000).query_async(&mut master_conn).await;
                match set {
                    Ok(()) => written = true,
                    Err(e) => last_error = format!("marker write on {master}: {e}"),
                }
            }
            if written {
                let seen: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(key).query_async(&mut conn).await;
                match seen {
                    Ok(Some(v)) if &v == key => return Ok(()),
                    Ok(_) => {}
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Err(Failure::VerifyTimeout { node, timeout: self.settings.verify_timeout, last_error })
    }

    /// Deletes the verification marker so it never counts as data (the planner
    /// refuses to demote a master that holds keys). Best effort: it expires anyway.
    async fn remove_marker(&self, steps: &[Step]) {
        let Some(master) = steps.iter().find_map(|s| match s {
            Step::Verify { master, .. } => Some(*master),
            _ => None,
        }) else {
            return;
        };
        if let Ok(mut conn) = self.conn(master) {
            let deleted: redis::RedisResult<i64> = redis::cmd("DEL").arg(&self.marker).query_async(&mut conn).await;
            if let Err(e) = deleted {
                tracing::debug!(%master, error = %e, "cannot delete the verification marker; it expires");
            }
        }
    }

    fn observed_max_lag(&self, node: SocketAddr) -> u32 {
        self.members.get(&node).and_then(Observed::replication).map_or(0, |r| r.min_replicas_max_lag)
    }

    fn conn(&self, node: SocketAddr) -> Result<MultiplexedConnection, Failure> {
        let conn = self.members.get(&node).and_then(Observed::conn);
        conn.cloned().ok_or(Failure::NoConnection(node))
    }

    async fn pipeline(&self, node: SocketAddr, pipe: &redis::Pipeline) -> Result<(), Failure> {
        let mut conn = self.conn(node)?;
        pipe.query_async::<()>(&mut conn).await.map_err(|error| Failure::Redis { node, error })
    }
}

/// Milliseconds as reported: rounded to the microsecond.
pub(crate) fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
