//! The etcd side: keeps `/nodes/<cluster>/<node>` of every instance the agent
//! watches as its tracker wants it, under ONE lease that a background task keeps
//! alive, and writes the instances' topology triggers.
//!
//! One lease for all instances: an agent that dies (or loses etcd) drops every
//! registration it holds at once, which is what its death means, while a redis
//! that dies only turns its own registration unhealthy (a put). One lease also
//! costs etcd one keep-alive stream per agent, not one per instance.
//!
//! [`Registry::run`] is level-triggered: whenever a wanted state changes (every
//! probe, of any instance) it makes etcd hold the latest ones, so nothing is
//! replayed after an outage, only the present. It puts a registration only when
//! what readers act on changed ([`topology::records::Facts`]), or in a new
//! session: an idle agent costs etcd no write, only its lease's keep-alives. The
//! instances' writes of one round go out concurrently. Triggers are counted, not
//! queued: a trigger asked for while etcd was away is written once etcd is back
//! (several coalesce into one uuid).
//!
//! On any etcd error the session (client, lease, keep-alive) is dropped and a new
//! one is opened after a capped exponential backoff: the old lease may have
//! expired during the outage, so every registration is put again under a new
//! lease, and the old lease is revoked best-effort afterwards.

use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{Client, PutOptions};
use service::backoff::{jittered, Backoff};
use service::etcd::{KeptLease, LeaseLost};
use service::Shutdown;
use tokio::sync::{watch, Notify};

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

/// One instance's side of the registry: its keys, what its probe loop wants, and
/// its status to report.
pub struct Slot {
    pub node_key: String,
    pub trigger_key: String,
    pub desired: watch::Receiver<Desired>,
    pub status: watch::Sender<Status>,
}

/// A slot and what the registry did for it.
struct Held {
    slot: Slot,
    triggers_written: u64,
    /// A registration was put at least once (so one may linger after a failure).
    ever_registered: bool,
    /// The key was deleted in this session (the tracker wants it absent).
    deleted: bool,
    /// What the last put in this session said; `Some` while the key is registered.
    written: Option<Facts>,
}

/// The etcd writer of one agent, for all its instances.
pub struct Registry {
    etcd: service::cli::EtcdArgs,
    lease_ttl: Duration,
    held: Vec<Held>,
    /// Woken by the probe loops after they change a slot's `desired`.
    wake: std::sync::Arc<Notify>,
    session: Option<Session>,
    backoff: Backoff,
    /// When the current outage began.
    outage_since: Option<Instant>,
    /// A lease of a previous session, revoked once the new one holds the keys.
    stale_lease: Option<i64>,
    /// When the newest lease grant or renewal etcd answered was sent (see
    /// `self_fence`): the probe loops fence a master when this grows too old.
    reached: watch::Sender<std::time::Instant>,
}

/// A connection with a live lease.
struct Session {
    client: Client,
    lease: KeptLease,
}

impl Registry {
    /// `wake` must be notified after any slot's `desired` changes.
    pub fn new(
        etcd: service::cli::EtcdArgs,
        lease_ttl: Duration,
        slots: Vec<Slot>,
        wake: std::sync::Arc<Notify>,
        reached: watch::Sender<std::time::Instant>,
    ) -> Registry {
        let held = slots
            .into_iter()
            .map(|slot| Held { slot, triggers_written: 0, ever_registered: false, deleted: false, written: None })
            .collect();
        Registry {
            etcd,
            lease_ttl,
            held,
            wake,
            session: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            outage_since: None,
            stale_lease: None,
            reached,
        }
    }

