#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Every role transition, against real redis-server instances.

mod common;

use std::time::Duration;

use common::*;
use dictator::api::status;
use dictator::{ApplyOptions, Settings};
use harness::redis::RedisOptions;
use harness::{Persistence, Redis};
use topology::Topology;

#[tokio::test]
async fn fresh_instances_become_one_group_and_a_second_apply_changes_nothing() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    a.cmd::<()>(&["SET", "k", "v"]);
    let d = dictator();
    let report = apply(&d, &a, &[&b, &c]).await;
    assert!(report.changed);
    assert!(report.outcome.lagging.is_empty(), "{report:?}");
    assert_follows(&b, &a);
    assert_follows(&c, &a);
    assert_eq!(b.cmd::<Option<String>>(&["GET", "k"]).as_deref(), Some("v"));
    assert_writable(&a);

    // The verification marker is gone: only the user's key remains.
    assert!(a.cmd::<Vec<String>>(&["KEYS", "redis-topology:*"]).is_empty());

    let again = apply(&d, &a, &[&b, &c]).await;
    assert!(!again.changed, "{:?}", actions(&again));
    assert!(again.outcome.steps.is_empty());
}

#[tokio::test]
async fn rotating_the_master_keeps_every_write() {
    let nodes = [Redis::start(), Redis::start(), Redis::start()];
    let d = dictator();
    apply(&d, &nodes[0], &[&nodes[1], &nodes[2]]).await;
    for round in 0..6 {
        let m = &nodes[round % 3];
        let s1 = &nodes[(round + 1) % 3];
        let s2 = &nodes[(round + 2) % 3];
        let report = apply(&d, m, &[s1, s2]).await;
        if round > 0 {
            assert!(actions(&report).iter().any(|a| a.starts_with("catch_up")), "{:?}", actions(&report));
        }
        assert_eq!(m.role(), "master");
        assert_follows(s1, m);
        assert_follows(s2, m);
        m.cmd::<()>(&["RPUSH", "rounds", &round.to_string()]);
    }
    let last = &nodes[5 % 3];
    assert_eq!(last.cmd::<Vec<String>>(&["LRANGE", "rounds", "0", "-1"]), ["0", "1", "2", "3", "4", "5"]);
}

#[tokio::test]
async fn a_master_of_its_own_data_is_refused_fenced_then_forced() {
    let (a, b) = (Redis::start(), Redis::start());
    a.cmd::<()>(&["SET", "a-key", "1"]);
    b.cmd::<()>(&["SET", "b-key", "1"]);
    let d = dictator();
    let err = d.apply("test", &topology(&a, &[&b]), ApplyOptions::default()).await.unwrap_err();
    assert_eq!(status(&err).as_u16(), 409, "{err}");
    assert!(err.to_string().contains(&b.host_port()), "{err}");
    // b keeps its data and its role, and takes no more writes that would be lost with it.
    let report = err.report().expect("a report of the fence");
    assert_eq!(actions(report), [format!("quarantine {}", b.host_port())]);
    assert_eq!(b.role(), "master");
    assert_eq!(b.cmd::<Option<String>>(&["GET", "b-key"]).as_deref(), Some("1"));
    assert_refuses_writes(&b);

    let forced = d
        .apply("test", &topology(&a, &[&b]), ApplyOptions { force: true, ..ApplyOptions::default() })
        .await
        .unwrap();
    assert_eq!(forced.forced.len(), 1);
    assert_follows(&b, &a);
    assert_eq!(b.cmd::<Option<String>>(&["GET", "a-key"]).as_deref(), Some("1"));
}

/// kill -9 after `SAVE`: the RDB file holds the data and the replication history.
fn crash_after_saving(r: &mut Redis) {
    r.cmd::<()>(&["SAVE"]);
    r.kill();
}

fn rdb() -> Redis {
    // No config file, as the fleet unit ran it: a restart always comes back a master.
    Redis::with_options(RedisOptions { persistence: Persistence::Rdb, ..Default::default() })
}

#[tokio::test]
async fn a_slave_restarted_from_its_rdb_rejoins_as_a_slave() {
    let (a, mut b) = (rdb(), rdb());
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    let before = write_keys(&a, "before", 20);
    wait_in_step(&b, &a);
    crash_after_saving(&mut b);
    b.restart();
    // Back as a master with its old history as replid2, while a goes on.
    assert_eq!(b.role(), "master");
    assert_ne!(b.info_field("master_replid2").unwrap(), "0".repeat(40));
    let after = write_keys(&a, "after", 20);

    let report = apply(&d, &a, &[&b]).await;
    assert!(report.changed, "{report:?}");
    assert_follows(&b, &a);
    assert_has_keys(&b, &[before, after].concat());
}

