//! The etcd side: keeps `/nodes/<cluster>/<node>` as the tracker wants it, under a
//! lease that a background task keeps alive, and writes the topology trigger.
//!
//! [`Registry::run`] is level-triggered: whenever the wanted state changes (every
//! probe) it makes etcd hold the latest one, so nothing is replayed after an
//! outage, only the present. It puts the registration only when what readers act
//! on changed ([`topology::records::Facts`]), or in a new session: an idle agent
//! costs etcd no write, only its lease's keep-alives. Triggers are counted, not queued: a trigger asked for while etcd
//! was away is written once etcd is back (several coalesce into one uuid).
//!
//! On any etcd error the session (client, lease, keep-alive) is dropped and a new
//! one is opened after a capped exponential backoff: the old lease may have
//! expired during the outage, so the registration is put again under a new lease,
//! and the old lease is revoked best-effort afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Client, PutOptions};
use service::backoff::{jittered, Backoff};
use service::etcd::{KeptLease, LeaseLost};
use service::Shutdown;
use tokio::sync::watch;

use crate::agent::Status;
use crate::tracker::Registration;
use topology::records::Facts;

/// What etcd should hold, as the probe loop last decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// `None` until the first probe.
    pub registration: Option<Registration>,
    /// How many triggers were asked for since the agent started.
    pub triggers: u64,
}

/// Bound on one round of etcd requests (open a session, put, trigger).
const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on revoking the lease at shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The etcd writer of one agent.
pub struct Registry {
    etcd: service::cli::EtcdArgs,
    node_key: String,
    trigger_key: String,
    lease_ttl: Duration,
    session: Option<Session>,
    backoff: Backoff,
    /// When the current outage began.
    outage_since: Option<Instant>,
    triggers_written: u64,
    /// A lease of a previous session, revoked once the new one holds the key.
    stale_lease: Option<i64>,
    /// A registration was put at least once (so one may linger after a failure).
    ever_registered: bool,
    status: watch::Sender<Status>,
    /// When the newest lease grant or renewal etcd answered was sent (see
    /// `self_fence`): the probe loop fences a master when this grows too old.
    reached: watch::Sender<std::time::Instant>,
}

/// A connection with a live lease.
struct Session {
    client: Client,
    lease: KeptLease,
    /// The key was deleted in this session (the tracker wants it absent).
    deleted: bool,
    /// What the last put in this session said; `Some` while the key is registered.
    written: Option<Facts>,
}

impl Registry {
    pub fn new(
        etcd: service::cli::EtcdArgs,
        node_key: String,
        trigger_key: String,
        lease_ttl: Duration,
        status: watch::Sender<Status>,
        reached: watch::Sender<std::time::Instant>,
    ) -> Registry {
        Registry {
            etcd,
            node_key,
            trigger_key,
            lease_ttl,
            session: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            outage_since: None,
            triggers_written: 0,
            stale_lease: None,
            ever_registered: false,
            status,
            reached,
        }
    }

