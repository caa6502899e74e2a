#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Automatic failover on real processes: kill -9 of the master's redis or of its
//! whole node, a leader observer dying mid-failover, the maintenance flag, and a
//! dead agent that must not cause a failover.
//!
//! "Nothing happened" is only asserted after the observer logged that it looked
//! and decided not to act; observers log JSON so tests can read those lines.

use std::time::{Duration, Instant};

use counter::{read_list, Pace, Destination, Writer};
use harness::stack::{Stack, StackOptions, CLUSTER};
use harness::Service;

const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(5) };
const JSON_LOGS: &[&str] = &["--log-format", "json"];

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
        stack.status().await.is_some_and(|s| applied_without(stack, &s, old))
            && published_master(stack).await == Some(stack.nodes[new].redis.port() as u64)
    })
    .await;
    new
}

/// The round applied: `ok`, or `partial` because the dead old master `old` was
/// skipped, which the dictator's report, kept in the status, must name.
fn applied_without(stack: &Stack, status: &serde_json::Value, old: usize) -> bool {
    let old_master = format!("127.0.0.1:{}", stack.nodes[old].redis.port());
    let unreachable = status["report"]["unreachable"].as_array().cloned().unwrap_or_default();
    status["topology_revision"].as_i64().is_some()
        && (status["result"] == "ok"
            || (status["result"] == "partial" && status["retry"].is_null() && unreachable == [serde_json::json!(old_master)]))
}

/// The lines a service started with `--log-format json` logged with `message`.
fn logged(service: &Service, message: &str) -> Vec<serde_json::Value> {
    service
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// The topology in etcd and its revision.
async fn stored_topology(stack: &Stack) -> (serde_json::Value, i64) {
    let got = stack.etcd.client().await.get(format!("/config/{CLUSTER}/topology"), None).await.unwrap();
    let kv = &got.kvs()[0];
    (serde_json::from_slice(kv.value()).unwrap(), kv.mod_revision())
}

/// What observer `i` answers about leading; `None` when it does not answer.
fn leader_flag(stack: &Stack, i: usize) -> Option<bool> {
    let body = harness::etcd::http_get(stack.observers[i].1, "/status")?;
    serde_json::from_str::<serde_json::Value>(&body).ok()?["leader"].as_bool()
}

/// The pid of this test's child serving `url` (`--listen <host:port>`): the
/// harness keeps the dictator's handle to itself.
fn child_serving(url: &str) -> u32 {
    let listen = url.trim_start_matches("http://");
    let parent = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
            let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&str> = cmdline.split('\0').collect();
            ppid.as_deref() == Some(parent.as_str()) && args.windows(2).any(|w| w == ["--listen", listen])
        })
        .unwrap_or_else(|| panic!("no child process listens on {listen}"))
}

