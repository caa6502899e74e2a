//! The two ways every service holds on to etcd, each written once:
//!
//! - [`follow`]: list some prefixes at one revision, then watch them from the next
//!   revision; after any error (etcd down or restarted, the watch cancelled because
//!   its revision was compacted away, a broken stream) back off, list again and
//!   watch again. Never resume from an old revision: a fresh list is the only state
//!   that cannot have missed an event. The [`Follower`] sees a whole list, then
//!   batches of events.
//! - [`KeptLease`]: a lease renewed at a third of its TTL, which reports itself
//!   lost as soon as a renewal goes unanswered, so its holder stops acting on it
//!   well before etcd can expire it.
//! - [`LazyClient`]: a client for request/response use (an HTTP handler's reads and
//!   transactions), connected on first use and again after a failure, so that a
//!   service starts, and answers `/healthz`, while etcd is down.
//! - [`members`]: how every client spreads over several etcd members: one at a
//!   time, and the next as soon as that one fails.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, Event, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, WatchOptions};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::backoff::Backoff;
use crate::cli::EtcdArgs;

pub mod members;

/// Why a [`follow`] cycle ended.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("connect to etcd: {0}")]
    Connect(#[source] etcd_client::Error),
    #[error("list {prefix}: {source}")]
    List { prefix: String, source: etcd_client::Error },
    #[error("etcd answered a list without a header")]
    NoHeader,
    #[error("watch {prefix}: {source}")]
    Watch { prefix: String, source: etcd_client::Error },
    #[error("watch cancelled by etcd (compacted at {compact_revision}): {reason}")]
    Cancelled { compact_revision: i64, reason: String },
}

/// What a [`follow`] loop feeds.
pub trait Follower {
    /// Every key under the followed prefixes, read at `revision`. Replaces all
    /// that was known before: events may have been missed since the last list.
    fn listed(&mut self, revision: i64, kvs: &[KeyValue]);

    /// Changes after the last list or batch, in revision order.
    fn changed(&mut self, events: &[Event]);

    /// A cycle failed before it could list; called once per failure.
    fn unavailable(&mut self, _error: &FollowError) {}
}