#[tokio::test]
async fn the_old_master_restarted_from_its_rdb_rejoins_as_a_slave() {
    let (mut a, b, c) = (rdb(), rdb(), rdb());
    let d = dictator();
    apply(&d, &a, &[&b, &c]).await;
    let before = write_keys(&a, "before", 20);
    wait_in_step(&b, &a);
    wait_in_step(&c, &a);
    crash_after_saving(&mut a);
    // The failover: b promoted while a is down.
    let report = apply(&d, &b, &[&a, &c]).await;
    assert_eq!(report.unreachable, [a.addr()]);
    let after = write_keys(&b, "after", 20);
    a.restart();
    assert_eq!(a.role(), "master");

    let report = apply(&d, &b, &[&a, &c]).await;
    assert!(report.changed, "{report:?}");
    assert_follows(&a, &b);
    assert_has_keys(&a, &[before, after].concat());
}

#[tokio::test]
async fn a_slave_restarted_from_its_aof_keeps_its_role_through_the_config_file() {
    let (a, mut b) = (Redis::start_with(Persistence::Aof), Redis::start_with(Persistence::Aof));
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    let before = write_keys(&a, "before", 20);
    wait_in_step(&b, &a);
    b.restart();
    // CONFIG REWRITE kept `replicaof`: it comes back a slave, so there is no
    // history to compare (an AOF keeps none) and nothing to refuse.
    assert_eq!(b.role(), "slave");
    let after = write_keys(&a, "after", 20);
    apply(&d, &a, &[&b]).await;
    // It resyncs on its own after the restart: wait for the link, not a moment.
    wait_in_step(&b, &a);
    assert_follows(&b, &a);
    assert_has_keys(&b, &[before, after].concat());
}

#[tokio::test]
async fn the_old_master_restarted_from_its_aof_is_refused_and_fenced_until_forced() {
    let (mut a, b) = (Redis::start_with(Persistence::Aof), Redis::start_with(Persistence::Aof));
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    let before = write_keys(&a, "before", 20);
    wait_in_step(&b, &a);
    a.kill();
    apply(&d, &b, &[&a]).await;
    let after = write_keys(&b, "after", 20);
    a.restart();

    // An AOF keeps keys but no replication history: nothing shows that b holds
    // a's keys, so a is refused, keeps them, and takes no writes.
    let err = d.apply("test", &topology(&b, &[&a]), ApplyOptions::default()).await.unwrap_err();
    assert_eq!(status(&err).as_u16(), 409, "{err}");
    assert!(err.to_string().contains("no replication history"), "{err}");
    assert_eq!(a.role(), "master");
    assert_has_keys(&a, &before);
    assert_refuses_writes(&a);

    let forced = d.apply("test", &topology(&b, &[&a]), ApplyOptions { force: true, ..ApplyOptions::default() }).await.unwrap();
    assert_eq!(forced.forced.len(), 1, "{forced:?}");
    assert_follows(&a, &b);
    wait_in_step(&a, &b);
    assert_has_keys(&a, &[before, after].concat());
}

#[tokio::test]
async fn an_apply_stopped_after_the_promotion_finishes_though_the_old_master_pinged_since() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let d = dictator();
    apply(&d, &a, &[&b, &c]).await;
    let acked = write_keys(&a, "acked", 20);
    wait_in_step(&b, &a);
    wait_in_step(&c, &a);
    // Re-pointing a and c fails: the apply stops after promoting b, with a fenced
    // and c still attached to it.
    for r in [&a, &c] {
        r.cmd::<()>(&["ACL", "SETUSER", "default", "-replicaof"]);
    }
    let report = apply(&d, &b, &[&a, &c]).await;
    assert!(report.outcome.promoted, "{report:?}");
    let failed: Vec<_> = report.outcome.failed.iter().map(|f| f.node).collect();
    assert_eq!(failed, [a.addr(), c.addr()], "{report:?}");
    assert_eq!(b.role(), "master");
    assert_refuses_writes(&a);

    // a's pings to c move its offset past b's promotion point.
    a.cmd::<()>(&["CONFIG", "SET", "repl-ping-replica-period", "1"]);
    let promoted_at: u64 = b.info_field("second_repl_offset").unwrap().parse().unwrap();
    harness::wait_until("a to ping past b's promotion", Duration::from_secs(20), || {
        a.info_field("master_repl_offset").is_some_and(|o| o.parse::<u64>().unwrap() > promoted_at)
    });

    for r in [&a, &c] {
        r.cmd::<()>(&["ACL", "SETUSER", "default", "+replicaof"]);
    }
    let report = apply(&d, &b, &[&a, &c]).await;
    assert!(report.outcome.failed.is_empty(), "{report:?}");
    assert_follows(&a, &b);
    assert_follows(&c, &b);
    assert_has_keys(&a, &acked);
    assert_has_keys(&c, &acked);
    assert_writable(&b);
}

