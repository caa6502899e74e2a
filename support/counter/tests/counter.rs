#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The real `counter` binary against a real redis-server: it must catch a lost
//! write and a phantom one, and must not call an unknown write that landed a failure.

use std::time::Duration;

use harness::redis::RedisOptions;
use harness::{Redis, Service};
use serde_json::Value;

const KEY: &str = "ids";

/// Starts the counter writing to `redis` until it is terminated, logging each
/// failed write (with its id and outcome) as JSON.
fn counter(redis: &Redis, extra: &[&str]) -> Service {
    let addr = redis.host_port();
    let mut args = vec!["--redis", &addr, "--key", KEY, "--duration-secs", "3600", "--json", "--log-format", "json"];
    args.extend_from_slice(extra);
    Service::start("counter", &args, &[("RUST_LOG", "counter=debug")])
}

/// Stops the counter as an operator would (SIGTERM) and returns its exit code
/// and the JSON tally it printed.
fn stop(mut counter: Service) -> (Option<i32>, Value) {
    let status = counter.process().terminate(Duration::from_secs(30)).expect("the counter exits on SIGTERM");
    let log = counter.log();
    let tally = json_lines(&log).find(|v| v["tally"].is_string()).unwrap_or_else(|| panic!("no tally printed:\n{log}"));
    (status.code(), tally)
}

fn json_lines(log: &str) -> impl Iterator<Item = Value> + '_ {
    log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok())
}

fn llen(redis: &Redis) -> i64 {
    redis.cmd(&["LLEN", KEY])
}

fn wait_len(redis: &Redis, len: i64) {
    harness::wait_until(&format!("{len} ids in the list"), Duration::from_secs(30), || llen(redis) >= len);
}

#[test]
fn a_healthy_run_is_lossless_and_exits_0() {
    let redis = Redis::start();
    let out = std::process::Command::new(harness::binary("counter"))
        .args(["--redis", &redis.host_port(), "--key", KEY, "--count", "200", "--json"])
        .output()
        .unwrap();
    let tally: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{tally} {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((tally["acked"].as_u64(), tally["missing"].as_u64(), tally["phantom"].as_u64()), (Some(200), Some(0), Some(0)));
    assert_eq!(tally["tally"], "ack'd: 200 (0 missing) err'd: 0 (0 phantom) unknown: 0 (0 landed)");
}

#[test]
fn a_removed_acknowledged_write_is_missing_and_fails() {
    let redis = Redis::start();
    let counter = counter(&redis, &[]);
    wait_len(&redis, 10);
    // The oldest id was acknowledged long ago; losing it is what a bad failover does.
    let first: String = redis.cmd(&["LINDEX", KEY, "0"]);
    assert_eq!(redis.cmd::<i64>(&["LREM", KEY, "1", &first]), 1);
    let len = llen(&redis);
    wait_len(&redis, len + 10);
    let (code, tally) = stop(counter);
    assert_eq!((tally["missing"].as_u64(), tally["phantom"].as_u64()), (Some(1), Some(0)), "{tally}");
    assert_eq!(code, Some(1), "{tally}");
}

#[test]
fn a_rejected_write_that_landed_is_a_phantom_and_fails() {
    // Fenced as the dictator fences a demoted master: every write gets NOREPLICAS.
    let redis = Redis::with_options(RedisOptions { args: vec!["--min-replicas-to-write".into(), "1".into()], ..Default::default() });
    let mut counter = counter(&redis, &[]);
    let mut rejected = None;
    harness::wait_until("a rejected write in the counter's log", Duration::from_secs(30), || {
        rejected = json_lines(&counter.log()).find(|l| l["outcome"] == "Rejected").and_then(|l| l["id"].as_str().map(String::from));
        rejected.is_some()
    });
    let rejected = rejected.unwrap();
    assert!(counter.process().is_running());
    // The fence lifts and the refused id turns up anyway, as if a stale master's
    // write had been merged back.
    redis.cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    redis.cmd::<i64>(&["RPUSH", KEY, &rejected]);
    wait_len(&redis, 20);
    let (code, tally) = stop(counter);
    assert_eq!((tally["missing"].as_u64(), tally["phantom"].as_u64()), (Some(0), Some(1)), "{tally}");
    assert!(tally["acked"].as_u64() > Some(0), "{tally}");
    assert_eq!(code, Some(1), "{tally}");
}

#[test]
fn an_unknown_write_that_landed_is_counted_and_passes() {
    let redis = Redis::start();
    let mut counter = counter(&redis, &["--timeout-ms", "200"]);
    wait_len(&redis, 10);
    // A hung master: the write in flight is buffered by the kernel and times out.
    redis.freeze(true);
    harness::wait_until("a write with an unknown outcome", Duration::from_secs(30), || {
        json_lines(&counter.log()).any(|l| l["outcome"] == "Unknown")
    });
    // Thawed, redis applies the buffered write the client gave up on.
    redis.freeze(false);
    let len = llen(&redis);
    wait_len(&redis, len + 10);
    assert!(counter.process().is_running());
    let (code, tally) = stop(counter);
    assert_eq!((tally["missing"].as_u64(), tally["phantom"].as_u64()), (Some(0), Some(0)), "{tally}");
    assert!(tally["unknown"].as_u64() >= Some(1) && tally["landed"].as_u64() >= Some(1), "{tally}");
    assert_eq!(code, Some(0), "{tally}");
}

#[test]
fn nothing_acknowledged_fails() {
    let redis = Redis::with_options(RedisOptions { args: vec!["--min-replicas-to-write".into(), "1".into()], ..Default::default() });
    let out = std::process::Command::new(harness::binary("counter"))
        .args(["--redis", &redis.host_port(), "--key", KEY, "--count", "5", "--json"])
        .output()
        .unwrap();
    let tally: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((tally["acked"].as_u64(), tally["rejected"].as_u64()), (Some(0), Some(5)), "{tally}");
    assert_eq!(out.status.code(), Some(1), "{tally}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no write was acknowledged"));
}
