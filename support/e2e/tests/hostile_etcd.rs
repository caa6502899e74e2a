#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Values written into etcd by someone else (a hand edit, another tool, an
//! attacker with etcd access): malformed JSON, or JSON of the wrong shape, under
//! `/nodes`, `/config`, `/dns`, `/sentinels` and `/status`. Every service logs
//! and skips them, while listing after an etcd restart and while watching, and
//! goes on serving the good entries; `redis-topology` names each one.

use std::process::Command;
use std::time::Duration;

use harness::stack::{Stack, StackOptions, CLUSTER};

const GARBAGE: &[(&str, &[u8])] = &[
    ("/nodes/redis-1/node-9", b"{not json"),
    ("/nodes/redis-1/node-8", b"{\"address\":1,\"port\":\"x\"}"),
    ("/nodes/redis-2/node-1", b"\xff\xfe\x00\x01"),
    ("/dns/redis-2", b"[]"),
    ("/dns/redis-3", b"{\"master\":"),
    ("/config/redis-2/topology", b"{{{"),
    ("/config/redis-3/topology", b"{\"master\":{\"address\":\"\"}}"),
    ("/config/redis-2/topology-trigger", b"\x00"),
    ("/sentinels/0123456789abcdef0123456789abcdef01234567", b"nope"),
    ("/status/redis-2", b"\x00\x01"),
];

fn port(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_values_are_skipped_and_every_service_keeps_serving() {
    let mut stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    // Written while the services watch...
    let mut client = stack.etcd.client().await;
    for (key, value) in GARBAGE {
        client.put(*key, *value, None).await.unwrap();
    }
    // ...and, after etcd restarts, found again by each service's fresh list.
    stack.etcd.restart();
    // Our own cluster's published record is overwritten with garbage too: dnsd
    // keeps serving what it last read that made sense.
    let mut client = stack.etcd.client().await;
    client.put(format!("/dns/{CLUSTER}"), "{\"master\":{\"host\":", None).await.unwrap();
    harness::wait_until("dnsd still names node-1", Duration::from_secs(20), || {
        stack.dns_master_port() == Some(stack.nodes[0].redis.port())
    });

    // A switchover goes through the observer, the dictator and dnsd as before.
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("DNS to name node-2", Duration::from_secs(20), || {
        stack.dns_master_port() == Some(stack.nodes[1].redis.port())
    });
    assert_eq!(stack.nodes[1].redis.role(), "master");

    // Each service answers, and says what it skipped.
    let dnsd = port(&stack.dnsd_url);
    assert!(harness::etcd::http_get(dnsd, "/healthz").is_some());
    assert!(harness::etcd::http_get(port(&stack.dictator_url), "/healthz").is_some());
    assert!(harness::etcd::http_get(stack.observers[0].1, "/status").is_some());
    let published = harness::etcd::http_get(dnsd, &format!("/clusters/{CLUSTER}/dns")).unwrap();
    assert!(published.contains(&stack.nodes[1].redis.port().to_string()), "{published}");
    let broken = harness::etcd::http_get(dnsd, "/clusters/redis-2/dns").unwrap();
    assert!(broken.contains("invalid topology at /dns/redis-2"), "{broken}");
    let dnsd_log = stack.dnsd_log();
    assert!(dnsd_log.contains("ignoring a value that is not the expected JSON") && dnsd_log.contains("/nodes/redis-1/node-9"), "{dnsd_log}");
    // The observer tried redis-2's topology and recorded the dictator's refusal.
    harness::wait_until_async("the observer to record redis-2's malformed topology", Duration::from_secs(20), || async {
        let got = stack.etcd.client().await.get("/status/redis-2", None).await.unwrap();
        got.kvs().first().is_some_and(|kv| String::from_utf8_lossy(kv.value()).contains("malformed JSON"))
    })
    .await;

    // The operator's command lists the good clusters and names the broken topology.
    let out = Command::new(harness::binary("redis-topology"))
        .args(["--json", "list"])
        .env("ETCDCTL_ENDPOINTS", stack.etcd.endpoint())
        .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("redis-1") && stdout.contains("malformed JSON"), "{stdout}");
    // ...and every value it could not read, rather than leaving it out unseen;
    // `check` counts one as something that differs.
    let view: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let unreadable: Vec<String> = view.as_array().unwrap().iter()
        .flat_map(|c| c["unreadable"].as_array().cloned().unwrap_or_default())
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    for key in ["/nodes/redis-1/node-9", "/nodes/redis-1/node-8", "/nodes/redis-2/node-1", "/dns/redis-2", "/dns/redis-3"] {
        // (/status/redis-2 is the observer's again by now: it recorded the refusal above.)
        assert!(unreadable.iter().any(|u| u.starts_with(&format!("{key}: "))), "{key} not reported: {unreadable:?}");
    }
    let check = Command::new(harness::binary("redis-topology"))
        .args(["check", CLUSTER])
        .env("ETCDCTL_ENDPOINTS", stack.etcd.endpoint())
        .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains("unreadable in etcd: /nodes/redis-1/node-9: "), "{said}");
}
