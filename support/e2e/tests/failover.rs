#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Automatic failover on real processes: kill -9 of the master's redis or of its
//! whole node, a leader observer dying mid-failover, the maintenance flag, and a
//! dead agent that must not cause a failover.

use std::time::{Duration, Instant};

use counter::{read_list, Pace, Destination, Writer};
use harness::stack::{Stack, StackOptions, CLUSTER};

const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(5) };

async fn started(options: StackOptions) -> Stack {
    let stack = Stack::start(options);
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    stack
}

/// Waits until node `i` is the master in redis, in the topology and in dnsd.
async fn wait_master_elsewhere(stack: &Stack, old: usize) -> usize {
    let mut new = None;
    harness::wait_until_async("an automatic failover", Duration::from_secs(30), || {
        let found = (0..stack.nodes.len()).find(|i| *i != old && stack.nodes[*i].redis.role() == "master");
        new = found;
        async move { found.is_some() }
    })
    .await;
    let new = new.unwrap();
    harness::wait_until_async("the failover applied and published", Duration::from_secs(30), || async {
        stack.status().await.is_some_and(|s| {
            s["result"] == "ok" && s["topology_revision"].as_i64().is_some()
        }) && published_master(stack).await == Some(stack.nodes[new].redis.port() as u64)
    })
    .await;
    new
}

async fn published_master(stack: &Stack) -> Option<u64> {
    let port: u16 = stack.dnsd_url.rsplit(':').next()?.parse().ok()?;
    let body = harness::etcd::http_get(port, &format!("/clusters/{CLUSTER}/dns"))?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["master"]["port"].as_u64()
}

async fn set_maintenance(stack: &Stack, on: bool) {
    let mut client = stack.etcd.client().await;
    let key = format!("/config/{CLUSTER}/maintenance");
    if on {
        client.put(key, "testing", None).await.unwrap();
    } else {
        client.delete(key, None).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_master_fails_over_and_the_old_one_rejoins_as_a_slave() {
    let mut stack = started(StackOptions { haproxy: true, ..StackOptions::default() }).await;
    let through_haproxy = Destination::Fixed(stack.write.unwrap());
    let writer = Writer::start(through_haproxy.clone(), "failover-ids", PACE);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let killed = Instant::now();
    stack.nodes[0].redis.kill();
    let new = wait_master_elsewhere(&stack, 0).await;
    println!("failover to node-{} took {:?} (applied and published)", new + 1, killed.elapsed());
    let status = stack.status().await.unwrap();
    assert!(status["failover"].as_str().unwrap_or("").contains("promoting"), "{status}");
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The old master comes back empty: fenced and re-pointed, it must not wipe the data.
    stack.nodes[0].redis.restart_empty();
    let old = &stack.nodes[0].redis;
    harness::wait_until("the old master to rejoin as a slave", Duration::from_secs(30), || {
        old.role() == "slave" && old.info_field("master_link_status").as_deref() == Some("up")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tally = writer.stop().await.unwrap();
    let list = read_list(&through_haproxy, "failover-ids", Duration::from_secs(10)).await.unwrap();
    let verdict = tally.check(&list);
    println!("{verdict}");
    // Writes are accepted again, on the new master, and the data survived the rejoin.
    let after = tally.acked.iter().filter(|(_, at)| *at > killed).count();
    assert!(after > 100, "writes resumed after the failover: {verdict}");
    assert_eq!(verdict.phantom, 0, "{verdict}");
    assert_eq!(stack.nodes[new].redis.role(), "master");
    harness::wait_until("the rejoined slave to hold every write", Duration::from_secs(20), || {
        old.cmd::<i64>(&["LLEN", "failover-ids"]) as usize == list.len()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_masters_whole_node_fails_over() {
    let mut stack = started(StackOptions::default()).await;
    if let Some(mut agent) = stack.nodes[0].agent.take() {
        agent.process().kill();
    }
    stack.nodes[0].redis.kill();
    let new = wait_master_elsewhere(&stack, 0).await;
    let other = 3 - new;
    harness::wait_until("the other slave follows the new master", Duration::from_secs(20), || {
        stack.nodes[other].redis.info_field("master_port") == Some(stack.nodes[new].redis.port().to_string())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_dying_during_a_failover_does_not_stop_it() {
    let mut stack = started(StackOptions { observers: 2, ..StackOptions::default() }).await;
    let leader = stack.leader().expect("a leader");
    stack.nodes[0].redis.kill();
    // The leader dies while the master is down (before or while it fails over).
    tokio::time::sleep(Duration::from_millis(600)).await;
    stack.observers[leader].0.process().kill();
    let new = wait_master_elsewhere(&stack, 0).await;
    assert_ne!(stack.leader(), Some(leader));
    assert_eq!(stack.nodes[new].redis.role(), "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_pauses_automatic_failover() {
    let mut stack = started(StackOptions::default()).await;
    set_maintenance(&stack, true).await;
    stack.nodes[0].redis.kill();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(stack.nodes[1..].iter().all(|n| n.redis.role() == "slave"), "failed over in maintenance");
    set_maintenance(&stack, false).await;
    wait_master_elsewhere(&stack, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_alone_is_not_a_dead_master() {
    let mut stack = started(StackOptions::default()).await;
    if let Some(mut agent) = stack.nodes[0].agent.take() {
        agent.process().kill();
    }
    // The registration expires with its lease (2 s); redis itself still answers.
    let key = format!("/nodes/{CLUSTER}/node-1");
    harness::wait_until_async("the registration to expire", Duration::from_secs(10), || async {
        stack.etcd.client().await.get(key.as_str(), None).await.is_ok_and(|g| g.kvs().is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(stack.nodes[0].redis.role(), "master");
    assert!(stack.nodes[1..].iter().all(|n| n.redis.role() == "slave"));
    assert!(stack.status().await.unwrap().get("failover").is_none());
}
