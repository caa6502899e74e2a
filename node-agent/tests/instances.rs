//! One agent watching several redis-servers, each registered as its own node in
//! its own cluster (`--instance`, `--instances-file`).

mod common;

use std::time::Duration;

use common::*;
use harness::{free_port, Etcd, Redis, Service};
use serde_json::Value;
use topology::Keys;

const CLUSTERS: [&str; 3] = ["alpha", "beta", "gamma"];

/// `GET path` on the agent: the status code and the JSON body.
async fn get(port: u16, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}")).await.expect("the agent answers HTTP");
    let code = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (code, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
}

#[tokio::test]
async fn one_agent_registers_three_instances_marks_only_the_dead_one_and_drops_all_at_stop() {
    let etcd = Etcd::start();
    let mut redis: Vec<Redis> = CLUSTERS.iter().map(|_| Redis::start()).collect();
    let mut client = etcd.client().await;
    let prefix = prefix();
    let keys = Keys::new(&prefix);
    let node_keys: Vec<String> = CLUSTERS.iter().map(|c| keys.node(c, "node-1")).collect();
    // Two instances on the command line, the third from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("instances");
    std::fs::write(&file, format!("# this host's third instance\ngamma/node-1={},advertise=node-1.gamma.example.org\n", redis[2].host_port()))
        .unwrap();
    let http_port = free_port();
    let (listen, endpoint, file) = (format!("127.0.0.1:{http_port}"), etcd.endpoint(), file.display().to_string());
    let first = format!("alpha/node-1={}", redis[0].host_port());
    let second = format!("beta/node-1={}", redis[1].host_port());
    let args = [
        "--instance", &first, "--instance", &second, "--instances-file", &file, "--etcd-endpoints", &endpoint,
        "--etcd-prefix", &prefix, "--listen", &listen, "--interval", "100", "--lease-ttl", "5", "--host", "host-a",
    ];
    let mut agent = Service::start("node-agent", &args, &[]);
    agent.wait_http(http_port);

    // All three registered, healthy, each with its own advertised address, all
    // under the agent's one lease; each cluster got its first-contact trigger.
    let mut leases = Vec::new();
    for (i, key) in node_keys.iter().enumerate() {
        let (stored, _) = wait_registration(&mut client, key, key, Duration::from_secs(10), |s| s.record.healthy).await;
        assert_eq!(stored.record.run_id, run_id(&redis[i]), "{key}");
        assert_eq!(stored.record.host.as_deref(), Some("host-a"));
        leases.push(stored.lease);
        wait_new_trigger(&mut client, &keys.trigger(CLUSTERS[i]), None, Duration::from_secs(5)).await;
    }
    assert_eq!(registration(&mut client, &node_keys[0]).await.unwrap().record.address, "127.0.0.1");
    assert_eq!(registration(&mut client, &node_keys[2]).await.unwrap().record.address, "node-1.gamma.example.org");
    assert_eq!(registration(&mut client, &node_keys[2]).await.unwrap().record.port, redis[2].port());
    assert!(leases.iter().all(|l| *l != 0 && *l == leases[0]), "one lease for all instances: {leases:?}");

    // The API names each instance; the short role checks are ambiguous now.
    let (code, list) = get(http_port, "/instances").await;
    assert_eq!(code, 200);
    let listed: Vec<&str> = list["instances"].as_array().unwrap().iter().map(|i| i["cluster"].as_str().unwrap()).collect();
    assert_eq!(listed, CLUSTERS);
    assert_eq!(get(http_port, "/status").await.1["instances"].as_array().map(Vec::len), Some(3));
    let (code, beta) = get(http_port, "/instances/beta/node-1/status").await;
    assert_eq!((code, &beta["key"], &beta["registered"], &beta["role"]), (200, &Value::from(node_keys[1].clone()), &Value::from(true), &Value::from("master")));
    let (code, body) = get(http_port, "/master").await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("/instances/<cluster>/<node>/master"), "{body}");
    let (code, body) = get(http_port, "/instances/beta/node-2/master").await;
    assert_eq!(code, 404, "{body}");
    // No topology is defined: the check asks etcd and says so.
    let (code, body) = get(http_port, "/instances/alpha/node-1/master").await;
    assert_eq!(code, 503, "{body}");
    // Each check judges its own instance against its own cluster's topology.
    let alpha = format!(r#"{{"master":{{"address":"127.0.0.1","port":{}}},"slaves":[]}}"#, redis[0].port());
    client.put(keys.topology("alpha"), alpha, None).await.unwrap();
    let (code, body) = get(http_port, "/instances/alpha/node-1/master").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = get(http_port, "/instances/beta/node-1/master").await;
    assert_eq!(code, 503, "beta has no topology: {body}");
    let (code, body) = get(http_port, "/instances/alpha/node-1/replica").await;
    assert_eq!(code, 503, "{body}");

    // One redis frozen: only its registration turns unhealthy, and the others'
    // probes go on (a change on gamma is written while beta hangs).
    redis[1].freeze(true);
    wait_registration(&mut client, &node_keys[1], "beta unhealthy", Duration::from_secs(5), |s| !s.record.healthy).await;
    redis[2].cmd::<()>(&["CONFIG", "SET", "min-replicas-max-lag", "10"]);
    redis[2].cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", "1000001"]);
    wait_registration(&mut client, &node_keys[2], "gamma fenced", Duration::from_secs(5), |s| s.record.fenced).await;
    redis[1].freeze(false);
    wait_registration(&mut client, &node_keys[1], "beta healthy again", Duration::from_secs(5), |s| s.record.healthy).await;

    // One redis killed: only its registration turns unhealthy.
    redis[0].kill();
    wait_registration(&mut client, &node_keys[0], "alpha unhealthy", Duration::from_secs(5), |s| !s.record.healthy).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for key in &node_keys[1..] {
        let stored = registration(&mut client, key).await.expect("still registered");
        assert!(stored.record.healthy, "{key} turned unhealthy with another instance's redis: {:?}", stored.record);
    }
    let (_, alpha) = get(http_port, "/instances/alpha/node-1/status").await;
    assert_eq!(alpha["redis_healthy"], false, "{alpha}");

    // SIGTERM: the lease is revoked, every registration leaves at once.
    let status = agent.process().terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "did not exit 0 on SIGTERM: {status:?}\n{}", agent.log());
    for key in &node_keys {
        assert!(registration(&mut client, key).await.is_none(), "{key} still registered after SIGTERM");
    }
}

