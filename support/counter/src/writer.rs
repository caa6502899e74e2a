//! The writer: pushes fresh ids (`RPUSH <key> <id>`) at a steady rate to the
//! master, reconnecting (and re-resolving) after every error, and tallies each
//! write's outcome: acknowledged, rejected or unknown ([`WriteOutcome`]). Each attempt
//! uses a new id: a rejected id is never retried, so finding it in the list later
//! means a write reported as failed was applied.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use service::redis_auth::Credentials;
use service::resolve::MemberResolver;

use crate::tally::Tally;

/// How the writer finds the master.
#[derive(Clone)]
pub enum Destination {
    /// One address: HAProxy's write frontend, or a redis directly.
    Fixed(SocketAddr),
    /// An SRV name (`master.<cluster>.<domain>`) looked up through `resolver`
    /// (dnsd) again after each error.
    Srv { name: String, resolver: Box<MemberResolver> },
    /// The writable master among these nodes, found by asking each for `ROLE`
    /// (for tests that run without DNS).
    Discover(Vec<SocketAddr>),
}

impl Destination {
    /// Where the master is now, if it can be told.
    pub async fn locate(&self, conns: &mut Connections) -> Option<SocketAddr> {
        match self {
            Destination::Fixed(addr) => Some(*addr),
            Destination::Srv { name, resolver } => match resolver.srv(name).await {
                Ok(addrs) => addrs.first().copied(),
                Err(e) => {
                    tracing::debug!(%name, error = %e, "cannot resolve the master");
                    None
                }
            },
            Destination::Discover(nodes) => discover(nodes, conns).await,
        }
    }
}

/// A connection that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {addr}: {source}")]
pub struct ConnectError {
    pub addr: SocketAddr,
    pub source: redis::RedisError,
}

/// Connections by address, opened on demand and dropped after an error.
#[derive(Default)]
pub struct Connections {
    conns: HashMap<SocketAddr, MultiplexedConnection>,
    timeout: Duration,
    credentials: Credentials,
}

impl Connections {
    pub fn new(timeout: Duration) -> Connections {
        Connections::authenticated(timeout, Credentials::default())
    }

    /// Connections that AUTH with `credentials` (redis with `requirepass` or ACLs).
    pub fn authenticated(timeout: Duration, credentials: Credentials) -> Connections {
        Connections { conns: HashMap::new(), timeout, credentials }
    }

    pub async fn get(&mut self, addr: SocketAddr) -> Result<&mut MultiplexedConnection, ConnectError> {
        use std::collections::hash_map::Entry;
        match self.conns.entry(addr) {
            Entry::Occupied(conn) => Ok(conn.into_mut()),
            Entry::Vacant(slot) => {
                let conn = connect(addr, self.timeout, &self.credentials).await.map_err(|source| ConnectError { addr, source })?;
                Ok(slot.insert(conn))
            }
        }
    }

    pub fn forget(&mut self, addr: SocketAddr) {
        self.conns.remove(&addr);
    }
}

/// How much to write.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub per_second: u32,
    /// Stop after this many writes (acknowledged or not); `None` runs until stopped.
    pub count: Option<u64>,
    /// Timeout of one write; longer means the outcome is unknown.
    pub timeout: Duration,
}

/// What the client knows about one write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Redis answered OK: the write must survive.
    Acknowledged,
    /// Redis answered with an error (`READONLY`, `NOREPLICAS`, `LOADING`, ...), or
    /// the command was never sent: the write must not appear.
    Rejected,
    /// Sent, then timed out or lost its connection: it may or may not appear.
    Unknown,
}

impl WriteOutcome {
    /// Only an error reply proves redis saw and refused the command; anything
    /// else after sending (I/O, a dropped connection, a parse error) leaves it open.
    pub fn of(reply: &redis::RedisResult<i64>) -> WriteOutcome {
        match reply {
            Ok(_) => WriteOutcome::Acknowledged,
            Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_) | redis::ErrorKind::Extension) => WriteOutcome::Rejected,
            Err(_) => WriteOutcome::Unknown,
        }
    }
}

/// The writer task ended without a tally: it panicked or was cancelled, so
/// nothing can be said about the writes.
#[derive(Debug, thiserror::Error)]
#[error("the writer died: {0}")]
pub struct WriterDied(#[from] tokio::task::JoinError);

/// A running writer; [`Writer::stop`] ends it and returns the tally.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Tally>,
}

impl Writer {
    /// Authenticates as `REDIS_TOPOLOGY_REDIS_USER`/`REDIS_TOPOLOGY_REDIS_PASSWORD` say, if set ([`Credentials::from_env`]).
    pub fn start(target: Destination, key: &str, pace: Pace) -> Writer {
        Writer::start_as(target, key, pace, Credentials::from_env())
    }

