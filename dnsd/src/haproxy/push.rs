//! The per-target task: on every zone change (and every [`RESYNC`]) read the slots,
//! plan, and run the commands in order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use service::backoff::Backoff;
use service::Shutdown;

use super::plan::{self, Command, StateError};
use super::runtime::{batches, Runtime, RuntimeError, Session};
use super::hold::{desired_master, holding, Desired, HOLD_MAX};
use super::{wanted, HaproxyConfig, Wanted};
use crate::live::Live;

/// How often a target is re-read even without a change: heals what HAProxy's own
/// DNS resolution or an operator changed since the last push.
pub const RESYNC: Duration = Duration::from_secs(1);
/// Longest a runtime-API exchange may take.
pub const TIMEOUT: Duration = Duration::from_millis(500);

/// A push that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("backend {backend}: {source}")]
    State { backend: String, source: StateError },
}

/// Pushes to `runtime` until `shutdown`.
pub async fn follow(
    live: Arc<Live>,
    config: Arc<HaproxyConfig>,
    mut desired: tokio::sync::watch::Receiver<Option<Desired>>,
    runtime: Runtime,
    shutdown: Shutdown,
) {
    let mut changes = live.subscribe();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let target = runtime.target().to_string();
    loop {
        changes.mark_unchanged();
        desired.mark_unchanged();
        let started = Instant::now();
        let records = live.state();
        let mut want = wanted(&records, &config.cluster);
        let mut hold_left = None;
        if let Some(d) = desired.borrow().as_ref() {
            let master = desired_master(&records, &live.config().names, &config.cluster, &d.topology);
            want.hold = holding(master, want.master, d.seen, started);
            hold_left = want.hold.map(|_| HOLD_MAX.saturating_sub(started.saturating_duration_since(d.seen)));
        }
        let delay = match sync(&runtime, &config, &want).await {
            Ok(commands) => {
                let count = commands.len();
                if backoff.failures() > 0 {
                    tracing::info!(%target, "HAProxy runtime API reachable again");
                }
                backoff.reset();
                if count > 0 {
                    let commands: Vec<String> = commands.iter().map(ToString::to_string).collect();
                    tracing::info!(%target, master = ?want.master, slaves = ?want.slaves, ?commands,
                        ms = started.elapsed().as_secs_f64() * 1000.0, "pushed to HAProxy");
                }
                RESYNC
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%target, %error, retry_ms = delay.as_millis() as u64, "push to HAProxy failed");
                delay
            }
        };
        // A hold is lifted when it lapses, not a resync later.
        let delay = hold_left.map_or(delay, |left| delay.min(left + Duration::from_millis(1)));
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            changed = desired.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(delay) => {}
            () = shutdown.requested() => return,
        }
    }
}

/// Brings both backends of one HAProxy to `want`, the write backend first (it is
/// what a move waits for); returns the commands that ran.
pub async fn sync(runtime: &Runtime, config: &HaproxyConfig, want: &Wanted) -> Result<Vec<Command>, PushError> {
    let mut session = runtime.session().await?;
    let write_slots = slots(&mut session, &config.write_backend, &config.write_server).await?;
    let mut commands = plan::plan_write(&config.write_backend, &write_slots, want.master, want.hold);
    run_all(&mut session, &commands).await?;
    if config.read_backend.is_empty() {
        return Ok(commands);
    }
    let read_slots = slots(&mut session, &config.read_backend, &config.read_server).await?;
    if want.slaves.len() > read_slots.len() {
        tracing::warn!(backend = config.read_backend, slaves = want.slaves.len(), slots = read_slots.len(),
            "more live slaves than server slots; the rest are not served");
    }
    let read = plan::plan_read(&config.read_backend, &read_slots, &want.slaves);
    run_all(&mut session, &read).await?;
    commands.extend(read);
    Ok(commands)
}

/// Runs `commands` in order, a batch per round trip, stopping at the first batch
/// with a refusal.
pub async fn run_all(session: &mut Session, commands: &[Command]) -> Result<(), RuntimeError> {
    for batch in batches(commands) {
        session.run_all(batch).await?;
    }
    Ok(())
}

/// The slots of `backend` named `<prefix><n>`. HAProxy answers an unknown backend
/// with a message, not the table: that is an error.
async fn slots(session: &mut Session, backend: &str, prefix: &str) -> Result<Vec<plan::Slot>, PushError> {
    let text = session.send(&format!("show servers state {backend}")).await?;
    plan::parse_servers_state(&text, backend, prefix)
        .map_err(|source| PushError::State { backend: backend.to_string(), source })
}
