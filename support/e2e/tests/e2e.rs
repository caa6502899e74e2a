#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The whole system as one, the way an operator uses it.

use std::time::{Duration, Instant};

use counter::{median_max_ms, read_list, Pace, Destination, Writer};
use harness::stack::{Stack, StackOptions, CLUSTER};

const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(5) };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_rotations_through_haproxy_lose_nothing() {
    let stack = Stack::start(StackOptions { haproxy: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    let through_haproxy = Destination::Fixed(stack.write.unwrap());
    let writer = Writer::start(through_haproxy.clone(), "e2e-ids", PACE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut spans = Vec::new();
    for round in 1..=20 {
        let m = round % 3;
        let started = Instant::now();
        let revision = stack.define(m, &[(m + 1) % 3, (m + 2) % 3]).await;
        stack.wait_applied(revision).await;
        spans.push((started, Instant::now()));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = writer.stop().await.unwrap();
    let list = read_list(&through_haproxy, "e2e-ids", Duration::from_secs(10)).await.unwrap();
    let verdict = tally.check(&list);
    let gaps: Vec<Duration> = spans.iter().map(|(a, b)| tally.longest_gap(*a, *b + Duration::from_millis(300))).collect();
    let (median, max) = median_max_ms(&gaps);
    println!("{verdict}; write-unavailable window through HAProxy: median {median:.0} ms, max {max:.0} ms");
    assert!(verdict.acked > 2000, "writes went through: {verdict}");
    assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{verdict}");
    // The final master is the one the last topology named.
    assert_eq!(stack.nodes[20 % 3].redis.role(), "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_slave_rejoins_by_itself() {
    let mut stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    for i in 0..100 {
        stack.nodes[0].redis.cmd::<()>(&["SET", &format!("key-{i}"), "v"]);
    }

    // The slave's machine is replaced: a fresh, empty redis-server on the same node.
    // (It starts as an empty master; the agent's trigger may turn it into a slave
    // before the test could even look.)
    stack.nodes[2].redis.restart_empty();
    // Its node-agent sees a new run_id and triggers; the observer re-applies.
    let node = &stack.nodes[2].redis;
    harness::wait_until("the replaced slave to rejoin and catch up", Duration::from_secs(30), || {
        node.role() == "slave"
            && node.info_field("master_link_status").as_deref() == Some("up")
            && node.cmd::<i64>(&["DBSIZE"]) == 100
    });
    assert_eq!(stack.nodes[0].redis.role(), "master");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_leaves_the_topology_and_dns() {
    let mut stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    // node-3 goes away entirely: its agent and its redis.
    if let Some(mut agent) = stack.nodes[2].agent.take() {
        agent.process().kill();
    }
    stack.nodes[2].redis.kill();
    let revision = stack.define(1, &[0]).await;
    stack.wait_applied(revision).await;
    assert_eq!(stack.nodes[1].redis.role(), "master");
    assert_eq!(stack.nodes[0].redis.role(), "slave");

    // Published DNS names only the remaining two; the registration expires with its lease.
    let published: serde_json::Value =
        serde_json::from_str(&harness::etcd::http_get(port(&stack.dnsd_url), &format!("/clusters/{CLUSTER}/dns")).unwrap()).unwrap();
    assert_eq!(published["slaves"].as_array().map(Vec::len), Some(1), "{published}");
    let node_key = format!("/nodes/{CLUSTER}/node-3");
    harness::wait_until_async("node-3's registration to expire", Duration::from_secs(15), || async {
        let mut client = stack.etcd.client().await;
        client.get(node_key.as_str(), None).await.is_ok_and(|g| g.kvs().is_empty())
    })
    .await;
}

fn port(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dictator_resolves_node_names_through_dnsd_and_names_what_does_not_resolve() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    // Publish once so dnsd serves the cluster's records.
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let url = format!("{}/clusters/{CLUSTER}/master", stack.dictator_url);

    // Node names (SRV <node>.<cluster>.<domain> gives the port) are resolved via dnsd.
    // The topology is the one defined: the observer puts back any other, since roles
    // that differ from the declared topology are re-applied.
    let (status, report) = harness::put_json(&url, stack.topology(0, &[1, 2])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["master"], stack.nodes[0].redis.host_port());
    assert_eq!(report["slaves"], serde_json::json!([stack.nodes[1].redis.host_port(), stack.nodes[2].redis.host_port()]));

    // A name dnsd does not know is a 422 naming the field, and nothing changes.
    let unknown = serde_json::json!({
        "master": {"address": stack.node_name(0)},
        "slaves": [{"address": format!("node-9.{CLUSTER}.cluster.local")}],
    });
    let (status, err) = harness::put_json(&url, unknown.to_string()).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"].as_str().unwrap().contains("slaves[0]: node-9"), "{err}");
    assert_eq!(stack.nodes[0].redis.role(), "master");
    assert_eq!(stack.nodes[1].redis.role(), "slave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_finds_the_dictator_and_dnsd_by_srv_records() {
    let mut stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    // Publish the services themselves as nodes of an "ops" cluster, so dnsd serves
    // SRV records `dictator.ops.cluster.local` and `dnsd.ops.cluster.local`.
    let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let mut client = stack.etcd.client().await;
    for (node, url) in [("dictator", &stack.dictator_url), ("dnsd", &stack.dnsd_url)] {
        let record = serde_json::json!({"address": "127.0.0.1", "port": port(url), "role": "unknown",
            "repl_offset": 0, "run_id": "", "healthy": true, "updated_ms": 0});
        client.put(format!("/nodes/ops/{node}"), record.to_string(), None).await.unwrap();
    }
    // Replace the stack's observer with one that knows only the SRV names.
    stack.observers[0].0.process().kill();
    let http = harness::free_port();
    let (listen, dns, etcd) = (format!("127.0.0.1:{http}"), stack.dns.to_string(), stack.etcd.endpoint());
    let mut observer = harness::Service::start(
        "observer",
        &["--listen", &listen, "--etcd-endpoints", &etcd, "--nameserver", &dns, "--election-ttl-secs", "2",
          "--dictator", "http://dictator.ops.cluster.local", "--dnsd", "http://dnsd.ops.cluster.local"],
        &[],
    );
    observer.wait_http(http);
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    assert_eq!(stack.nodes[1].redis.role(), "master");
}
