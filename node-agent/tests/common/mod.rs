//! Shared set-up for the node-agent tests: real etcd, real redis-server and the
//! real `node-agent` binary (`cargo build -p node-agent --bins` first).
#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::Client;
use harness::{free_port, Etcd, Redis, Service};
use serde_json::Value;
use topology::records::NodeRecord;
use topology::Keys;

pub const CLUSTER: &str = "redis-1";
pub const NODE: &str = "node-1";

/// A running agent and where to find what it writes.
pub struct Agent {
    pub service: Service,
    pub http_port: u16,
    pub keys: Keys,
    pub node: String,
}

impl Agent {
    pub fn node_key(&self) -> String {
        self.keys.node(CLUSTER, &self.node)
    }

    pub fn trigger_key(&self) -> String {
        self.keys.trigger(CLUSTER)
    }

    /// `GET /status` as JSON.
    pub fn status(&self) -> Value {
        let body = harness::etcd::http_get(self.http_port, "/status").expect("GET /status answers");
        serde_json::from_str(&body).unwrap_or_else(|_| panic!("/status is not JSON: {body}"))
    }
}

/// A fresh key prefix, so a failing test's leftovers cannot confuse another.
pub fn prefix() -> String {
    format!("/t{}", free_port())
}

/// Starts `node-agent` for `redis` with `--interval 100` (unless `extra` sets it)
/// and waits for its HTTP API.
pub fn start_agent(etcd: &Etcd, redis: &Redis, extra: &[&str]) -> Agent {
    start_agent_named(etcd, &redis.host_port(), NODE, &prefix(), extra, &[])
}

pub fn start_agent_named(etcd: &Etcd, redis: &str, node: &str, prefix: &str, extra: &[&str], env: &[(&str, &str)]) -> Agent {
    let http_port = free_port();
    let listen = format!("127.0.0.1:{http_port}");
    let endpoint = etcd.endpoint();
    let mut args = vec![
        "--cluster", CLUSTER, "--node", node, "--redis", redis, "--etcd-endpoints", &endpoint,
        "--etcd-prefix", prefix, "--listen", &listen,
    ];
    if !extra.iter().any(|a| a.starts_with("--interval")) {
        args.extend_from_slice(&["--interval", "100"]);
    }
    args.extend_from_slice(extra);
    let mut service = Service::start("node-agent", &args, env);
    service.wait_http(http_port);
    Agent { service, http_port, keys: Keys::new(prefix), node: node.to_string() }
}

/// A registration as stored: the record and the lease it lives under.
#[derive(Debug, Clone)]
pub struct Stored {
    pub record: NodeRecord,
    pub lease: i64,
    pub mod_revision: i64,
}

pub async fn registration(client: &mut Client, key: &str) -> Option<Stored> {
    let resp = client.get(key, None).await.expect("etcd get");
    let kv = resp.kvs().first()?;
    let record = serde_json::from_slice(kv.value())
        .unwrap_or_else(|e| panic!("{key} holds no NodeRecord ({e}): {:?}", kv.value_str()));
    Some(Stored { record, lease: kv.lease(), mod_revision: kv.mod_revision() })
}

/// The trigger's value and mod_revision.
pub async fn trigger(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let resp = client.get(key, None).await.expect("etcd get");
    let kv = resp.kvs().first()?;
    Some((kv.value_str().expect("utf-8 trigger").to_string(), kv.mod_revision()))
}

/// Polls etcd until the trigger at `key` exists: an agent writes its first-contact
/// trigger just after its first registration, so a test that saw the one may be
/// ahead of the other.
pub async fn wait_trigger(client: &mut Client, key: &str, timeout: Duration) -> (String, i64) {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = trigger(client, key).await {
            return found;
        }
        assert!(Instant::now() < deadline, "no trigger at {key} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls etcd until `key`'s registration satisfies `ready`; returns it and how long it took.
pub async fn wait_registration(
    client: &mut Client,
    key: &str,
    what: &str,
    timeout: Duration,
    ready: impl Fn(&Stored) -> bool,
) -> (Stored, Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(stored) = registration(client, key).await.filter(|s| ready(s)) {
            return (stored, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}; last: {:?}", registration(client, key).await);
}

/// Waits until the agent has rewritten its registration `count` times after
/// `since`: proof that it kept ticking, and that every etcd round it started
/// before `since` was written (the agent writes one round at a time).
/// Lets `ticks` probe intervals (the default 250 ms) pass and asserts the
/// registration was not rewritten meanwhile: an agent writes only when something
/// readers act on changes.
pub async fn assert_quiet(client: &mut Client, key: &str, since: &Stored, ticks: u32) {
    tokio::time::sleep(Duration::from_millis(250) * ticks).await;
    let now = registration(client, key).await.expect("still registered");
    assert_eq!(now.mod_revision, since.mod_revision, "{ticks} ordinary ticks rewrote the registration: {:?}", now.record);
}

/// Polls until `key` is absent; returns how long it took.
pub async fn wait_absent(client: &mut Client, key: &str, what: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if client.get(key, None).await.expect("etcd get").kvs().is_empty() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Polls until the trigger exists and differs from `old`.
pub async fn wait_new_trigger(client: &mut Client, key: &str, old: Option<&str>, timeout: Duration) -> (String, i64) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some((value, rev)) = trigger(client, key).await.filter(|(v, _)| Some(v.as_str()) != old) {
            return (value, rev);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for a new trigger at {key} (old: {old:?})");
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

/// `run_id` from `INFO server`.
pub fn run_id(redis: &Redis) -> String {
    let info: String = redis.cmd(&["INFO", "server"]);
    info.lines().find_map(|l| l.strip_prefix("run_id:")).expect("INFO server has run_id").trim().to_string()
}

pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
}