/// How a [`follow`] loop retries.
#[derive(Debug, Clone)]
pub struct FollowPolicy {
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for FollowPolicy {
    fn default() -> Self {
        FollowPolicy { backoff_min: Duration::from_millis(100), backoff_max: Duration::from_secs(5) }
    }
}

/// Lists `prefixes` and watches them, for ever; cancel it by dropping the future
/// (for instance in a `select!` with a shutdown). `connect` is called at the start
/// of every cycle: a long-lived client can hand out a clone, a service that must
/// start without etcd can connect afresh.
pub async fn follow<F, C, Fut>(mut connect: C, prefixes: &[String], policy: &FollowPolicy, follower: &mut F)
where
    F: Follower,
    C: FnMut() -> Fut,
    Fut: Future<Output = Result<Client, etcd_client::Error>>,
{
    let mut backoff = Backoff::new(policy.backoff_min, policy.backoff_max);
    // Log the transitions (lost, still lost, back), not every retry.
    let mut reported = false;
    loop {
        let mut watching = false;
        let result = match connect().await {
            Ok(client) => cycle(client, prefixes, follower, &mut watching).await,
            Err(e) => Err(FollowError::Connect(e)),
        };
        if watching {
            backoff.reset();
            if reported {
                tracing::info!("etcd watch restored");
            }
            reported = false;
        }
        let delay = backoff.next_delay();
        match result {
            Ok(()) => tracing::info!("etcd watch ended; listing again"),
            Err(error) => {
                if !watching {
                    follower.unavailable(&error);
                }
                if reported {
                    tracing::debug!(%error, "etcd still unavailable");
                } else {
                    reported = true;
                    tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "etcd watch broken; listing again");
                }
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// One list then watch; returns when the watch ends.
async fn cycle<F: Follower>(
    mut client: Client,
    prefixes: &[String],
    follower: &mut F,
    watching: &mut bool,
) -> Result<(), FollowError> {
    let mut revision = None;
    let mut kvs = Vec::new();
    for prefix in prefixes {
        let mut options = GetOptions::new().with_prefix();
        // Every prefix at the revision of the first: one consistent picture.
        if let Some(revision) = revision {
            options = options.with_revision(revision);
        }
        let mut listed = client
            .get(prefix.as_str(), Some(options))
            .await
            .map_err(|source| FollowError::List { prefix: prefix.clone(), source })?;
        if revision.is_none() {
            revision = Some(listed.header().map(|h| h.revision()).ok_or(FollowError::NoHeader)?);
        }
        kvs.extend(listed.take_kvs());
    }
    let revision = revision.unwrap_or(0);
    follower.listed(revision, &kvs);

    let options = || Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1));
    let Some((first, rest)) = prefixes.split_first() else { return Ok(()) };
    let watch_error = |prefix: &String| {
        let prefix = prefix.clone();
        move |source| FollowError::Watch { prefix, source }
    };
    let mut stream = client.watch(first.as_str(), options()).await.map_err(watch_error(first))?;
    for prefix in rest {
        stream.watch(prefix.as_str(), options()).await.map_err(watch_error(prefix))?;
    }
    *watching = true;
    let all = prefixes.join(", ");
    loop {
        let Some(response) = stream.message().await.map_err(watch_error(&all))? else {
            return Ok(());
        };
        if response.canceled() {
            return Err(FollowError::Cancelled {
                compact_revision: response.compact_revision(),
                reason: response.cancel_reason().to_string(),
            });
        }
        if !response.events().is_empty() {
            follower.changed(response.events());
        }
    }
}

/// Why a [`KeptLease`] was lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseLost {
    #[error("cannot send a keep-alive: {0}")]
    Send(String),
    #[error("no keep-alive answer within {0} ms")]
    Unanswered(u128),
    #[error("keep-alive failed: {0}")]
    Failed(String),
    #[error("keep-alive stream closed")]
    Closed,
    #[error("lease {0} expired")]
    Expired(i64),
    #[error("the keep-alive task stopped: {0}")]
    Task(String),
}

/// A lease and the task that keeps it alive. Dropping it stops the renewals (the
/// lease then expires unless revoked).
#[derive(Debug)]
pub struct KeptLease {
    id: i64,
    ttl: Duration,
    keeper: AbortOnDropHandle<LeaseLost>,
    lost: Option<LeaseLost>,
    renewed: tokio::sync::watch::Receiver<Instant>,
}

impl KeptLease {
    /// Grants a lease of `ttl` (etcd may round it up to its minimum) and starts
    /// renewing it.
    pub async fn grant(client: &mut Client, ttl: Duration) -> Result<KeptLease, etcd_client::Error> {
        let ttl_secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let asked = Instant::now();
        let lease = client.lease_grant(ttl_secs, None).await?;
        let (keeper, stream) = client.lease_keep_alive(lease.id()).await?;
        let granted = Duration::from_secs(u64::try_from(lease.ttl()).unwrap_or(1).max(1));
        let (renewed_tx, renewed) = tokio::sync::watch::channel(asked);
        let task = tokio::spawn(keep_alive(client.clone(), lease.id(), keeper, stream, granted, renewed_tx));
        Ok(KeptLease { id: lease.id(), ttl: granted, keeper: AbortOnDropHandle::new(task), lost: None, renewed })
    }

    /// When the newest grant or renewal that etcd answered was sent. etcd received
    /// it later, so the lease cannot expire before this plus the TTL, whatever
    /// etcd's clock says.
    pub fn renewed(&self) -> Instant {
        *self.renewed.borrow()
    }