fn signal(pid: u32, signal: &str) {
    let sent = std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

fn llen(redis: &harness::Redis) -> usize {
    redis.cmd::<i64>(&["LLEN", "failover-ids"]) as usize
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
    harness::wait_until("writes to reach the master", Duration::from_secs(10), || llen(&stack.nodes[0].redis) > 0);

    let killed = Instant::now();
    stack.nodes[0].redis.kill();
    let new = wait_master_elsewhere(&stack, 0).await;
    println!("failover to node-{} took {:?} (applied and published)", new + 1, killed.elapsed());
    // The dead master was skipped: the failover's round is partial, and the
    // dictator's report, kept in the status, names it. (The failover's decision
    // is recorded first, with the topology it replaced.)
    let dead = serde_json::json!([format!("127.0.0.1:{}", stack.nodes[0].redis.port())]);
    harness::wait_until_async("the failover's round recorded as partial", Duration::from_secs(30), || async {
        stack.status().await.is_some_and(|s| s["result"] == "partial" && s["report"]["unreachable"] == dead)
    })
    .await;
    let status = stack.status().await.unwrap();
    assert!(status["failover"].as_str().unwrap_or("").contains("promoting"), "{status}");
    let history = status["history"].as_array().cloned().unwrap_or_default();
    assert!(history.iter().any(|e| e["reason"].as_str().is_some_and(|r| r.starts_with("failover: "))), "{status}");
    // Only writes after the kill can land on the new master: once it holds more
    // than 100 of its own, the writer had that many acknowledged (or phantom).
    let promoted = llen(&stack.nodes[new].redis);
    harness::wait_until("writes to resume on the new master", Duration::from_secs(20), || {
        llen(&stack.nodes[new].redis) > promoted + 100
    });

    // The old master comes back empty: fenced and re-pointed, it must not wipe the data.
    stack.nodes[0].redis.restart_empty();
    let old = &stack.nodes[0].redis;
    harness::wait_until("the old master to rejoin as a slave", Duration::from_secs(30), || {
        old.role() == "slave" && old.info_field("master_link_status").as_deref() == Some("up")
    });
    harness::wait_until_async("the rejoin recorded as a complete round", Duration::from_secs(30), || async {
        stack.status().await.is_some_and(|s| s["result"] == "ok" && s["report"]["unreachable"] == serde_json::json!([]))
    })
    .await;
    let rejoined = llen(&stack.nodes[new].redis);
    harness::wait_until("writes to go on after the rejoin", Duration::from_secs(10), || {
        llen(&stack.nodes[new].redis) > rejoined
    });
    let tally = writer.stop().await.expect("the writer ran to the end");
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
    let mut stack = started(StackOptions { observers: 2, observer_args: JSON_LOGS, ..StackOptions::default() }).await;
    let mut roles = Vec::new();
    harness::wait_until("one observer to lead and the other to answer that it does not", Duration::from_secs(10), || {
        roles = (0..2).map(|i| leader_flag(&stack, i)).collect();
        roles.iter().filter(|r| **r == Some(true)).count() == 1 && roles.contains(&Some(false))
    });
    let leader = roles.iter().position(|r| *r == Some(true)).unwrap();
    let other = 1 - leader;
    let old_port = stack.nodes[0].redis.port();
    let (_, before) = stored_topology(&stack).await;

    // A frozen dictator cannot answer: the failover's apply stays in flight.
    let dictator = child_serving(&stack.dictator_url);
    signal(dictator, "STOP");
    stack.nodes[0].redis.kill();
    let mut failover = 0;
    harness::wait_until("the leader to write the failover and start applying it", Duration::from_secs(30), || {
        let applying = logged(&stack.observers[leader].0, "round: applying the topology");
        let found = applying.iter().filter_map(|l| l["topology_revision"].as_i64()).find(|r| *r > before);
        failover = found.unwrap_or_default();
        found.is_some()
    });
    let (topology, revision) = stored_topology(&stack).await;
    assert_eq!(revision, failover, "the leader applies the topology it wrote");
    assert_ne!(topology["master"]["address"], stack.node_name(0), "the failover names a new master: {topology}");
    let status = stack.status().await.unwrap();
    assert_eq!(status["observer"], format!("observer-{}", leader + 1), "{status}");
    assert!(status["failover"].as_str().unwrap_or("").contains("promoting"), "{status}");
    assert_eq!(published_master(&stack).await, Some(old_port as u64), "published before the dictator answered");

    stack.observers[leader].0.process().kill();
    signal(dictator, "CONT");
    harness::wait_until("the other observer to lead", Duration::from_secs(15), || leader_flag(&stack, other) == Some(true));
    let new = wait_master_elsewhere(&stack, 0).await;
    assert_eq!(topology["master"]["address"], stack.node_name(new));
    // The dead leader never got past the dictator: the other one finished it.
    harness::wait_until_async("the other observer to record the failover applied", Duration::from_secs(30), || async {
        stack.status().await.is_some_and(|s| {
            s["observer"] == format!("observer-{}", other + 1) && applied_without(&stack, &s, 0) && s["topology_revision"] == failover
        })
    })
    .await;
    let new_port = Some(stack.nodes[new].redis.port());
    harness::wait_until("DNS to name the new master", Duration::from_secs(10), || stack.dns_master_port() == new_port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_pauses_automatic_failover() {
    let mut stack = started(StackOptions { observer_args: JSON_LOGS, ..StackOptions::default() }).await;
    set_maintenance(&stack, true).await;
    let before = stored_topology(&stack).await;
    stack.nodes[0].redis.kill();
    harness::wait_until("the observer to hold the failover back", Duration::from_secs(20), || {
        logged(&stack.observers[0].0, "master down; not failing over")
            .iter()
            .any(|l| l["reason"].as_str().is_some_and(|r| r.contains("maintenance")))
    });
    assert_eq!(stored_topology(&stack).await, before, "failed over in maintenance");
    assert!(stack.nodes[1..].iter().all(|n| n.redis.role() == "slave"), "failed over in maintenance");
    set_maintenance(&stack, false).await;
    wait_master_elsewhere(&stack, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_alone_is_not_a_dead_master() {
    let mut stack = started(StackOptions { observer_args: JSON_LOGS, ..StackOptions::default() }).await;
    let before = stored_topology(&stack).await;
    if let Some(mut agent) = stack.nodes[0].agent.take() {
        agent.process().kill();
    }
    // The registration expires with its lease (2 s); redis itself still answers.
    let key = format!("/nodes/{CLUSTER}/node-1");
    harness::wait_until_async("the registration to expire", Duration::from_secs(10), || async {
        stack.etcd.client().await.get(key.as_str(), None).await.is_ok_and(|g| g.kvs().is_empty())
    })
    .await;
    // Past the failover delay the observer asks redis itself, which answers.
    harness::wait_until("the observer to find the master answering", Duration::from_secs(20), || {
        !logged(&stack.observers[0].0, "etcd says the master is down but it answers PING: no failover").is_empty()
    });
    assert_eq!(stored_topology(&stack).await, before, "failed over a live master");
    assert_eq!(stack.nodes[0].redis.role(), "master");
    assert!(stack.nodes[1..].iter().all(|n| n.redis.role() == "slave"));
    assert!(stack.status().await.unwrap().get("failover").is_none());
}
