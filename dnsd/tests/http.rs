//! The real `dnsd` binary: HTTP API status codes, --help, env vars, SIGTERM.

mod common;

use std::time::Duration;

use common::*;
use harness::{free_port, Etcd, Service};
use serde_json::{json, Value};

#[tokio::test]
async fn put_stores_resolved_members_and_get_returns_them() {
    let etcd = Etcd::start();
    register(&etcd, "redis-2", "node-1", "127.0.0.21", 7021).await;
    register(&etcd, "redis-2", "node-2", "127.0.0.22", 7022).await;
    let dnsd = Dnsd::start(&etcd, &[]);
    let topology = json!({
        "master": {"address": "node-1.redis-2.cluster.local"},
        "slaves": [{"address": "127.0.0.22", "port": 7022}, {"address": "10.9.9.9"}],
    });
    let (status, body) = put(&dnsd.url("/clusters/redis-2/dns"), topology.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let want = json!({
        "cluster": "redis-2",
        "master": {"host": "127.0.0.21", "port": 7021, "node": "node-1"},
        "slaves": [{"host": "127.0.0.22", "port": 7022, "node": "node-2"}, {"host": "10.9.9.9", "port": 6379}],
    });
    let revision = body["revision"].as_i64().unwrap();
    let mut without_revision = body.clone();
    without_revision.as_object_mut().unwrap().remove("revision");
    assert_eq!(without_revision, want);
    // Stored in etcd as the design's {host, port, node} members.
    let stored = etcd.client().await.get("/dns/redis-2", None).await.unwrap();
    let kv = &stored.kvs()[0];
    assert_eq!(kv.mod_revision(), revision);
    let value: Value = serde_json::from_slice(kv.value()).unwrap();
    assert_eq!(value, json!({"master": want["master"], "slaves": want["slaves"]}));
    // GET returns what is published.
    let (status, got) = get(&dnsd.url("/clusters/redis-2/dns")).await;
    assert_eq!(status, 200);
    assert_eq!(got, body);
    // The original endpoint uses --cluster (redis-1), where nothing is published yet.
    let (status, err) = get(&dnsd.url("/dns")).await;
    assert_eq!(status, 404, "{err}");
    assert!(err["error"].as_str().unwrap().contains("redis-1"), "{err}");
    let (status, body) = put(&dnsd.url("/dns"), json!({"master": {"address": "127.0.0.1"}}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cluster"], "redis-1");
    let (status, got) = get(&dnsd.url("/dns")).await;
    assert_eq!((status, got), (200, body));
}

/// `json` padded with trailing spaces (still the same JSON) to exactly `len` bytes.
fn padded(json: &str, len: usize) -> String {
    assert!(json.len() <= len);
    format!("{json}{}", " ".repeat(len - json.len()))
}

/// etcd's current revision: any write anywhere moves it.
async fn etcd_revision(etcd: &Etcd) -> i64 {
    let response = etcd.client().await.get("/", None).await.expect("etcd answers");
    response.header().expect("a response header").revision()
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_publishes_nothing() {
    let etcd = Etcd::start();
    register(&etcd, "redis-1", "node-1", "127.0.0.11", 7011).await;
    let dnsd = Dnsd::start(&etcd, &[]);
    let revision = etcd_revision(&etcd).await;
    let limit = service::http::BODY_LIMIT;
    assert_eq!(limit, 64 * 1024, "the documented limit");
    // Bodies that would publish node-1 if they were accepted.
    let good = nodes_topology("node-1", &[]);
    for url in [dnsd.url("/dns"), dnsd.url("/clusters/redis-1/dns")] {
        let cases: Vec<(&str, String, u16, &str)> = vec![
            ("malformed JSON", "{\"master\":".into(), 400, "malformed JSON"),
            ("unknown field", r#"{"master":{"address":"127.0.0.1"},"slave":[]}"#.into(), 422, "slave"),
            ("bad port", r#"{"master":{"address":"127.0.0.1","port":70000}}"#.into(), 422, "master.port"),
            ("no master", r#"{"slaves":[]}"#.into(), 422, "master"),
            ("unregistered node", nodes_topology("node-1", &["node-9"]), 422, "slaves[0].address: node node-9 of cluster redis-1 is not registered"),
            (
                "node of another cluster",
                json!({"master": {"address": "node-1.redis-2.cluster.local"}}).to_string(),
                422,
                "master.address: node-1.redis-2.cluster.local is not a node of cluster redis-1",
            ),
            (
                "a host name",
                json!({"master": {"address": "redis.example.com"}}).to_string(),
                422,
                "only node names (<node>.redis-1.cluster.local) and IP addresses",
            ),
            (
                "one instance twice",
                json!({"master": {"address": "node-1.redis-1.cluster.local"}, "slaves": [{"address": "127.0.0.11", "port": 7011}]}).to_string(),
                422,
                "slaves[0]",
            ),
            ("64 KiB, not JSON", "x".repeat(limit), 400, "malformed JSON"),
            ("one byte over 64 KiB", padded(&good, limit + 1), 413, "length limit exceeded"),
        ];
        harness::assert_json_errors(&url, cases).await;
    }
    // Cluster names: invalid ones are no route; a valid one without nodes has nothing to publish.
    let long = "a".repeat(64);
    for (cluster, status, named) in [
        ("Bad_Name", 404, "cluster name"),
        ("-redis", 404, "cluster name"),
        (long.as_str(), 404, "cluster name"),
        ("redis-9", 422, "node node-1 of cluster redis-9 is not registered"),
    ] {
        let body = json!({"master": {"address": format!("node-1.{cluster}.cluster.local")}}).to_string();
        let (got, err) = put(&dnsd.url(&format!("/clusters/{cluster}/dns")), body).await;
        assert_eq!(got, status, "{cluster}: {err}");
        assert!(err["error"].as_str().unwrap_or_default().contains(named), "{cluster}: {err}");
    }
    // Nothing was written to etcd, and nothing is served.
    assert_eq!(etcd_revision(&etcd).await, revision, "a refused PUT wrote to etcd");
    assert_eq!(dnsd.status(&["master.redis-1.cluster.local", "SRV"]), "NXDOMAIN");

    let client = reqwest::Client::new();
    let resp = client.delete(dnsd.url("/dns")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let resp = client.put(dnsd.url("/nope")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let (status, err) = get(&dnsd.url("/clusters/redis-9/dns")).await;
    assert_eq!(status, 404, "{err}");
    assert!(err["error"].as_str().unwrap().contains("redis-9"), "{err}");
    let (status, body) = get(&dnsd.url("/healthz")).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    assert_eq!(etcd_revision(&etcd).await, revision);

    // Exactly 64 KiB is within the limit: the same topology is published.
    let (status, body) = put(&dnsd.url("/dns"), padded(&good, limit)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dnsd.short(&["master.redis-1.cluster.local", "SRV"]), ["0 100 7011 node-1.redis-1.cluster.local."]);
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    harness::assert_documents_flags(
        "dnsd",
        &[
            ("--listen", "REDIS_TOPOLOGY_LISTEN"),
            ("--dns-listen", "REDIS_TOPOLOGY_DNS_LISTEN"),
            ("--domain", "REDIS_TOPOLOGY_DOMAIN"),
            ("--ttl", "REDIS_TOPOLOGY_TTL"),
            ("--cluster", "REDIS_TOPOLOGY_CLUSTER"),
            ("--dns-udp-sockets", "REDIS_TOPOLOGY_DNS_UDP_SOCKETS"),
            ("--sentinel-listen", "REDIS_TOPOLOGY_SENTINEL_LISTEN"),
            ("--sentinel-announce", "REDIS_TOPOLOGY_SENTINEL_ANNOUNCE"),
            ("--etcd-endpoints", "ETCDCTL_ENDPOINTS"),
            ("--etcd-prefix", "REDIS_TOPOLOGY_ETCD_PREFIX"),
            ("--log-format", "REDIS_TOPOLOGY_LOG_FORMAT"),
        ],
    );
    let bad = std::process::Command::new(harness::binary("dnsd")).args(["--domain", "a..b"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "an invalid domain is a usage error");
}

#[tokio::test]
async fn env_vars_configure_it_and_sigterm_stops_it_cleanly() {
    let etcd = Etcd::start();
    let (http, dns) = (free_port(), free_port());
    let mut service = Service::start(
        "dnsd",
        &[],
        &[
            ("REDIS_TOPOLOGY_LISTEN", &format!("127.0.0.1:{http}")),
            ("REDIS_TOPOLOGY_DNS_LISTEN", &format!("127.0.0.1:{dns}")),
            ("REDIS_TOPOLOGY_DOMAIN", "redis.test"),
            ("REDIS_TOPOLOGY_TTL", "30"),
            ("REDIS_TOPOLOGY_CLUSTER", "main"),
            ("ETCDCTL_ENDPOINTS", &etcd.endpoint()),
            ("REDIS_TOPOLOGY_ETCD_PREFIX", "/staging"),
            ("REDIS_TOPOLOGY_LOG_FORMAT", "json"),
        ],
    );
    service.wait_http(http);
    let dnsd = Dnsd { service, http, dns };
    let (status, body) = put(&dnsd.url("/dns"), json!({"master": {"address": "127.0.0.5"}}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["cluster"], "main");
    assert!(etcd.client().await.get("/staging/dns/main", None).await.unwrap().kvs().len() == 1);
    let out = dnsd.dig(&["master.main.redis.test", "SRV", "+noall", "+answer"]);
    assert!(out.contains("master.main.redis.test.\t30\tIN\tSRV\t0 100 6379 addr-7f000005.main.redis.test."), "{out}");
    assert_eq!(dnsd.status(&["master.main.cluster.local", "SRV"]), "REFUSED");

    let mut dnsd = dnsd;
    let status = dnsd.service.process().terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "did not exit cleanly on SIGTERM: {status:?}");
    let log = dnsd.service.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("DNS listening")), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_taken_dns_port_fails_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = std::process::Command::new(harness::binary("dnsd"))
        .args(["--dns-listen", &format!("127.0.0.1:{port}"), "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--etcd-endpoints", "http://127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bind DNS"), "{}", String::from_utf8_lossy(&out.stderr));
}