    /// Writes every change of `desired` until `shutdown`, then revokes the lease,
    /// which deletes the registration.
    pub async fn run(mut self, mut desired: watch::Receiver<Desired>, shutdown: Shutdown) {
        let mut retry_at: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.requested() => break,
                changed = desired.changed() => if changed.is_err() { break },
                event = lease_event(&mut self.session) => match event {
                    Ok(()) => {
                        self.note_reached();
                        continue;
                    }
                    Err(reason) => {
                        self.lost(&format!("lease lost: {reason}"));
                        retry_at = Some(Instant::now());
                    }
                },
                () = sleep_until(retry_at) => {}
            }
            if retry_at.is_some_and(|at| Instant::now() < at) {
                continue;
            }
            let want = desired.borrow_and_update().clone();
            let result = tokio::select! {
                // A stuck etcd must not hold up the shutdown.
                () = shutdown.requested() => break,
                result = tokio::time::timeout(SYNC_TIMEOUT, self.sync(&want)) => match result {
                    Ok(result) => result,
                    Err(_) => Err(anyhow::anyhow!("no answer within {} ms", SYNC_TIMEOUT.as_millis())),
                },
            };
            match result {
                Ok(()) => {
                    retry_at = None;
                    if let Some(since) = self.outage_since.take() {
                        tracing::info!(outage_ms = since.elapsed().as_millis() as u64, "etcd restored");
                    }
                    self.backoff.reset();
                }
                Err(e) => {
                    self.lost(&format!("{e:#}"));
                    let delay = jittered(self.backoff.next_delay(), random_fraction());
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        attempt = self.backoff.failures(),
                        "etcd unavailable; will reconnect and register again"
                    );
                    retry_at = Some(Instant::now() + delay);
                }
            }
        }
        let asked = desired.borrow().triggers;
        self.deregister(asked).await;
    }

    /// Makes etcd hold `want`: opens a session if needed, puts or deletes the
    /// registration, writes a pending trigger.
    async fn sync(&mut self, want: &Desired) -> anyhow::Result<()> {
        let Some(registration) = &want.registration else { return Ok(()) };
        if self.session.is_none() {
            let session = Session::open(&self.etcd, self.lease_ttl).await?;
            self.session = Some(session);
            self.note_reached();
        }
        let Some(session) = self.session.as_mut() else { return Ok(()) };
        match registration {
            Registration::Put(record) if session.written.as_ref() == Some(&record.facts()) => {}
            Registration::Put(record) => {
                let value = serde_json::to_string(record).context("encode the registration")?;
                session
                    .client
                    .put(self.node_key.as_str(), value, Some(PutOptions::new().with_lease(session.lease.id())))
                    .await
                    .with_context(|| format!("put {}", self.node_key))?;
                session.deleted = false;
                self.ever_registered = true;
                if session.written.replace(record.facts()).is_none() {
                    tracing::info!(key = %self.node_key, lease = session.lease.id(), healthy = record.healthy, "registered in etcd");
                }
            }
            Registration::Absent => {
                if !session.deleted {
                    session.client.delete(self.node_key.as_str(), None).await.with_context(|| format!("delete {}", self.node_key))?;
                    session.deleted = true;
                    session.written = None;
                    tracing::info!(key = %self.node_key, "registration removed from etcd");
                }
            }
        }
        if want.triggers > self.triggers_written {
            let trigger = uuid::Uuid::new_v4().to_string();
            session
                .client
                .put(self.trigger_key.as_str(), trigger.as_str(), None)
                .await
                .with_context(|| format!("put {}", self.trigger_key))?;
            self.triggers_written = want.triggers;
            tracing::info!(key = %self.trigger_key, %trigger, "topology trigger written");
            self.status.send_modify(|s| s.last_trigger = Some(trigger));
        }
        if let Some(old) = self.stale_lease.take() {
            // The key now lives under the new lease; the old one only holds a leftover.
            if let Err(e) = session.client.lease_revoke(old).await {
                tracing::debug!(lease = old, error = %e, "could not revoke the previous lease; it will expire");
            }
        }
        let registered = session.written.is_some();
        self.status.send_modify(|s| {
            s.etcd_connected = true;
            s.registered = registered;
            s.etcd_error = None;
        });
        Ok(())
    }

    /// Hands the newest answered renewal of the session's lease to the probe loop.
    fn note_reached(&self) {
        if let Some(session) = &self.session {
            let renewed = session.lease.renewed().into_std();
            self.reached.send_if_modified(|reached| {
                let newer = renewed > *reached;
                if newer {
                    *reached = renewed;
                }
                newer
            });
        }
    }

    /// Drops the session after an error; the next attempt starts afresh.
    fn lost(&mut self, error: &str) {
        if let Some(session) = self.session.take() {
            self.stale_lease = Some(session.lease.id());
        }
        if self.outage_since.is_none() {
            self.outage_since = Some(Instant::now());
            tracing::warn!(%error, "etcd lost");
        }
        let error = error.to_string();
        self.status.send_modify(|s| {
            s.etcd_connected = false;
            s.etcd_error = Some(error);
        });
    }

    /// Revokes the lease (deleting the registration) so readers see the node
    /// leave at once rather than after the lease TTL.
    async fn deregister(&mut self, triggers_asked: u64) {
        if self.triggers_written < triggers_asked {
            tracing::warn!("shutting down with a topology trigger etcd never received");
        }
        let Some(mut session) = self.session.take() else {
            if self.ever_registered {
                tracing::warn!(key = %self.node_key, "no etcd session at shutdown; the registration expires with its lease");
            }
            return;
        };
        match tokio::time::timeout(REVOKE_TIMEOUT, session.client.lease_revoke(session.lease.id())).await {
            Ok(Ok(_)) => tracing::info!(key = %self.node_key, lease = session.lease.id(), "deregistered (lease revoked)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot revoke the lease; the registration expires with it"),
            Err(_) => tracing::warn!("etcd did not answer the lease revoke; the registration expires with the lease"),
        }
        self.status.send_modify(|s| {
            s.registered = false;
            s.etcd_connected = false;
        });
    }
}

impl Session {
    async fn open(etcd: &service::cli::EtcdArgs, ttl: Duration) -> anyhow::Result<Session> {
        let mut client = etcd.connect().await.context("connect to etcd")?;
        let lease = KeptLease::grant(&mut client, ttl).await.context("grant a lease and keep it alive")?;
        tracing::info!(lease = lease.id(), ttl_s = lease.ttl().as_secs(), "etcd session opened");
        Ok(Session { client, lease, deleted: false, written: None })
    }
}

/// Completes at the session's next answered lease renewal, or when its lease is
/// lost; never without a session.
async fn lease_event(session: &mut Option<Session>) -> Result<(), LeaseLost> {
    match session {
        Some(session) => session.lease.renewed_or_lost().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// A fraction in [0, 1) for jitter, from the OS-seeded uuid generator.
fn random_fraction() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}
