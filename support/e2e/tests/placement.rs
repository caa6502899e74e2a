#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Placement on real processes: five groups of three on one control plane, one
//! member of each group on each of three hosts (node-agent `--host`). Losing a
//! whole host fails its masters over one at a time, each onto the host holding
//! the fewest masters; once the host is back, `redis-topology rebalance` gives it
//! its share back with lossless switchovers while every group takes writes.

use std::collections::BTreeMap;
use std::time::Duration;

use counter::{read_list, Destination, Pace, Writer};
use harness::stack::{Stack, StackOptions, DOMAIN};
use service::resolve::MemberResolver;

const HOSTS: [&str; 3] = ["a", "b", "c"];
const PACE: Pace = Pace { per_second: 100, count: None, timeout: Duration::from_secs(5) };

/// Each group: its master's host, then its slaves' hosts in the topology's order.
/// Hosts a and b hold two masters, c one: the fair share of 5 groups on 3 hosts.
/// g1 and g4 list b before c, so the first listed would put both on b.
const GROUPS: [(&str, [&str; 3]); 5] =
    [("g1", ["a", "b", "c"]), ("g2", ["b", "a", "c"]), ("g3", ["c", "a", "b"]), ("g4", ["a", "b", "c"]), ("g5", ["b", "c", "a"])];

fn member(group: &str, host: &str) -> String {
    format!("node-{host}.{group}.{DOMAIN}")
}

/// The node index in the stack of `group`'s member on `host`.
fn node(stack: &Stack, group: &str, host: &str) -> usize {
    stack.nodes.iter().position(|n| n.cluster == group && n.name == format!("node-{host}")).unwrap()
}

async fn get_json(stack: &Stack, key: &str) -> Option<serde_json::Value> {
    let got = stack.etcd.client().await.get(key, None).await.ok()?;
    got.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok())
}

/// The host of each group's master, as the topology in etcd says.
async fn master_hosts(stack: &Stack) -> BTreeMap<String, String> {
    let mut hosts = BTreeMap::new();
    for (group, _) in GROUPS {
        let topology = get_json(stack, &format!("/config/{group}/topology")).await.unwrap();
        let master = topology["master"]["address"].as_str().unwrap().to_string();
        let host = HOSTS.iter().find(|h| master == member(group, h)).unwrap();
        hosts.insert(group.to_string(), host.to_string());
    }
    hosts
}

fn per_host(masters: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<String, usize> = HOSTS.iter().map(|h| (h.to_string(), 0)).collect();
    for host in masters.values() {
        *counts.entry(host.clone()).or_default() += 1;
    }
    counts
}

/// Every group's topology applied (`ok`), and redis agreeing on its master.
async fn wait_all_applied(stack: &Stack, what: &str) {
    harness::wait_until_async(what, Duration::from_secs(60), || async {
        let masters = master_hosts(stack).await;
        for (group, _) in GROUPS {
            let Some(status) = get_json(stack, &format!("/status/{group}")).await else { return false };
            let topology = get_json(stack, &format!("/config/{group}/topology")).await.unwrap();
            let revision = status["topology_revision"].as_i64().unwrap_or(0);
            let current = stack.etcd.client().await.get(format!("/config/{group}/topology"), None).await.unwrap().kvs()[0].mod_revision();
            if status["result"] != "ok" || revision < current || topology.is_null() {
                return false;
            }
            let master = node(stack, group, &masters[group]);
            if stack.nodes[master].redis.role() != "master" {
                return false;
            }
        }
        true
    })
    .await;
}

/// Every member of every group registered healthy, each slave following its master.
async fn wait_slaves_follow(stack: &Stack) {
    harness::wait_until_async("every slave registered healthy and following its master", Duration::from_secs(60), || async {
        let masters = master_hosts(stack).await;
        for (group, hosts) in GROUPS {
            let master_port = stack.nodes[node(stack, group, &masters[group])].redis.port();
            for host in hosts {
                let Some(record) = get_json(stack, &format!("/nodes/{group}/node-{host}")).await else { return false };
                let wanted = if host == masters[group] {
                    record["role"] == "master"
                } else {
                    record["role"] == "slave" && record["upstream"] == format!("127.0.0.1:{master_port}")
                };
                if record["healthy"] != true || !wanted {
                    return false;
                }
            }
        }
        true
    })
    .await;
}

