//! What the agent writes while redis runs, fails, freezes and restarts.

mod common;

use std::time::Duration;

use common::*;
use harness::{Etcd, Redis};
use topology::records::Role;

#[tokio::test]
async fn registers_the_advertised_address_under_a_lease_and_triggers_once() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let mut client = etcd.client().await;
    let started_ms = now_ms();
    // The operator's spelling of the flags: --interval (ms) and --lease-ttl (s).
    let agent = start_agent(
        &etcd,
        &redis,
        &["--interval", "250", "--lease-ttl", "5", "--advertise-address", "node-1.redis-1.cluster.local", "--advertise-port", "7000"],
    );
    let (stored, took) =
        wait_registration(&mut client, &agent.node_key(), "the registration", Duration::from_secs(10), |_| true).await;
    println!("registered {took:?} after the agent answered HTTP");
    let r = &stored.record;
    assert_eq!(r.address, "node-1.redis-1.cluster.local");
    assert_eq!(r.port, 7000);
    assert_eq!(r.role, Role::Master);
    assert!(r.healthy);
    assert_eq!(r.run_id, run_id(&redis));
    // Placement: the machine, by default its hostname.
    let uname = std::process::Command::new("uname").arg("-n").output().unwrap();
    let hostname = String::from_utf8_lossy(&uname.stdout).trim().to_ascii_lowercase();
    assert_eq!(r.host.as_deref(), Some(hostname.as_str()));
    // Wall-clock ms of the write: after the agent started, before we read it.
    assert!((started_ms..=now_ms()).contains(&r.updated_ms), "updated_ms {} (agent started at {started_ms})", r.updated_ms);

    // The key lives under a live lease of the requested TTL (etcd says -1 for a
    // lease that expired or never existed).
    assert_ne!(stored.lease, 0, "the registration must be attached to a lease");
    let ttl = client.lease_time_to_live(stored.lease, None).await.unwrap();
    assert_eq!(ttl.granted_ttl(), 5);
    assert_ne!(ttl.ttl(), -1, "lease {} is not alive", stored.lease);

    // First contact wrote a trigger, a uuid outside the lease.
    let (value, _) = wait_new_trigger(&mut client, &agent.trigger_key(), None, Duration::from_secs(5)).await;

    // At rest the agent writes nothing, though redis takes writes (its offset
    // moves) and 12 probes pass: liveness is the lease's keep-alive, not a put.
    let revision = |resp: &etcd_client::GetResponse| resp.header().map(|h| h.revision()).unwrap_or_default();
    let before = revision(&client.get(agent.node_key(), None).await.unwrap());
    for i in 0..30 {
        redis.cmd::<()>(&["SET", &format!("busy-{i}"), "v"]);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = client.get(agent.node_key(), None).await.unwrap();
    assert_eq!(revision(&after), before, "etcd was written while nothing an observer acts on changed");
    let ttl = client.lease_time_to_live(stored.lease, None).await.unwrap();
    assert!(ttl.ttl() > 0, "the lease is kept alive without writes: {}", ttl.ttl());
    // A change that matters is written at once, once.
    redis.cmd::<()>(&["CONFIG", "SET", "min-replicas-max-lag", "10"]);
    redis.cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", "1000001"]);
    let (fenced, _) = wait_registration(&mut client, &agent.node_key(), "fenced", Duration::from_secs(5), |s| s.record.fenced).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let now = client.get(agent.node_key(), None).await.unwrap();
    assert_eq!(revision(&now), fenced.mod_revision, "one write for one change");
    redis.cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    assert!(is_uuid(&value), "trigger {value:?} is not a uuid");
    let resp = client.get(agent.trigger_key(), None).await.unwrap();
    assert_eq!(resp.kvs()[0].lease(), 0, "the trigger must not expire with the agent");

    let status = agent.status();
    assert_eq!(status["redis_healthy"], true, "{status}");
    assert_eq!(status["etcd_connected"], true, "{status}");
    assert_eq!(status["registered"], true, "{status}");
    assert_eq!(status["last_trigger"], value.as_str(), "{status}");
    assert_eq!(status["role"], "master", "{status}");
}

