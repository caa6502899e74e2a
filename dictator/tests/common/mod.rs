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
    Dictator::new(MemberResolver::new(Some(harness::silent_nameserver())).unwrap(), settings)
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