/// The stack with the five groups applied, masters on a, a, b, b, c.
async fn started(observer_args: &'static [&'static str]) -> Stack {
    let mut stack = Stack::start(StackOptions { nodes: 0, observer_args, ..StackOptions::default() });
    for (group, _) in GROUPS {
        for host in HOSTS {
            stack.add_node(group, &format!("node-{host}"), &format!("host-{host}"));
        }
    }
    let mut etcd = stack.etcd.client().await;
    harness::wait_until_async("every node registered", Duration::from_secs(30), || {
        let mut etcd = etcd.clone();
        async move { etcd.get("/nodes/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only())).await.unwrap().kvs().len() == 15 }
    })
    .await;
    for (group, hosts) in GROUPS {
        let topology = serde_json::json!({
            "master": {"address": member(group, hosts[0])},
            "slaves": hosts[1..].iter().map(|h| serde_json::json!({"address": member(group, h)})).collect::<Vec<_>>(),
        });
        etcd.put(format!("/config/{group}/topology"), topology.to_string(), None).await.unwrap();
    }
    wait_all_applied(&stack, "every group applied").await;
    wait_slaves_follow(&stack).await;
    assert_eq!(per_host(&master_hosts(&stack).await), BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 1)]));
    stack
}

/// Host a goes (every redis and node-agent on it, kill -9). g1's and g4's
/// masters fail over one at a time: the first onto c (one master, against b's
/// two), the second then finds b and c even and takes the first listed, b.
/// Without the preference both would land on b (4 against 1). Returns where the
/// masters are then.
async fn lose_host_a(stack: &mut Stack) -> BTreeMap<String, String> {
    // History comes before placement: only slaves equally up to date are chosen
    // between by host, so both slaves of g1 and g4 must hold all their master
    // wrote, and go on holding it (no replication PING from the master until the kill).
    for group in ["g1", "g4"] {
        let master = &stack.nodes[node(stack, group, "a")].redis;
        master.cmd::<String>(&["CONFIG", "SET", "repl-ping-replica-period", "3600"]);
        harness::wait_until(&format!("{group}'s slaves to hold all its master wrote"), Duration::from_secs(20), || {
            let offset = master.info_field("master_repl_offset");
            ["b", "c"].iter().all(|h| stack.nodes[node(stack, group, h)].redis.info_field("slave_repl_offset") == offset)
        });
    }
    for (group, _) in GROUPS {
        let i = node(stack, group, "a");
        if let Some(mut agent) = stack.nodes[i].agent.take() {
            agent.process().kill();
        }
        stack.nodes[i].redis.kill();
    }
    harness::wait_until_async("g1 and g4 failed over", Duration::from_secs(60), || async {
        let masters = master_hosts(stack).await;
        masters["g1"] != "a" && masters["g4"] != "a"
    })
    .await;
    // DNS follows, so that clients started now never reach host a.
    harness::wait_until_async("every group's master published", Duration::from_secs(60), || async {
        let masters = master_hosts(stack).await;
        for (group, _) in GROUPS {
            let port = stack.nodes[node(stack, group, &masters[group])].redis.port();
            let published = get_json(stack, &format!("/dns/{group}")).await;
            if published.is_none_or(|p| p["master"]["port"] != port) {
                return false;
            }
        }
        true
    })
    .await;
    // Down long enough for its agents' leases to expire: no registration names host a.
    harness::wait_until_async("host a's registrations gone", Duration::from_secs(30), || async {
        let mut gone = true;
        for (group, _) in GROUPS {
            gone &= get_json(stack, &format!("/nodes/{group}/node-a")).await.is_none();
        }
        gone
    })
    .await;
    let after_failover = master_hosts(stack).await;
    println!("masters after losing host a: {after_failover:?}");
    assert_eq!(per_host(&after_failover), BTreeMap::from([("a".into(), 0), ("b".into(), 3), ("c".into(), 2)]), "{after_failover:?}");
    // The history says where each master went and why.
    let mut reasons = Vec::new();
    for group in ["g1", "g4"] {
        let status = get_json(stack, &format!("/status/{group}")).await.unwrap();
        reasons.extend(status["history"].as_array().unwrap().iter().filter_map(|e| e["reason"].as_str().map(str::to_string)));
    }
    assert!(reasons.iter().any(|r| r.ends_with("on host host-c, which held 1 master(s)")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.ends_with("on host host-b, which held 2 master(s)")), "{reasons:?}");
    after_failover
}

/// Host a comes back with new disks (its redis empty): its members rejoin as slaves.
async fn bring_back_host_a(stack: &mut Stack) {
    for (group, _) in GROUPS {
        let i = node(stack, group, "a");
        stack.nodes[i].redis.restart_empty();
        stack.restart_agent(i);
    }
}

