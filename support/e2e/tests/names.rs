#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! One rule for names: a topology is defined (`redis-topology define`, through
//! `scripts/define-topology.sh`; `dictator
//! check --cluster`) only if every member is an IP address or a node name of its
//! cluster in the zone dnsd serves, so nothing can be applied that dnsd would refuse
//! to publish.

use std::process::{Command, Output};
use std::time::Duration;

use harness::{free_port, Etcd, Service};

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn define(etcd: &Etcd, domain: Option<&str>, topology: &str) -> Output {
    // The script runs redis-topology built from these sources, not a stale release build.
    let command = harness::binary("redis-topology");
    let mut cmd = Command::new(repo().join("scripts/define-topology.sh"));
    cmd.env("REDIS_TOPOLOGY_BIN_DIR", command.parent().unwrap());
    cmd.args(["redis-1", "-"]).env("ETCDCTL_ENDPOINTS", etcd.endpoint()).env_remove("REDIS_TOPOLOGY_ETCD_PREFIX").env_remove("REDIS_TOPOLOGY_DOMAIN");
    if let Some(domain) = domain {
        cmd.env("REDIS_TOPOLOGY_DOMAIN", domain);
    }
    let mut child = cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), topology.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

async fn defined(etcd: &Etcd) -> Option<String> {
    let got = etcd.client().await.get("/config/redis-1/topology", None).await.unwrap();
    got.kvs().first().map(|kv| kv.value_str().unwrap().to_string())
}

fn master(address: &str) -> String {
    format!(r#"{{"master":{{"address":"{address}"}},"slaves":[{{"address":"10.0.0.2"}}]}}"#)
}

#[tokio::test]
async fn define_topology_refuses_names_dnsd_cannot_publish_in_its_domain() {
    let etcd = Etcd::start();
    let (http, dns) = (free_port(), free_port());
    let mut dnsd = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{http}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--etcd-endpoints", &etcd.endpoint(), "--domain", "example.org"],
        &[],
    );
    dnsd.wait_http(http);
    harness::wait_until_async("dnsd records its domain", Duration::from_secs(10), || async {
        let got = etcd.client().await.get("/domain", None).await.unwrap();
        !got.kvs().is_empty()
    })
    .await;

    for (address, why) in [
        ("node-1.redis-1.cluster.local", "the default domain, not dnsd's"),
        ("node-1.redis-2.example.org", "another cluster's node"),
        ("redis.example.com", "a host name"),
        ("master.redis-1.example.org", "a name dnsd serves that is no node"),
    ] {
        let out = define(&etcd, None, &master(address));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{why}: {stderr}");
        assert!(
            stderr.contains(&format!("master.address: {address} is not a node of cluster redis-1; only node names (<node>.redis-1.example.org)")),
            "{why}: {stderr}"
        );
        assert_eq!(defined(&etcd).await, None, "{why}: written anyway");
    }
    // DOMAIN set to something other than what dnsd serves: refused, naming both.
    let out = define(&etcd, Some("cluster.local"), &master("node-1.redis-1.cluster.local"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DOMAIN is cluster.local but dnsd serves example.org"), "{stderr}");
    assert_eq!(defined(&etcd).await, None);

    let out = define(&etcd, None, &master("Node-1.redis-1.example.org"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        defined(&etcd).await.as_deref(),
        Some(r#"{"master":{"address":"node-1.redis-1.example.org"},"slaves":[{"address":"10.0.0.2"}]}"#)
    );
}

#[test]
fn dictator_check_applies_the_names_rule_only_for_a_cluster() {
    let check = |args: &[&str], topology: &str| {
        let mut child = Command::new(harness::binary("dictator"))
            .arg("check").args(args).arg("-")
            .stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped())
            .spawn().unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), topology.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let host = master("redis.example.com");
    assert!(check(&[], &host).status.success(), "without --cluster only the JSON is checked");
    let out = check(&["--cluster", "redis-1"], &host);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-: master.address: redis.example.com is not a node of cluster redis-1; only node names (<node>.redis-1.cluster.local) and IP addresses can be used"),
        "{}", String::from_utf8_lossy(&out.stderr));
    let node = master("node-1.redis-1.example.org");
    assert_eq!(check(&["--cluster", "redis-1"], &node).status.code(), Some(2), "default domain is cluster.local");
    assert!(check(&["--cluster", "redis-1", "--domain", "example.org"], &node).status.success());
}