    /// Completes at the next answered renewal (`Ok`), or when the lease is lost,
    /// as [`KeptLease::lost`] does. Cancel-safe.
    pub async fn renewed_or_lost(&mut self) -> Result<(), LeaseLost> {
        if let Some(lost) = &self.lost {
            return Err(lost.clone());
        }
        let ended = tokio::select! {
            changed = self.renewed.changed() => match changed {
                Ok(()) => return Ok(()),
                // The keeper dropped its sender: it ended, so `lost()` will not wait.
                Err(_) => None,
            },
            ended = &mut self.keeper => Some(ended),
        };
        Err(match ended {
            // A finished task must not be polled again: keep what it said.
            Some(ended) => {
                let lost = ended.unwrap_or_else(|e| LeaseLost::Task(e.to_string()));
                self.lost = Some(lost.clone());
                lost
            }
            None => self.lost().await,
        })
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Completes when the lease can no longer be counted on. Cancel-safe, and once
    /// lost it keeps answering the same reason.
    pub async fn lost(&mut self) -> LeaseLost {
        if let Some(lost) = &self.lost {
            return lost.clone();
        }
        let lost = match (&mut self.keeper).await {
            Ok(lost) => lost,
            Err(e) => LeaseLost::Task(e.to_string()),
        };
        self.lost = Some(lost.clone());
        lost
    }
}

/// Renews at a third of `ttl` and waits at most that long for each answer: the
/// first unanswered renewal is reported at most 2/3 of a TTL after the last
/// answered one was sent, while the lease still has a third of its TTL to run.
///
/// A keep-alive stream that breaks (its etcd member died) is opened again, on the
/// member the client moved on to, within that same wait: the lease lives in the
/// cluster, not in the member, so losing one member of several loses no lease.
async fn keep_alive(
    mut client: Client,
    id: i64,
    mut keeper: LeaseKeeper,
    mut stream: LeaseKeepAliveStream,
    ttl: Duration,
    renewed: tokio::sync::watch::Sender<Instant>,
) -> LeaseLost {
    let period = ttl / 3;
    let answer_timeout = period.max(Duration::from_millis(500)).min(ttl / 2);
    loop {
        let sent = Instant::now();
        let deadline = sent + answer_timeout;
        loop {
            let broken = match renew(&mut keeper, &mut stream, deadline, answer_timeout).await {
                Ok(()) => break,
                Err(Renewal::Lost(lost)) => return lost,
                Err(Renewal::Broken(lost)) => lost,
            };
            // Open a new stream and renew on it, or give up at the deadline.
            let reopened = loop {
                if Instant::now() >= deadline {
                    return broken;
                }
                match tokio::time::timeout_at(deadline, client.lease_keep_alive(id)).await {
                    Ok(Ok(opened)) => break opened,
                    Ok(Err(e)) => tracing::debug!(lease = id, error = %e, "cannot reopen the keep-alive stream; trying again"),
                    Err(_) => return broken,
                }
                tokio::time::sleep(REOPEN_PAUSE).await;
            };
            tracing::info!(lease = id, after = %broken, "keep-alive stream reopened");
            (keeper, stream) = reopened;
        }
        renewed.send_replace(sent);
        tokio::time::sleep_until(sent + period).await;
    }
}

/// Between two attempts to reopen a keep-alive stream.
const REOPEN_PAUSE: Duration = Duration::from_millis(20);

/// Why one renewal failed.
enum Renewal {
    /// The lease is gone (expired) or out of time: no stream can help.
    Lost(LeaseLost),
    /// The stream broke: another may still renew the lease.
    Broken(LeaseLost),
}

/// Sends one renewal and waits for its answer until `deadline`, `waited` after
/// the round's first renewal was sent.
async fn renew(
    keeper: &mut LeaseKeeper,
    stream: &mut LeaseKeepAliveStream,
    deadline: Instant,
    waited: Duration,
) -> Result<(), Renewal> {
    if let Err(e) = keeper.keep_alive().await {
        return Err(Renewal::Broken(LeaseLost::Send(e.to_string())));
    }
    match tokio::time::timeout_at(deadline, stream.message()).await {
        Err(_) => Err(Renewal::Lost(LeaseLost::Unanswered(waited.as_millis()))),
        Ok(Err(e)) => Err(Renewal::Broken(LeaseLost::Failed(e.to_string()))),
        Ok(Ok(None)) => Err(Renewal::Broken(LeaseLost::Closed)),
        Ok(Ok(Some(answer))) if answer.ttl() <= 0 => Err(Renewal::Lost(LeaseLost::Expired(answer.id()))),
        Ok(Ok(Some(_))) => Ok(()),
    }
}

/// An etcd client connected on first use; [`LazyClient::reset`] after a failed
/// request makes the next one connect afresh.
pub struct LazyClient {
    args: EtcdArgs,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl LazyClient {
    pub fn new(args: EtcdArgs) -> LazyClient {
        LazyClient { args, client: tokio::sync::Mutex::new(None) }
    }

    pub fn args(&self) -> &EtcdArgs {
        &self.args
    }

    /// The endpoints, for an error message.
    pub fn endpoints(&self) -> String {
        self.args.etcd_endpoints.join(",")
    }

    /// The connected client, connecting now if there is none.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        let mut cached = self.client.lock().await;
        if let Some(client) = cached.as_ref() {
            return Ok(client.clone());
        }
        let client = self.args.connect().await?;
        *cached = Some(client.clone());
        Ok(client)
    }

    /// Forgets the client after a failure.
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }
}
