#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The `redis-topology` binary against a whole running stack (real etcd,
//! redis-servers, node-agents, dnsd, dictator, observer): the operator's
//! walkthrough, done with the command alone.

use std::process::{Command, Output};
use std::time::Duration;

use harness::stack::{Stack, StackOptions, CLUSTER};
use serde_json::Value;

fn run(stack: &Stack, args: &[&str]) -> Output {
    Command::new(harness::binary("redis-topology"))
        .args(args)
        .env("ETCDCTL_ENDPOINTS", stack.etcd.endpoint())
        .env("REDIS_TOPOLOGY_NAMESERVER", stack.dns.to_string())
        .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
        .env_remove("REDIS_TOPOLOGY_DOMAIN")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs and expects exit code `code`; returns stdout.
fn expect(stack: &Stack, args: &[&str], code: i32) -> String {
    let out = run(stack, args);
    assert_eq!(out.status.code(), Some(code), "{args:?}\nstdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    stdout(&out)
}

fn json(stack: &Stack, args: &[&str]) -> Value {
    let mut with_json = args.to_vec();
    with_json.push("--json");
    serde_json::from_str(&expect(stack, &with_json, 0)).unwrap()
}

async fn stored_topology(stack: &Stack) -> Option<String> {
    let got = stack.etcd.client().await.get(format!("/config/{CLUSTER}/topology"), None).await.unwrap();
    got.kvs().first().map(|kv| kv.value_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_walkthrough_with_the_command_alone() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;

    // define: invalid input is refused with the problem named, nothing written.
    let out = run(&stack, &["define", CLUSTER, "--master", "redis.example.com", "--slave", "node-2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("master.address: redis.example.com is not a node of cluster redis-1"), "{}", stderr(&out));
    let out = run(&stack, &["define", CLUSTER, "--master", "node-1", "--slave", "node-1"]);
    assert_eq!(out.status.code(), Some(2), "a member twice: {}", stderr(&out));
    let out = run(&stack, &["define", "Redis_1", "--master", "node-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cluster name"), "{}", stderr(&out));
    assert_eq!(stored_topology(&stack).await, None, "an invalid define wrote something");

    let defined = json(&stack, &["define", CLUSTER, "--master", "node-1", "--slave", "node-2", "--slave", "node-3"]);
    let revision = defined["revision"].as_i64().unwrap();
    assert_eq!(
        stored_topology(&stack).await.as_deref(),
        Some(r#"{"master":{"address":"node-1.redis-1.cluster.local"},"slaves":[{"address":"node-2.redis-1.cluster.local"},{"address":"node-3.redis-1.cluster.local"}]}"#)
    );
    stack.wait_applied(revision).await;

    // list: every node with its role, health and what DNS publishes.
    harness::wait_until("list to show node-1 as the registered and published master", Duration::from_secs(10), || {
        let views = json(&stack, &["list"]);
        let nodes = views[0]["nodes"].as_array().cloned().unwrap_or_default();
        views[0]["cluster"] == CLUSTER
            && nodes.len() == 3
            && nodes.iter().any(|n| n["node"] == "node-1" && n["role"] == "master" && n["dns"] == "master" && n["desired"] == "master")
            && nodes.iter().filter(|n| n["role"] == "slave" && n["dns"] == "slave" && n["healthy"] == true && n["lag_bytes"].is_u64()).count() == 2
    });
    let table = expect(&stack, &["list"], 0);
    assert!(table.contains("cluster redis-1: master node-1") && table.contains("DNS master node-1"), "{table}");

    // check: roles, topology and DNS (asked live through NAMESERVER) agree.
    harness::wait_until("check to pass", Duration::from_secs(10), || run(&stack, &["check"]).status.success());
    assert!(expect(&stack, &["check", CLUSTER], 0).contains("redis-1: OK"));

    // switchover --wait: progress, the dictator's report, exit 0; redis and DNS follow.
    let out = expect(&stack, &["switchover", CLUSTER, "--to", "node-2", "--wait"], 0);
    assert!(out.contains("switchover of redis-1 to node-2.redis-1.cluster.local"), "{out}");
    assert!(out.contains(": ok") && out.contains("promote"), "the report's steps: {out}");
    assert_eq!(stack.nodes[1].redis.role(), "master");
    assert_eq!(stack.nodes[0].redis.role(), "slave");
    harness::wait_until("check to pass after the switchover", Duration::from_secs(10), || run(&stack, &["check", CLUSTER]).status.success());
    let status = json(&stack, &["status", CLUSTER]);
    assert_eq!(status["status"]["result"], "ok");
    assert_eq!(status["status"]["report"]["master"], format!("127.0.0.1:{}", stack.nodes[1].redis.port()), "{status}");
    assert!(expect(&stack, &["status", CLUSTER], 0).contains("promote"));

    // Refused switchovers change nothing.
    let before = stored_topology(&stack).await;
    let out = run(&stack, &["switchover", CLUSTER, "--to", "node-9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("node-9 is not a member of redis-1's topology (members: node-2, node-1, node-3)"), "{}", stderr(&out));
    assert_eq!(run(&stack, &["switchover", CLUSTER, "--to", "node-2"]).status.code(), Some(2), "already the master");
    assert_eq!(stored_topology(&stack).await, before);

    // history: both applies, with why they ran.
    let history = json(&stack, &["history", CLUSTER]);
    let reasons: Vec<&str> = history.as_array().unwrap().iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.contains(&format!("topology revision {revision}").as_str()), "{history}");
    assert!(history.as_array().unwrap().iter().any(|e| e["master"] == "node-2.redis-1.cluster.local" && e["result"] == "ok"), "{history}");

    // pause / resume: the maintenance flag the observer reads.
    expect(&stack, &["pause", CLUSTER, "--reason", "upgrading node-1"], 0);
    let got = stack.etcd.client().await.get(format!("/config/{CLUSTER}/maintenance"), None).await.unwrap();
    assert_eq!(got.kvs().first().map(|kv| kv.value_str().unwrap().to_string()).as_deref(), Some("upgrading node-1"));
    assert!(expect(&stack, &["list"], 0).contains("automatic failover PAUSED (upgrading node-1)"));
    expect(&stack, &["resume", CLUSTER], 0);
    let got = stack.etcd.client().await.get(format!("/config/{CLUSTER}/maintenance"), None).await.unwrap();
    assert!(got.kvs().is_empty());

    // check names what differs: a node registered outside the topology.
    let stray = r#"{"address":"127.0.0.1","port":1,"role":"slave","repl_offset":0,"run_id":"x","healthy":true,"updated_ms":0}"#;
    stack.etcd.client().await.put(format!("/nodes/{CLUSTER}/node-9"), stray, None).await.unwrap();
    let out = expect(&stack, &["check"], 1);
    assert!(out.contains("node-9: registered but not in the topology"), "{out}");

    // DOMAIN other than dnsd's is refused.
    let out = Command::new(harness::binary("redis-topology"))
        .args(["list"])
        .env("ETCDCTL_ENDPOINTS", stack.etcd.endpoint())
        .env("REDIS_TOPOLOGY_DOMAIN", "example.org")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DOMAIN is example.org but dnsd serves cluster.local"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_switchover_exits_non_zero_with_the_dictators_answer() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    // node-3 stops replicating and takes a write of its own: promoting it would
    // lose the master's writes it lacks, and demoting the master would lose its own.
    // Back to back, before the observer sees node-3 diverge and refuses to re-point it.
    let () = redis::pipe()
        .cmd("REPLICAOF").arg("NO").arg("ONE").ignore()
        .cmd("SET").arg("only-on-node-3").arg("v").ignore()
        .query(&mut stack.nodes[2].redis.conn())
        .unwrap();
    let _: String = stack.nodes[0].redis.cmd(&["SET", "only-on-node-1", "v"]);
    let out = run(&stack, &["switchover", CLUSTER, "--to", "node-3", "--wait", "--timeout-secs", "30"]);
    assert_eq!(out.status.code(), Some(1), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("dictator") && stdout(&out).contains("409"), "{}", stdout(&out));
}

#[test]
fn completions_and_help_name_every_command() {
    let out = Command::new(harness::binary("redis-topology")).args(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for command in ["list", "status", "define", "switchover", "rebalance", "pause", "resume", "history", "check", "trigger"] {
        assert!(script.contains(command), "{command} missing from the completions");
    }
    harness::assert_documents_flags("redis-topology", &[("--etcd-endpoints", "ETCDCTL_ENDPOINTS"), ("--etcd-prefix", "REDIS_TOPOLOGY_ETCD_PREFIX"), ("--domain", "REDIS_TOPOLOGY_DOMAIN"), ("--nameserver", "REDIS_TOPOLOGY_NAMESERVER")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_to_a_service_gets_an_access_log_line() {
    let stack = Stack::start(StackOptions { nodes: 1, ..StackOptions::default() });
    let (observer, port) = &stack.observers[0];
    assert!(harness::etcd::http_get(*port, "/status").is_some());
    assert!(harness::etcd::http_get(*port, "/nowhere").is_some());
    harness::wait_until("the observer to log both requests", Duration::from_secs(5), || {
        // Without a terminal the logs may still carry colours: compare the text.
        let log: String = observer.log().split('\x1b').map(|part| part.split_once('m').map_or(part, |(_, rest)| rest)).collect();
        log.lines().any(|l| l.contains("uri=/status") && l.contains("finished processing request") && l.contains("status=200"))
            && log.lines().any(|l| l.contains("uri=/nowhere") && l.contains("status=404"))
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scripts_are_thin_wrappers_around_the_command() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let script = |name: &str, args: &[&str]| {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Command::new(repo.join("scripts").join(name))
            .args(args)
            .env("REDIS_TOPOLOGY_BIN_DIR", harness::binary("redis-topology").parent().unwrap())
            .env("ETCDCTL_ENDPOINTS", stack.etcd.endpoint())
            .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
            .env_remove("REDIS_TOPOLOGY_DOMAIN")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let topology = std::env::temp_dir().join(format!("cli-test-topology-{}.json", std::process::id()));
    std::fs::write(&topology, stack.topology(0, &[1, 2])).unwrap();
    let out = script("define-topology.sh", &[CLUSTER, topology.to_str().unwrap()]);
    std::fs::remove_file(&topology).unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let revision: i64 = stdout(&out).split("(revision ").nth(1).and_then(|r| r.split(')').next()).unwrap().parse().unwrap();
    stack.wait_applied(revision).await;

    let out = script("apply-topology.sh", &[CLUSTER]);
    assert!(out.status.success() && stdout(&out).starts_with("triggered redis-1: "), "{}", stderr(&out));

    let out = script("mess-with-cluster.sh", &[CLUSTER, "3", "0"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for line in ["move 1: master is now node-2 (ok)", "move 2: master is now node-3 (ok)", "move 3: master is now node-1 (ok)"] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert_eq!(stack.nodes[0].redis.role(), "master");
    assert_eq!(stack.nodes[1].redis.role(), "slave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durability_command_sets_redis_own_guard_on_every_member() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let settings = |i: usize| {
        let r = &stack.nodes[i].redis;
        let get = |name: &str| r.cmd::<Vec<String>>(&["CONFIG", "GET", name]).pop().unwrap();
        (get("min-replicas-to-write"), get("min-replicas-max-lag"))
    };

    // More replicas than the group has: refused, nothing written.
    let before = stored_topology(&stack).await;
    let out = run(&stack, &["durability", CLUSTER, "--min-replicas-to-write", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is 3 but the topology has 2 slave(s)"), "{}", stderr(&out));
    assert_eq!(stored_topology(&stack).await, before);

    let set = json(&stack, &["durability", CLUSTER, "--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]);
    stack.wait_applied(set["revision"].as_i64().unwrap()).await;
    for i in 0..3 {
        assert_eq!(settings(i), ("1".into(), "2".into()), "node-{}", i + 1);
    }
    assert!(expect(&stack, &["status", CLUSTER], 0).contains("durability: writes need 1 replica(s) acknowledging within 2 s"));

    // A switchover keeps it, and the new master takes writes.
    expect(&stack, &["switchover", CLUSTER, "--to", "node-3", "--wait"], 0);
    assert!(stored_topology(&stack).await.unwrap().contains(r#""durability":{"min_replicas_to_write":1,"min_replicas_max_lag":2}"#));
    for i in 0..3 {
        assert_eq!(settings(i), ("1".into(), "2".into()), "node-{} after the switchover", i + 1);
    }
    let () = stack.nodes[2].redis.cmd(&["SET", "after-switchover", "v"]);

    let cleared = json(&stack, &["durability", CLUSTER, "--clear"]);
    assert_eq!(cleared["durability"], Value::Null);
    assert!(!stored_topology(&stack).await.unwrap().contains("durability"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn define_refuses_two_members_on_one_host_unless_forced() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    // node-4's agent says it runs on node-1's machine.
    let colocated = r#"{"address":"127.0.0.1","port":1,"role":"master","repl_offset":0,"run_id":"x","healthy":true,"updated_ms":0,"host":"host-node-1"}"#;
    stack.etcd.client().await.put(format!("/nodes/{CLUSTER}/node-4"), colocated, None).await.unwrap();
    let out = run(&stack, &["define", CLUSTER, "--master", "node-1", "--slave", "node-2", "--slave", "node-4"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("node-1 and node-4 run on host host-node-1"), "{}", stderr(&out));
    assert_eq!(stored_topology(&stack).await, None, "a refused define wrote something");
    // Members on three hosts are fine; --force overrides the refusal, with a warning.
    expect(&stack, &["define", CLUSTER, "--master", "node-1", "--slave", "node-2", "--slave", "node-3"], 0);
    let out = run(&stack, &["define", CLUSTER, "--master", "node-1", "--slave", "node-4", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: node-1 and node-4 run on host host-node-1 (--force)"), "{}", stderr(&out));
}
