//! A load generator for lossless checks: pushes unique ids to a list at a steady
//! rate, always to whichever instance is the writable master (it asks each node
//! for its `ROLE` after an error, like a client that follows failovers), and keeps
//! a tally of what was acknowledged and what errored.
//!
//! [`Tally::check`] compares the tally with the list read back at the end:
//! *missing* ids were acknowledged but are gone (lost writes); *phantom* ids errored
//! but were applied anyway. A lossless topology change has neither.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

/// What the writer saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Acknowledged ids with the instant of their acknowledgement, in order.
    pub acked: Vec<(String, Instant)>,
    pub errored: Vec<String>,
}

/// The verdict of [`Tally::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub acked: usize,
    pub missing: usize,
    pub errored: usize,
    pub phantom: usize,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ack'd: {} ({} missing) err'd: {} ({} phantom)", self.acked, self.missing, self.errored, self.phantom)
    }
}

impl Tally {
    /// Compares with the list as read back from the final master.
    pub fn check(&self, list: &[String]) -> Verdict {
        let present: HashSet<&str> = list.iter().map(String::as_str).collect();
        Verdict {
            acked: self.acked.len(),
            missing: self.acked.iter().filter(|(id, _)| !present.contains(id.as_str())).count(),
            errored: self.errored.len(),
            phantom: self.errored.iter().filter(|id| present.contains(id.as_str())).count(),
        }
    }

    /// The longest time without an acknowledgement around `[from, to]`: the
    /// write-unavailable window a client saw during a change made in that span.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.acked
            .windows(2)
            .map(|w| (w[0].1, w[1].1))
            .filter(|(a, b)| *b >= from && *a <= to)
            .map(|(a, b)| b - a)
            .max()
            .unwrap_or_default()
    }
}

/// A running writer; [`Writer::stop`] ends it and returns the tally.
pub struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Tally>,
}

impl Writer {
    /// Starts pushing ids to `key` at about `per_second`, on the master among `nodes`.
    pub fn start(nodes: Vec<SocketAddr>, key: &str, per_second: u32) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(run(nodes, key.to_string(), per_second.max(1), stop.clone()));
        Writer { stop, task }
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer task panicked")
    }
}

async fn run(nodes: Vec<SocketAddr>, key: String, per_second: u32, stop: Arc<AtomicBool>) -> Tally {
    let prefix = format!("{}-{:?}", std::process::id(), Instant::now()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let mut tally = Tally::default();
    let mut conns: HashMap<SocketAddr, MultiplexedConnection> = HashMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / per_second);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut master = None;
    let mut n: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        ticker.tick().await;
        let Some(addr) = master else {
            master = find_master(&nodes, &mut conns).await;
            continue;
        };
        let Some(conn) = conns.get_mut(&addr) else {
            master = None;
            continue;
        };
        let id = format!("{prefix}-{n}");
        n += 1;
        let push: redis::RedisResult<i64> = redis::cmd("RPUSH").arg(&key).arg(&id).query_async(conn).await;
        match push {
            Ok(_) => tally.acked.push((id, Instant::now())),
            Err(_) => {
                tally.errored.push(id);
                master = None;
            }
        }
    }
    tally
}

/// The writable master among `nodes`: role master and not fenced. None while
/// there is none (mid-switchover).
async fn find_master(nodes: &[SocketAddr], conns: &mut HashMap<SocketAddr, MultiplexedConnection>) -> Option<SocketAddr> {
    for addr in nodes {
        if !conns.contains_key(addr) {
            if let Ok(conn) = connect(*addr).await {
                conns.insert(*addr, conn);
            }
        }
        let Some(conn) = conns.get_mut(addr) else { continue };
        let role: redis::RedisResult<redis::Value> = redis::cmd("ROLE").query_async(conn).await;
        let is_master = matches!(&role, Ok(redis::Value::Array(v)) if matches!(v.first(), Some(redis::Value::BulkString(b)) if b == b"master"));
        if role.is_err() {
            conns.remove(addr);
            continue;
        }
        if !is_master {
            continue;
        }
        let fence: redis::RedisResult<Vec<String>> =
            redis::cmd("CONFIG").arg("GET").arg("min-replicas-to-write").query_async(conn).await;
        let fenced = fence.ok().and_then(|v| v.get(1).and_then(|n| n.parse::<u64>().ok())).is_some_and(|n| n >= 1_000_000);
        if !fenced {
            return Some(*addr);
        }
    }
    None
}

/// An async connection with short timeouts.
pub async fn connect(addr: SocketAddr) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    client.get_multiplexed_async_connection_with_config(&config).await
}

/// Reads the whole list `key` from `addr`.
pub async fn read_list(addr: SocketAddr, key: &str) -> Vec<String> {
    let mut conn = connect(addr).await.expect("connect to read the list back");
    redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query_async(&mut conn).await.expect("LRANGE")
}

/// Median and maximum of durations, in ms.
pub fn median_max_ms(values: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = if ms.is_empty() {
        0.0
    } else if ms.len() % 2 == 1 {
        ms[ms.len() / 2]
    } else {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
    };
    (median, ms.last().copied().unwrap_or(0.0))
}