fn destination(stack: &Stack, group: &str) -> Destination {
    let resolver = MemberResolver::new(&stack.nameservers).unwrap();
    Destination::Srv { name: format!("master.{group}.{DOMAIN}"), resolver: Box::new(resolver) }
}

/// One writer per group, each through its own SRV name.
fn start_writers(stack: &Stack) -> Vec<(String, Writer)> {
    GROUPS.iter().map(|(group, _)| (group.to_string(), Writer::start(destination(stack, group), "placement-ids", PACE))).collect()
}

/// Stops the writers and reads every group's list back: nothing acknowledged
/// lost, nothing rejected applied.
async fn check_writers(stack: &Stack, writers: Vec<(String, Writer)>) {
    for (group, writer) in writers {
        let tally = writer.stop().await.expect("the writer ran to the end");
        let list = read_list(&destination(stack, &group), "placement-ids", Duration::from_secs(10)).await.unwrap();
        let verdict = tally.check(&list);
        println!("{group}: {verdict}");
        assert!(verdict.acked > 0, "{group}: {verdict}");
        assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{group}: {verdict}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hosts_masters_spread_out_and_rebalance_gives_them_back_losslessly() {
    let mut stack = started(&[]).await;
    let after_failover = lose_host_a(&mut stack).await;
    bring_back_host_a(&mut stack).await;
    wait_slaves_follow(&stack).await;
    wait_all_applied(&stack, "every group applied after host a's return").await;

    let writers = start_writers(&stack);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rebalance = |dry_run: bool| {
        let endpoint = stack.etcd.endpoint();
        tokio::task::spawn_blocking(move || {
            let mut args = vec!["--etcd-endpoints".to_string(), endpoint, "rebalance".into(), "--json".into()];
            if dry_run {
                args.push("--dry-run".into());
            }
            std::process::Command::new(harness::binary("redis-topology")).args(&args).env_remove("REDIS_TOPOLOGY_ETCD_PREFIX").output().unwrap()
        })
    };
    let dry = rebalance(true).await.unwrap();
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let dry: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(dry["plan"]["fair_share"], 2);
    let planned = dry["plan"]["moves"].as_array().unwrap().clone();
    assert_eq!(planned.len(), 1, "one move is enough: {dry}");
    assert_eq!((planned[0]["from_host"].as_str(), planned[0]["to_host"].as_str()), (Some("host-b"), Some("host-a")), "{dry}");
    assert_eq!(master_hosts(&stack).await, after_failover, "--dry-run moved something");

    let out = rebalance(false).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let done: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let moves = done["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 1, "{done}");
    assert_eq!(moves[0]["result"], "done", "{done}");
    wait_all_applied(&stack, "the rebalance applied").await;
    let after = master_hosts(&stack).await;
    println!("masters after the rebalance: {after:?}");
    assert!(per_host(&after).values().all(|n| *n <= 2), "{after:?}");
    assert_eq!(per_host(&after)["a"], 1, "{after:?}");
    let moved = moves[0]["group"].as_str().unwrap();
    assert_eq!(after[moved], "a");

    // Writes go on after the move, then every group's list is read back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_writers(&stack, writers).await;

    // Balanced: a second rebalance has nothing to do, and says so.
    let again = rebalance(false).await.unwrap();
    assert!(again.status.success());
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["plan"]["moves"], serde_json::json!([]), "{again}");
    let endpoint = stack.etcd.endpoint();
    let human = tokio::task::spawn_blocking(move || {
        std::process::Command::new(harness::binary("redis-topology"))
            .args(["--etcd-endpoints", &endpoint, "rebalance"])
            .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let human = String::from_utf8_lossy(&human.stdout);
    println!("{human}");
    assert!(human.starts_with("fair share: 2 master(s) per host (3 live hosts)\n"), "{human}");
    assert!(human.contains("nothing to move"), "{human}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_rebalance_after_secs_the_observer_gives_a_returned_host_its_share_by_itself() {
    let mut stack = started(&["--rebalance-after-secs", "2"]).await;
    lose_host_a(&mut stack).await;
    // The machine stays down a while: the observer looks once a second, and
    // only a host it saw without a live registration counts as come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writers = start_writers(&stack);
    bring_back_host_a(&mut stack).await;
    harness::wait_until_async("the observer to move a master back to host a", Duration::from_secs(60), || async {
        per_host(&master_hosts(&stack).await)["a"] == 1
    })
    .await;
    wait_all_applied(&stack, "the automatic rebalance applied").await;
    let after = master_hosts(&stack).await;
    println!("masters after the automatic rebalance: {after:?}");
    assert!(per_host(&after).values().all(|n| *n <= 2), "{after:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    check_writers(&stack, writers).await;
    // One move was enough: the observer moved nothing else.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(master_hosts(&stack).await, after);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_stops_at_the_first_move_not_applied_and_says_what_was_not_done() {
    // Four groups of two on hosts a and b, every master on a: two must move.
    const PAIRS: [&str; 4] = ["p1", "p2", "p3", "p4"];
    let mut stack = Stack::start(StackOptions { nodes: 0, ..StackOptions::default() });
    let mut etcd = stack.etcd.client().await;
    for group in PAIRS {
        for host in ["a", "b"] {
            stack.add_node(group, &format!("node-{host}"), &format!("host-{host}"));
        }
        let topology = serde_json::json!({"master": {"address": member(group, "a")}, "slaves": [{"address": member(group, "b")}]});
        etcd.put(format!("/config/{group}/topology"), topology.to_string(), None).await.unwrap();
    }
    let masters_on = |host: &'static str| {
        let mut etcd = etcd.clone();
        async move {
            let mut n = 0;
            for group in PAIRS {
                let got = etcd.get(format!("/config/{group}/topology"), None).await.unwrap();
                let topology: serde_json::Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
                n += usize::from(topology["master"]["address"] == member(group, host));
            }
            n
        }
    };
    // Each group's topology slave registered healthy, replicating from its topology master.
    let follow = || async {
        for group in PAIRS {
            let Some(topology) = get_json(&stack, &format!("/config/{group}/topology")).await else { return false };
            let (master, slave) = if topology["master"]["address"] == member(group, "a") { ("a", "b") } else { ("b", "a") };
            let (Some(m), Some(s)) = (
                get_json(&stack, &format!("/nodes/{group}/node-{master}")).await,
                get_json(&stack, &format!("/nodes/{group}/node-{slave}")).await,
            ) else {
                return false;
            };
            let master_at = format!("{}:{}", m["address"].as_str().unwrap_or(""), m["port"]);
            if m["role"] != "master" || s["role"] != "slave" || s["healthy"] != true || s["upstream"] != master_at {
                return false;
            }
        }
        true
    };
    harness::wait_until_async("every slave following its master", Duration::from_secs(60), follow).await;
    let rebalance = |extra: &'static [&'static str]| {
        let endpoint = stack.etcd.endpoint();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(harness::binary("redis-topology"))
                .args(["--etcd-endpoints", &endpoint, "rebalance", "--json"])
                .args(extra)
                .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
                .output()
                .unwrap()
        })
    };

    // Waiting no time at all, the first move cannot be seen applied: the run stops
    // there, says the move was written, and writes nothing else.
    let out = rebalance(&["--timeout-secs", "0"]).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let moves = report["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 2, "{report}");
    assert_eq!(moves[0]["result"], "timed out", "{report}");
    assert!(moves[0]["revision"].as_i64().is_some(), "{report}");
    assert!(moves[0]["error"].as_str().unwrap().contains("the observer may still apply it"), "{report}");
    assert_eq!((moves[1]["result"].as_str(), &moves[1]["revision"]), (Some("not done"), &serde_json::Value::Null), "{report}");
    assert_eq!(masters_on("b").await, 1, "exactly the first move was written");

    // The observer applies the written move; run again, the rest is planned afresh and done.
    harness::wait_until_async("the first move applied", Duration::from_secs(60), || async {
        let group = moves[0]["group"].as_str().unwrap();
        let status = get_json(&stack, &format!("/status/{group}")).await;
        status.is_some_and(|s| s["result"] == "ok" && s["topology_revision"].as_i64() >= moves[0]["revision"].as_i64())
    })
    .await;
    harness::wait_until_async("every slave following its master", Duration::from_secs(60), follow).await;
    let out = rebalance(&[]).await.unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut history = Vec::new();
    for group in PAIRS {
        history.push(get_json(&stack, &format!("/status/{group}")).await.map(|s| s["history"].clone()));
    }
    assert_eq!(report["moves"].as_array().unwrap().len(), 1, "{report}\n{history:?}");
    assert_eq!(report["moves"][0]["result"], "done", "{report}");
    assert_eq!((masters_on("a").await, masters_on("b").await), (2, 2));
}