#[tokio::test]
async fn every_slave_is_made_read_only() {
    let no = || Redis::with_options(RedisOptions { args: vec!["--replica-read-only".into(), "no".into()], ..Default::default() });
    let (a, b, c) = (Redis::start(), no(), no());
    // c already follows a: only its setting is wrong.
    c.cmd::<()>(&["REPLICAOF", "127.0.0.1", &a.port().to_string()]);
    wait_in_step(&c, &a);
    let d = dictator();
    apply(&d, &a, &[&b, &c]).await;
    for r in [&b, &c] {
        assert_eq!(r.cmd::<Vec<String>>(&["CONFIG", "GET", "replica-read-only"])[1], "yes");
        let refused: redis::RedisResult<()> = redis::cmd("SET").arg("x").arg("1").query(&mut r.conn());
        let error = refused.expect_err("a slave took a write").to_string();
        assert!(error.contains("read only replica"), "{}: {error}", r.port());
    }
}

#[tokio::test]
async fn dry_run_plans_reports_lag_and_changes_nothing() {
    let (a, b) = (Redis::start(), Redis::start());
    a.cmd::<()>(&["SET", "k", "v"]);
    b.cmd::<()>(&["SET", "other", "v"]);
    let d = dictator();
    let report = d
        .apply("test", &topology(&a, &[&b]), ApplyOptions { dry_run: true, ..ApplyOptions::default() })
        .await
        .unwrap();
    assert!(report.dry_run && report.changed);
    assert!(report.refusal.as_deref().unwrap_or("").contains("would lose"), "{report:?}");
    assert_eq!(report.members.len(), 2);
    assert!(report.outcome.steps.iter().all(|s| s.ms.is_none()));
    assert_eq!(b.role(), "master");
    assert_writable(&b);
}

#[tokio::test]
async fn a_previously_fenced_instance_accepts_writes_again() {
    let (a, b) = (Redis::start(), Redis::start());
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    // An apply that died after fencing a: writes are refused.
    a.cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", "1000000"]);
    let refused: redis::RedisResult<()> = redis::cmd("SET").arg("x").arg("1").query(&mut a.conn());
    assert!(refused.is_err());
    let report = apply(&d, &a, &[&b]).await;
    assert_eq!(actions(&report)[0], format!("allow_writes {}", a.host_port()));
    assert_writable(&a);
    assert_eq!(a.cmd::<Vec<String>>(&["CONFIG", "GET", "min-replicas-to-write"])[1], "0");
}

#[tokio::test]
async fn finishing_an_apply_that_stopped_after_the_promotion() {
    let (a, b) = (Redis::start(), Redis::start());
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    a.cmd::<()>(&["SET", "before", "1"]);
    harness::wait_until("b to catch up", Duration::from_secs(5), || {
        b.cmd::<Option<String>>(&["GET", "before"]).is_some()
    });
    // By hand: fence a, promote b, then "crash" before re-pointing a.
    a.cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", "1000000"]);
    b.cmd::<()>(&["REPLICAOF", "NO", "ONE"]);
    b.cmd::<()>(&["SET", "after", "1"]);
    let report = apply(&d, &b, &[&a]).await;
    assert!(report.changed);
    assert_follows(&a, &b);
    assert_eq!(a.cmd::<Option<String>>(&["GET", "after"]).as_deref(), Some("1"));
    assert_eq!(a.cmd::<Option<String>>(&["GET", "before"]).as_deref(), Some("1"));
    assert_writable(&b);
}

#[tokio::test]
async fn unreachable_master_is_502_and_nothing_changes() {
    let (mut a, b) = (Redis::start(), Redis::start());
    a.kill();
    let d = dictator();
    let err = d.apply("test", &topology(&a, &[&b]), ApplyOptions::default()).await.unwrap_err();
    assert_eq!(status(&err).as_u16(), 502, "{err}");
    assert!(err.to_string().contains(&a.host_port()));
    assert_eq!(b.role(), "master");
    assert_writable(&b);
}