    /// Writes every change of the slots' `desired` until `shutdown`, then revokes
    /// the lease, which deletes every registration.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut retry_at: Option<Instant> = None;
        let wake = self.wake.clone();
        loop {
            tokio::select! {
                () = shutdown.requested() => break,
                () = wake.notified() => {},
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
            let result = tokio::select! {
                // A stuck etcd must not hold up the shutdown.
                () = shutdown.requested() => break,
                result = tokio::time::timeout(SYNC_TIMEOUT, self.sync()) => match result {
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
        self.deregister().await;
    }

    /// Makes etcd hold what every slot wants: opens a session if needed, then, for
    /// all slots at once, puts or deletes the registration and writes a pending
    /// trigger.
    async fn sync(&mut self) -> anyhow::Result<()> {
        let fresh = self.session.is_none();
        // A new session must write every slot; an open one only the slots whose
        // wanted state changed since the last round (which succeeded: a failed one
        // ends the session).
        let wanted: Vec<Option<Desired>> = self
            .held
            .iter_mut()
            .map(|h| (fresh || h.slot.desired.has_changed().unwrap_or(false)).then(|| h.slot.desired.borrow_and_update().clone()))
            .collect();
        if wanted.iter().flatten().all(|want| want.registration.is_none()) {
            return Ok(());
        }
        if fresh {
            let session = Session::open(&self.etcd, self.lease_ttl).await?;
            for held in &mut self.held {
                held.deleted = false;
                held.written = None;
            }
            self.session = Some(session);
            self.note_reached();
        }
        let Some(session) = self.session.as_ref() else { return Ok(()) };
        let (client, lease) = (&session.client, session.lease.id());
        let rounds = self.held.iter_mut().zip(&wanted).filter_map(|(held, want)| Some(held.sync(client, lease, want.as_ref()?)));
        let results = futures::future::join_all(rounds).await;
        // Every slot that could be written was; the first error ends the session.
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error);
        }
        if let Some(old) = self.stale_lease.take() {
            // The keys now live under the new lease; the old one only holds leftovers.
            if let Err(e) = client.lease_client().revoke(old).await {
                tracing::debug!(lease = old, error = %e, "could not revoke the previous lease; it will expire");
            }
        }
        for held in &self.held {
            let registered = held.written.is_some();
            held.slot.status.send_if_modified(|s| {
                let changed = !s.etcd_connected || s.registered != registered || s.etcd_error.is_some();
                s.etcd_connected = true;
                s.registered = registered;
                s.etcd_error = None;
                changed
            });
        }
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
        for held in &self.held {
            held.slot.status.send_modify(|s| {
                s.etcd_connected = false;
                s.etcd_error = Some(error.to_string());
            });
        }
    }

    /// Revokes the lease (deleting every registration) so readers see the nodes
    /// leave at once rather than after the lease TTL.
    async fn deregister(&mut self) {
        for held in &self.held {
            if held.triggers_written < held.slot.desired.borrow().triggers {
                tracing::warn!(key = %held.slot.trigger_key, "shutting down with a topology trigger etcd never received");
            }
        }
        let Some(mut session) = self.session.take() else {
            if self.held.iter().any(|h| h.ever_registered) {
                tracing::warn!("no etcd session at shutdown; the registrations expire with their lease");
            }
            return;
        };
        let keys = self.held.len();
        match tokio::time::timeout(REVOKE_TIMEOUT, session.client.lease_revoke(session.lease.id())).await {
            Ok(Ok(_)) => tracing::info!(keys, lease = session.lease.id(), "deregistered (lease revoked)"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot revoke the lease; the registrations expire with it"),
            Err(_) => tracing::warn!("etcd did not answer the lease revoke; the registrations expire with the lease"),
        }
        for held in &self.held {
            held.slot.status.send_modify(|s| {
                s.registered = false;
                s.etcd_connected = false;
            });
        }
    }
}

impl Held {
    /// Makes etcd hold what this slot wants, under `lease`. Most rounds write
    /// nothing: the client (costly to clone) is cloned only for a write.
    async fn sync(&mut self, client: &Client, lease: i64, want: &Desired) -> anyhow::Result<()> {
        let Some(registration) = &want.registration else { return Ok(()) };
        let node_key = self.slot.node_key.as_str();
        match registration {
            Registration::Put(record) if self.written.as_ref() == Some(&record.facts()) => {}
            Registration::Put(record) => {
                let value = serde_json::to_string(record).context("encode the registration")?;
                client
                    .kv_client()
                    .put(node_key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
                    .with_context(|| format!("put {node_key}"))?;
                self.deleted = false;
                self.ever_registered = true;
                if self.written.replace(record.facts()).is_none() {
                    tracing::info!(key = %node_key, lease, healthy = record.healthy, "registered in etcd");
                }
            }
            Registration::Absent => {
                if !self.deleted {
                    client.kv_client().delete(node_key, None).await.with_context(|| format!("delete {node_key}"))?;
                    self.deleted = true;
                    self.written = None;
                    tracing::info!(key = %node_key, "registration removed from etcd");
                }
            }
        }
        if want.triggers > self.triggers_written {
            let trigger = uuid::Uuid::new_v4().to_string();
            let trigger_key = self.slot.trigger_key.as_str();
            client.kv_client().put(trigger_key, trigger.as_str(), None).await.with_context(|| format!("put {trigger_key}"))?;
            self.triggers_written = want.triggers;
            tracing::info!(key = %trigger_key, %trigger, "topology trigger written");
            self.slot.status.send_modify(|s| s.last_trigger = Some(trigger));
        }
        Ok(())
    }
}

impl Session {
    async fn open(etcd: &service::cli::EtcdArgs, ttl: Duration) -> anyhow::Result<Session> {
        let mut client = etcd.connect().await.context("connect to etcd")?;
        let lease = KeptLease::grant(&mut client, ttl).await.context("grant a lease and keep it alive")?;
        tracing::info!(lease = lease.id(), ttl_s = lease.ttl().as_secs(), "etcd session opened");
        Ok(Session { client, lease })
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