#[tokio::test]
async fn a_killed_agent_drops_all_its_registrations_with_its_lease() {
    let etcd = Etcd::start();
    let redis: Vec<Redis> = (0..2).map(|_| Redis::start()).collect();
    let mut client = etcd.client().await;
    let prefix = prefix();
    let keys = Keys::new(&prefix);
    let http_port = free_port();
    let (listen, endpoint) = (format!("127.0.0.1:{http_port}"), etcd.endpoint());
    // Both instances from the environment, space-separated.
    let instances = format!("alpha/node-1={} beta/node-1={}", redis[0].host_port(), redis[1].host_port());
    let args = ["--etcd-endpoints", &endpoint, "--etcd-prefix", &prefix, "--listen", &listen, "--interval", "100", "--lease-ttl", "2"];
    let mut agent = Service::start("node-agent", &args, &[("REDIS_TOPOLOGY_INSTANCES", &instances)]);
    agent.wait_http(http_port);
    let node_keys = [keys.node("alpha", "node-1"), keys.node("beta", "node-1")];
    for key in &node_keys {
        wait_registration(&mut client, key, key, Duration::from_secs(10), |s| s.record.healthy).await;
    }
    agent.process().kill();
    for key in &node_keys {
        wait_absent(&mut client, key, "the registration to expire with the dead agent's lease", Duration::from_secs(10)).await;
    }
}

#[test]
fn bad_or_clashing_instances_are_refused_at_start() {
    let node_agent = harness::binary("node-agent");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&node_agent).args(args).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = run(&["--instance", "alpha/node-1=127.0.0.1:7001", "--instance", "alpha/node-1=127.0.0.1:7002"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("alpha/node-1 is given twice"), "{err}");
    let (code, err) = run(&["--instance", "alpha/node-1=127.0.0.1:7001", "--cluster", "beta", "--node", "node-1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
    let (code, err) = run(&["--instance", "alpha=127.0.0.1:7001"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expected <cluster>/<node>=<host:port>"), "{err}");
    let (code, err) = run(&["--instances-file", "/nonexistent/instances"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--instances-file /nonexistent/instances"), "{err}");
}
