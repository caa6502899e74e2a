#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Shared set-up for the dictator's tests against real redis-server.
#![allow(dead_code)]

use std::time::Duration;

use dictator::execute::{ExecSettings, WriteSettings};
use service::redis_auth::Timeouts;
use dictator::{ApplyOptions, Dictator, Report, Settings};
use harness::Redis;
use service::resolve::MemberResolver;
use topology::{Member, Topology};

pub fn settings() -> Settings {
    Settings {
        credentials: Default::default(),
        timeouts: Timeouts::default(),
        exec: ExecSettings {
            writes: WriteSettings { min_replicas_to_write: 0, min_replicas_max_lag: 10 },
            catch_up_timeout: Duration::from_secs(5),
            verify_timeout: Duration::from_secs(10),
        },
        lock_wait: Duration::from_secs(10),
    }
}

/// A dictator whose resolver points at a nameserver that never answers: tests use
/// IP literals, and must never query the machine's own resolver.
pub fn dictator_with(settings: Settings) -> Dictator {
    Dictator::new(MemberResolver::new(&[harness::silent_nameserver()]).unwrap(), settings)
}

pub fn dictator() -> Dictator {
    dictator_with(settings())
}

pub fn member(r: &Redis) -> Member {
    Member::parse_host_port(&r.host_port()).unwrap()
}

pub fn topology(master: &Redis, slaves: &[&Redis]) -> Topology {
    Topology::new(member(master), slaves.iter().map(|s| member(s)).collect()).unwrap()
}

pub async fn apply(d: &Dictator, master: &Redis, slaves: &[&Redis]) -> Report {
    d.apply("test", &topology(master, slaves), ApplyOptions::default())
        .await
        .unwrap_or_else(|e| panic!("apply failed: {e}: {:?}", e.report()))
}

/// Asserts `slave` follows `master` with a live link.
pub fn assert_follows(slave: &Redis, master: &Redis) {
    assert_eq!(slave.role(), "slave", "{} should be a slave", slave.port());
    assert_eq!(slave.info_field("master_port").unwrap(), master.port().to_string());
    assert_eq!(slave.info_field("master_link_status").unwrap(), "up");
}

pub fn assert_writable(r: &Redis) {
    r.cmd::<()>(&["SET", "writable-check", "1"]);
}

pub fn actions(report: &Report) -> Vec<String> {
    report.outcome.steps.iter().map(|s| s.step.to_string()).collect()
}

/// Asserts `r` refuses writes with the fence's NOREPLICAS.
pub fn assert_refuses_writes(r: &Redis) {
    let result: redis::RedisResult<()> = redis::cmd("SET").arg("refused-check").arg("1").query(&mut r.conn());
    let error = result.expect_err("a fenced master took a write").to_string();
    assert!(error.contains("NOREPLICAS"), "{error}");
}

/// Writes `count` keys `<prefix>:<i>`; each SET answered OK is acknowledged.
pub fn write_keys(r: &Redis, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}:{i}")).collect();
    for key in &keys {
        r.cmd::<()>(&["SET", key, "acked"]);
    }
    keys
}

pub fn assert_has_keys(r: &Redis, keys: &[String]) {
    let missing: Vec<&String> = keys.iter().filter(|k| r.cmd::<Option<String>>(&["GET", k]).is_none()).collect();
    assert!(missing.is_empty(), "{} lost acknowledged writes: {missing:?}", r.host_port());
}

/// Waits until `slave` has applied all `master` has, over a live link.
pub fn wait_in_step(slave: &Redis, master: &Redis) {
    harness::wait_until(&format!("{} to hold all {} has", slave.port(), master.port()), Duration::from_secs(20), || {
        slave.info_field("master_link_status").as_deref() == Some("up")
            && slave.info_field("slave_repl_offset") == master.info_field("master_repl_offset")
    });
}