    /// [`Writer::start`], authenticating with `credentials`.
    pub fn start_as(target: Destination, key: &str, pace: Pace, credentials: Credentials) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(target, key.to_string(), pace, credentials, stop.clone()));
        Writer { stop, task }
    }

    /// Stops now and returns the tally.
    pub async fn stop(self) -> Result<Tally, WriterDied> {
        self.stop.store(true, Ordering::SeqCst);
        self.finish().await
    }

    /// Waits for the writer to reach its count (or be stopped). A writer that
    /// died has no tally: an empty one would read as nothing lost.
    pub async fn finish(self) -> Result<Tally, WriterDied> {
        Ok(self.task.await?)
    }

    pub fn stopper(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

async fn run(target: Destination, key: String, pace: Pace, credentials: Credentials, stop: Arc<AtomicBool>) -> Tally {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut tally = Tally::new();
    let mut conns = Connections::authenticated(pace.timeout, credentials);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / pace.per_second.max(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut master = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) && pace.count.is_none_or(|c| n < c) {
        ticker.tick().await;
        let Some(addr) = master else {
            master = target.locate(&mut conns).await;
            continue;
        };
        let id = format!("{run_id}-{n}");
        n += 1;
        let conn = match conns.get(addr).await {
            Ok(conn) => conn,
            Err(e) => {
                // Refused or unreachable: the command never left, so it cannot land.
                tracing::debug!(%id, error = %e, "write rejected: no connection to the master");
                tally.rejected.push((id, Instant::now()));
                master = None;
                continue;
            }
        };
        let push = tokio::time::timeout(pace.timeout, redis::cmd("RPUSH").arg(&key).arg(&id).query_async::<i64>(conn)).await;
        let outcome = match &push {
            Ok(reply) => WriteOutcome::of(reply),
            Err(_) => WriteOutcome::Unknown,
        };
        let at = Instant::now();
        match outcome {
            WriteOutcome::Acknowledged => tally.acked.push((id, at)),
            WriteOutcome::Rejected | WriteOutcome::Unknown => {
                let error = match &push {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no reply within {} ms", pace.timeout.as_millis()),
                };
                tracing::debug!(%addr, %id, ?outcome, %error, "write failed");
                let bucket = if outcome == WriteOutcome::Rejected { &mut tally.rejected } else { &mut tally.unknown };
                bucket.push((id, at));
                conns.forget(addr);
                master = None;
            }
        }
    }
    tally.stopped = Instant::now();
    tally
}

/// The writable master among `nodes`: role master and not fenced by the dictator.
async fn discover(nodes: &[SocketAddr], conns: &mut Connections) -> Option<SocketAddr> {
    for addr in nodes {
        let Ok(conn) = conns.get(*addr).await else { continue };
        let role: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query_async(conn).await;
        let is_master = match &role {
            Ok(redis::Value::Array(v)) => matches!(v.first(), Some(redis::Value::BulkString(b)) if b == b"master"),
            Ok(_) => false,
            Err(_) => {
                conns.forget(*addr);
                continue;
            }
        };
        if !is_master {
            continue;
        }
        let fence: redis::RedisResult<Vec<String>> =
            redis::cmd("CONFIG").arg("GET").arg("min-replicas-to-write").query_async(conn).await;
        let fenced = fence
            .ok()
            .and_then(|v| v.get(1).and_then(|n| n.parse::<u32>().ok()))
            .is_some_and(|n| n >= topology::FENCE_MIN_REPLICAS);
        if !fenced {
            return Some(*addr);
        }
    }
    None
}

async fn connect(addr: SocketAddr, timeout: Duration, credentials: &Credentials) -> redis::RedisResult<MultiplexedConnection> {
    let client = credentials.client_for(addr)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(timeout));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// Reads the whole list back from wherever `target` says the master is now,
/// retrying for up to `patience` while the master cannot be reached.
/// Authenticates as `REDIS_TOPOLOGY_REDIS_USER`/`REDIS_TOPOLOGY_REDIS_PASSWORD` say, if set.
pub async fn read_list(target: &Destination, key: &str, patience: Duration) -> Result<Vec<String>, ReadBackError> {
    read_list_as(target, key, patience, &Credentials::from_env()).await
}

/// [`read_list`], authenticating with `credentials`.
pub async fn read_list_as(
    target: &Destination,
    key: &str,
    patience: Duration,
    credentials: &Credentials,
) -> Result<Vec<String>, ReadBackError> {
    let deadline = Instant::now() + patience;
    let mut conns = Connections::authenticated(Duration::from_secs(10), credentials.clone());
    let mut last_error = "no master found".to_string();
    while Instant::now() < deadline {
        match target.locate(&mut conns).await {
            None => last_error = "no master found".to_string(),
            Some(addr) => match conns.get(addr).await {
                Err(e) => last_error = e.to_string(),
                Ok(conn) => match redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async::<Vec<String>>(conn).await {
                    Ok(list) => return Ok(list),
                    Err(e) => {
                        last_error = format!("LRANGE on {addr}: {e}");
                        conns.forget(addr);
                    }
                },
            },
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(ReadBackError { patience, last_error })
}

/// The list could not be read back in time; `last_error` is the last attempt's.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the list back within {} ms: {last_error}", patience.as_millis())]
pub struct ReadBackError {
    pub patience: Duration,
    pub last_error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dead_writer_has_no_tally() {
        let writer = Writer { stop: Arc::new(AtomicBool::new(false)), task: tokio::spawn(async { panic!("the writer fails") }) };
        let died = writer.finish().await.expect_err("a panicked writer is an error, not an empty tally");
        assert!(died.to_string().contains("the writer died"), "{died}");
    }

    #[test]
    fn only_an_error_reply_is_a_rejection() {
        let reply = |r: Result<i64, redis::RedisError>| WriteOutcome::of(&r);
        assert_eq!(reply(Ok(1)), WriteOutcome::Acknowledged);
        let readonly = redis::RedisError::from((redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly), "READONLY"));
        assert_eq!(reply(Err(readonly)), WriteOutcome::Rejected);
        let dropped = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(reply(Err(dropped)), WriteOutcome::Unknown);
    }
}
