//! The agent's own life: killed, stopped, and etcd going away under it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use harness::{Etcd, Redis};

#[tokio::test]
async fn a_killed_agent_registration_expires_with_its_lease() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let mut client = etcd.client().await;
    let mut agent = start_agent(&etcd, &redis, &["--lease-ttl", "2"]);
    let key = agent.node_key();
    wait_registration(&mut client, &key, "registered", Duration::from_secs(10), |s| s.record.healthy).await;
    wait_trigger(&mut client, &agent.trigger_key(), Duration::from_secs(10)).await;

    agent.service.process().kill();
    let killed = Instant::now();
    assert!(registration(&mut client, &key).await.is_some(), "kill -9 cannot delete; only the lease can");
    let gone = wait_absent(&mut client, &key, "lease expiry", Duration::from_secs(15)).await;
    println!("kill -9 -> key gone after {gone:?} (lease TTL 2 s; {:?} since the kill)", killed.elapsed());
    // The trigger is not under the lease: it stays.
    assert!(trigger(&mut client, &agent.trigger_key()).await.is_some());
}

#[tokio::test]
async fn sigterm_deregisters_at_once_and_exits_zero() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let mut client = etcd.client().await;
    let mut agent = start_agent(&etcd, &redis, &["--lease-ttl", "30"]);
    let key = agent.node_key();
    wait_registration(&mut client, &key, "registered", Duration::from_secs(10), |s| s.record.healthy).await;
    wait_trigger(&mut client, &agent.trigger_key(), Duration::from_secs(10)).await;

    let status = agent.service.process().terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "did not exit 0 on SIGTERM: {status:?}\n{}", agent.service.log());
    // With a 30 s lease, only the revoke can have removed it this soon.
    assert!(registration(&mut client, &key).await.is_none(), "still registered after SIGTERM");
    assert!(trigger(&mut client, &agent.trigger_key()).await.is_some());
    assert!(agent.service.log().contains("deregistered"), "{}", agent.service.log());
}

#[tokio::test]
async fn an_etcd_restart_restores_the_registration_and_delivers_the_trigger_it_missed() {
    let mut etcd = Etcd::start();
    let mut redis = Redis::start();
    let mut client = etcd.client().await;
    let agent = start_agent(&etcd, &redis, &["--lease-ttl", "2"]);
    let key = agent.node_key();
    let (before, _) = wait_registration(&mut client, &key, "registered", Duration::from_secs(10), |s| s.record.healthy).await;
    let (first_trigger, _) = wait_new_trigger(&mut client, &agent.trigger_key(), None, Duration::from_secs(5)).await;

    etcd.kill();
    // While etcd is away, redis restarts: the agent sees it, but cannot tell etcd yet.
    redis.restart();
    let new_run_id = run_id(&redis);
    harness::wait_until("the agent to see the restart and the outage", Duration::from_secs(20), || {
        let s = agent.status();
        s["run_id"] == new_run_id.as_str() && s["etcd_connected"] == false && s["redis_healthy"] == true
    });
    tokio::time::sleep(Duration::from_secs(1)).await;

    let down = Instant::now();
    etcd.restart();
    println!("etcd restarted after {:?}", down.elapsed());
    let mut client = etcd.client().await;
    let (restored, took) = wait_registration(&mut client, &key, "re-registration under a new lease", Duration::from_secs(20), |s| {
        s.lease != before.lease && s.record.healthy && s.record.run_id == new_run_id
    })
    .await;
    println!("registration restored {took:?} after etcd was back");
    let (second_trigger, _) =
        wait_new_trigger(&mut client, &agent.trigger_key(), Some(&first_trigger), Duration::from_secs(10)).await;
    assert!(is_uuid(&second_trigger));

    // The new lease is kept alive: three TTLs on, the key is still there under
    // that same lease, which no write refreshes.
    tokio::time::sleep(Duration::from_secs(3 * 2)).await;
    let later = registration(&mut client, &key).await.expect("the key three TTLs on");
    assert_eq!(later.lease, restored.lease, "the lease was replaced: it lapsed");
    assert_ne!(client.lease_time_to_live(later.lease, None).await.unwrap().ttl(), -1, "lease {} expired", later.lease);
    let status = agent.status();
    assert_eq!(status["etcd_connected"], true, "{status}");
    assert_eq!(status["registered"], true, "{status}");
}