#[tokio::test]
async fn unreachable_slaves_are_skipped_and_reported() {
    let (a, b, mut c) = (Redis::start(), Redis::start(), Redis::start());
    c.kill();
    let d = dictator();
    let report = apply(&d, &a, &[&b, &c]).await;
    assert_eq!(report.unreachable, [c.addr()]);
    assert_follows(&b, &a);
    // When it comes back (empty), the next apply brings it in.
    c.restart_empty();
    let report = apply(&d, &a, &[&b, &c]).await;
    assert!(report.unreachable.is_empty());
    assert_follows(&c, &a);
}

#[tokio::test]
async fn a_slow_catch_up_aborts_with_504_and_unfences_the_old_master() {
    let (a, b) = (Redis::start(), Redis::start());
    // b replicates a as user "repl"; cutting that user off stalls b's link while
    // b keeps a's history, so b can never catch up.
    a.cmd::<()>(&["ACL", "SETUSER", "repl", "on", ">pw", "+@all", "~*"]);
    b.cmd::<()>(&["CONFIG", "SET", "masteruser", "repl"]);
    b.cmd::<()>(&["CONFIG", "SET", "masterauth", "pw"]);
    let d = dictator_with(Settings {
        exec: dictator::execute::ExecSettings { catch_up_timeout: Duration::from_millis(300), ..settings().exec },
        ..settings()
    });
    apply(&d, &a, &[&b]).await;
    a.cmd::<()>(&["ACL", "SETUSER", "repl", "off"]);
    a.cmd::<i64>(&["CLIENT", "KILL", "USER", "repl"]);
    a.cmd::<()>(&["SET", "unreplicated", "1"]);

    let err = d.apply("test", &topology(&b, &[&a]), ApplyOptions::default()).await.unwrap_err();
    assert_eq!(status(&err).as_u16(), 504, "{err}");
    let report = err.report().expect("a report of what was done");
    assert_eq!(report.outcome.undone.len(), 1, "{report:?}");
    assert!(report.outcome.not_done.iter().any(|s| matches!(s, dictator::plan::Step::Promote { .. })));
    // Every role as it was, and the old master takes writes again.
    assert_eq!(a.role(), "master");
    assert_eq!(b.role(), "slave");
    assert_writable(&a);
    assert_eq!(a.cmd::<Vec<String>>(&["CONFIG", "GET", "min-replicas-to-write"])[1], "0");
}

#[tokio::test]
async fn roles_are_persisted_where_redis_has_a_config_file() {
    let opts = RedisOptions { config: Some("# test config\n".into()), ..Default::default() };
    let (a, b) = (Redis::with_options(opts.clone()), Redis::with_options(opts));
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    let written = std::fs::read_to_string(b.config_path().unwrap()).unwrap();
    assert!(written.contains(&format!("replicaof 127.0.0.1 {}", a.port())), "{written}");
}

#[tokio::test]
async fn concurrent_applies_to_one_cluster_are_serialized() {
    let (a, b) = (Redis::start(), Redis::start());
    let d = std::sync::Arc::new(dictator());
    let t = topology(&a, &[&b]);
    let (r1, r2) = tokio::join!(
        d.apply("test", &t, ApplyOptions::default()),
        d.apply("test", &t, ApplyOptions::default())
    );
    // Serialized: one did the work, the other found it done.
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert!(r1.changed ^ r2.changed, "exactly one changes: {} {}", r1.changed, r2.changed);
}

#[tokio::test]
async fn authenticates_to_password_protected_instances() {
    let (a, b) = (Redis::start(), Redis::start());
    for r in [&a, &b] {
        r.cmd::<()>(&["CONFIG", "SET", "masterauth", "s3cret"]);
        r.cmd::<()>(&["CONFIG", "SET", "requirepass", "s3cret"]);
    }
    let role = |r: &Redis| -> String {
        let client = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", r.port())).unwrap();
        let info: String = redis::cmd("INFO").arg("replication").query(&mut client.get_connection().unwrap()).unwrap();
        info.lines().find_map(|l| l.strip_prefix("role:")).unwrap().trim().to_string()
    };
    let without = dictator().apply("test", &topology(&a, &[&b]), ApplyOptions::default()).await.unwrap_err();
    assert_eq!(status(&without).as_u16(), 502, "{without}");
    let error = without.to_string();
    assert!(error.contains("NOAUTH") || error.contains("Authentication"), "{error}");
    assert_eq!(role(&b), "master", "nothing changed");

    let with = dictator_with(Settings {
        credentials: service::redis_auth::Credentials::new(None, Some("s3cret".into())),
        ..settings()
    });
    let report = with.apply("test", &topology(&a, &[&b]), ApplyOptions::default()).await.unwrap();
    assert!(report.changed && report.outcome.lagging.is_empty(), "{report:?}");
    assert_eq!(role(&b), "slave");
}