#[tokio::test]
async fn a_replica_registers_as_slave_with_its_offset_at_the_redis_address() {
    let etcd = Etcd::start();
    let master = Redis::start();
    let replica = Redis::start();
    replica.cmd::<()>(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    for i in 0..50 {
        master.cmd::<()>(&["SET", &format!("k{i}"), "some value"]);
    }
    let master_offset: u64 = master.info_field("master_repl_offset").unwrap().parse().unwrap();
    harness::wait_until("the replica to catch up", Duration::from_secs(10), || {
        replica.info_field("slave_repl_offset").and_then(|o| o.parse::<u64>().ok()) == Some(master_offset)
    });
    let mut client = etcd.client().await;
    let agent = start_agent(&etcd, &replica, &["--host", "Rack1-Host7.example.org"]);
    // The offset may grow with the master's pings; it must reach what the replica applied.
    let (stored, _) = wait_registration(&mut client, &agent.node_key(), "slave with its offset", Duration::from_secs(10), |s| {
        s.record.role == Role::Slave && s.record.repl_offset >= master_offset
    })
    .await;
    let r = &stored.record;
    assert!(r.healthy);
    assert_eq!((r.address.as_str(), r.port), ("127.0.0.1", replica.port()), "defaults come from --redis");
    assert_eq!(r.run_id, run_id(&replica));
    assert_eq!(r.host.as_deref(), Some("rack1-host7.example.org"), "--host, lowercased");
    let applied: u64 = replica.info_field("slave_repl_offset").unwrap().parse().unwrap();
    assert!(r.repl_offset <= applied, "registered offset {} beyond the applied {applied}", r.repl_offset);
}

#[tokio::test]
async fn killed_redis_is_unhealthy_within_an_interval_and_removed_after_the_grace_period() {
    let etcd = Etcd::start();
    let mut redis = Redis::start();
    let mut client = etcd.client().await;
    // Default interval (250 ms) and redis timeout; a short grace period.
    let agent = start_agent(&etcd, &redis, &["--interval", "250", "--down-grace-secs", "2"]);
    let key = agent.node_key();
    let (before, _) = wait_registration(&mut client, &key, "healthy", Duration::from_secs(10), |s| s.record.healthy).await;

    redis.kill();
    let (down, took) =
        wait_registration(&mut client, &key, "unhealthy", Duration::from_secs(10), |s| !s.record.healthy).await;
    println!("kill -9 -> healthy:false in {took:?} (interval 250 ms)");
    assert_eq!(down.record.role, Role::Unknown);
    assert_eq!(down.record.run_id, before.record.run_id, "the last known run_id stays");
    assert_eq!((down.record.address.as_str(), down.record.port), ("127.0.0.1", redis.port()));
    assert_eq!(agent.status()["redis_healthy"], false);

    let gone = wait_absent(&mut client, &key, "removal after the grace period", Duration::from_secs(15)).await;
    println!("removed {gone:?} after it went unhealthy (grace 2 s)");
    // The agent learns of its own delete when etcd answers it, which may be just
    // after a watcher saw the key go.
    harness::wait_until("the agent to report itself unregistered", Duration::from_secs(10), || {
        agent.status()["registered"] == false
    });

    // Back on the same port: registered again, healthy, as a restart (new run_id).
    let (_, old_rev) = trigger(&mut client, &agent.trigger_key()).await.expect("first-contact trigger");
    redis.restart();
    let (back, _) = wait_registration(&mut client, &key, "re-registration", Duration::from_secs(10), |s| s.record.healthy).await;
    assert_eq!(back.record.run_id, run_id(&redis));
    // The trigger is put just after the registration: a watcher may see one before the other.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, rev) = trigger(&mut client, &agent.trigger_key()).await.expect("the trigger");
        if rev > old_rev {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a restarted redis must trigger a re-apply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn frozen_redis_is_unhealthy_and_thawing_is_not_a_restart() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let mut client = etcd.client().await;
    let agent = start_agent(&etcd, &redis, &[]);
    let key = agent.node_key();
    wait_registration(&mut client, &key, "healthy", Duration::from_secs(10), |s| s.record.healthy).await;
    let (first_trigger, rev) = wait_new_trigger(&mut client, &agent.trigger_key(), None, Duration::from_secs(5)).await;

    redis.freeze(true);
    let (_, took) = wait_registration(&mut client, &key, "unhealthy", Duration::from_secs(10), |s| !s.record.healthy).await;
    println!("SIGSTOP -> healthy:false in {took:?} (interval and timeout 100 ms)");
    let error = agent.status()["redis_error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("no answer"), "{error}");

    redis.freeze(false);
    let (back, _) = wait_registration(&mut client, &key, "healthy again", Duration::from_secs(10), |s| s.record.healthy).await;
    assert_eq!(back.record.run_id, run_id(&redis));
    // Same run_id after a short outage: no trigger. The tick that saw redis back
    // would have written one right after this registration.
    assert_quiet(&mut client, &key, &back, 4).await;
    assert_eq!(trigger(&mut client, &agent.trigger_key()).await, Some((first_trigger.clone(), rev)));
    assert_eq!(agent.status()["last_trigger"], first_trigger.as_str());
}

#[tokio::test]
async fn a_restart_writes_a_new_trigger_and_ordinary_ticks_write_none() {
    let etcd = Etcd::start();
    let mut redis = Redis::start();
    let mut client = etcd.client().await;
    let agent = start_agent(&etcd, &redis, &[]);
    let (first, rev) = wait_new_trigger(&mut client, &agent.trigger_key(), None, Duration::from_secs(10)).await;

    // Fifteen ticks of steady state: neither the registration nor the trigger is written.
    let (reg, _) = wait_registration(&mut client, &agent.node_key(), "registered", Duration::from_secs(5), |_| true).await;
    assert_quiet(&mut client, &agent.node_key(), &reg, 15).await;
    assert_eq!(trigger(&mut client, &agent.trigger_key()).await, Some((first.clone(), rev)), "no trigger on ticks");

    let old_run_id = run_id(&redis);
    redis.restart();
    let (second, rev2) = wait_new_trigger(&mut client, &agent.trigger_key(), Some(&first), Duration::from_secs(10)).await;
    assert!(is_uuid(&second) && rev2 > rev);
    let new_run_id = run_id(&redis);
    assert_ne!(new_run_id, old_run_id);
    let (restarted, _) = wait_registration(&mut client, &agent.node_key(), "the new run_id", Duration::from_secs(5), |s| {
        s.record.healthy && s.record.run_id == new_run_id
    })
    .await;
    // And only one trigger for one restart, however many ticks follow.
    assert_quiet(&mut client, &agent.node_key(), &restarted, 10).await;
    assert_eq!(trigger(&mut client, &agent.trigger_key()).await, Some((second, rev2)));
}

#[tokio::test]
async fn an_agent_started_before_its_redis_registers_unhealthy_then_triggers_on_first_contact() {
    let etcd = Etcd::start();
    let mut redis = Redis::start();
    redis.kill();
    let mut client = etcd.client().await;
    let agent = start_agent(&etcd, &redis, &[]);
    let (stored, _) = wait_registration(&mut client, &agent.node_key(), "registered unhealthy", Duration::from_secs(10), |_| true).await;
    assert!(!stored.record.healthy);
    assert_eq!((stored.record.role, stored.record.run_id.as_str(), stored.record.repl_offset), (Role::Unknown, "", 0));
    assert_eq!(trigger(&mut client, &agent.trigger_key()).await, None, "no trigger before redis answers");

    redis.restart();
    let (value, _) = wait_new_trigger(&mut client, &agent.trigger_key(), None, Duration::from_secs(10)).await;
    assert!(is_uuid(&value));
    wait_registration(&mut client, &agent.node_key(), "healthy", Duration::from_secs(10), |s| s.record.healthy).await;
}