#[tokio::test]
async fn a_member_said_down_that_answers_is_observed_and_demoted_as_usual() {
    // The observer says a is down (its failover found it so), but a answers: the
    // short connect timeout must not turn a live master into a skipped one.
    let (a, b) = (Redis::start(), Redis::start());
    let d = dictator();
    apply(&d, &a, &[&b]).await;
    let before = write_keys(&a, "before", 20);
    wait_in_step(&b, &a);
    let down = Some(a.host_port().parse().unwrap());
    let report = d.apply("test", &topology(&b, &[&a]), ApplyOptions { down, ..ApplyOptions::default() }).await.unwrap();
    assert!(report.unreachable.is_empty(), "{report:?}");
    assert_eq!(actions(&report)[0], format!("fence {}", a.host_port()));
    assert_follows(&a, &b);
    assert_has_keys(&b, &before);
}

fn config(r: &Redis, name: &str) -> String {
    r.cmd::<Vec<String>>(&["CONFIG", "GET", name]).pop().unwrap()
}

fn durable(t: Topology, min_replicas_to_write: u32, min_replicas_max_lag: u32) -> Topology {
    t.with_durability(Some(topology::Durability { min_replicas_to_write, min_replicas_max_lag })).unwrap()
}

#[tokio::test]
async fn the_groups_durability_is_set_on_every_member_and_kept_through_a_switchover() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let d = dictator();
    apply(&d, &a, &[&b, &c]).await;

    // The setting alone changes: each member gets it, nothing else moves.
    let report = d.apply("test", &durable(topology(&a, &[&b, &c]), 1, 2), ApplyOptions::default()).await.unwrap();
    let steps = actions(&report);
    assert!(steps.iter().all(|s| s.starts_with("durability") || s.starts_with("allow_writes") || s.starts_with("verify")), "{steps:?}");
    assert_eq!(steps.iter().filter(|s| s.starts_with("allow_writes")).count(), 1, "{steps:?}");
    assert_eq!(steps.iter().filter(|s| s.starts_with("durability")).count(), 2, "{steps:?}");
    for r in [&a, &b, &c] {
        assert_eq!((config(r, "min-replicas-to-write"), config(r, "min-replicas-max-lag")), ("1".into(), "2".into()));
    }
    assert_writable(&a);
    let again = d.apply("test", &durable(topology(&a, &[&b, &c]), 1, 2), ApplyOptions::default()).await.unwrap();
    assert!(!again.changed, "{:?}", actions(&again));

    // A switchover lifts the old master's fence into the setting, and the new
    // master takes writes as soon as a replica is back on it.
    let report = d.apply("test", &durable(topology(&b, &[&a, &c]), 1, 2), ApplyOptions::default()).await.unwrap();
    assert!(report.outcome.lagging.is_empty(), "{report:?}");
    assert_follows(&a, &b);
    assert_follows(&c, &b);
    assert_writable(&b);
    for r in [&a, &b, &c] {
        assert_eq!((config(r, "min-replicas-to-write"), config(r, "min-replicas-max-lag")), ("1".into(), "2".into()));
    }

    // Turning it off is a setting too.
    d.apply("test", &durable(topology(&b, &[&a, &c]), 0, 10), ApplyOptions::default()).await.unwrap();
    for r in [&a, &b, &c] {
        assert_eq!(config(r, "min-replicas-to-write"), "0");
    }
}

/// What the setting is for: a master whose replicas are gone stops acknowledging
/// writes on its own, with no agent and no dictator to fence it.
#[tokio::test]
async fn a_master_whose_replicas_are_gone_refuses_writes_by_itself() {
    let (a, mut b) = (Redis::start(), Redis::start());
    let d = dictator();
    d.apply("test", &durable(topology(&a, &[&b]), 1, 1), ApplyOptions::default()).await.unwrap();
    assert_writable(&a);
    b.freeze(true);
    // redis counts its good replicas once a second: wait for the count to drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let set: redis::RedisResult<()> = redis::cmd("SET").arg("k").arg("v").query(&mut a.conn());
        match set {
            Err(e) => break e.to_string(),
            Ok(()) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(()) => panic!("the master still takes writes with its only replica frozen"),
        }
    };
    assert!(refused.contains("NOREPLICAS"), "{refused}");
    b.freeze(false);
    b.kill();
}

