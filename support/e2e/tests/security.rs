#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The whole system against a secured store: etcd with client TLS (certificates
//! made in the test) and auth on, every service and the operator's command
//! connecting as a user whose role may touch only the installation's prefix.

use std::process::Command;
use std::time::Duration;

use counter::{read_list, Destination, Pace, Writer};
use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN, SECURE_PREFIX};

const PACE: Pace = Pace { per_second: 300, count: None, timeout: Duration::from_secs(5) };

/// The port in the SRV record `_redis._tcp.master.<cluster>` that dnsd serves.
fn dns_master_port(stack: &Stack) -> Option<u16> {
    let out = Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", "-p", &stack.dns.port().to_string(), &format!("@{}", stack.dns.ip())])
        .args(["SRV", &format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_switches_over_against_etcd_with_tls_and_auth() {
    let stack = Stack::start(StackOptions { haproxy: true, secure_etcd: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("DNS to name node-1", Duration::from_secs(10), || {
        dns_master_port(&stack) == Some(stack.nodes[0].redis.port())
    });

    let through_haproxy = Destination::Fixed(stack.write.unwrap());
    let writer = Writer::start(through_haproxy.clone(), "secure-ids", PACE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = writer.stop().await.unwrap();
    let list = read_list(&through_haproxy, "secure-ids", Duration::from_secs(10)).await.unwrap();
    let verdict = tally.check(&list);
    assert!(verdict.acked > 100, "writes went through: {verdict}");
    assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{verdict}");
    assert_eq!(stack.nodes[1].redis.role(), "master");
    harness::wait_until("DNS to name node-2", Duration::from_secs(10), || {
        dns_master_port(&stack) == Some(stack.nodes[1].redis.port())
    });

    // Everything the services wrote lies under the prefix (root sees all keys).
    let mut root = stack.etcd.client().await;
    let all = root.get("", Some(etcd_client::GetOptions::new().with_all_keys().with_keys_only())).await.unwrap();
    let keys: Vec<String> = all.kvs().iter().map(|kv| kv.key_str().unwrap().to_string()).collect();
    assert!(keys.iter().any(|k| k == &format!("{SECURE_PREFIX}/dns/{CLUSTER}")), "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(&format!("{SECURE_PREFIX}/"))), "{keys:?}");

    // The operator's command, configured as etcdctl is (its ETCDCTL_* variables).
    let secure = stack.etcd.secure().unwrap();
    let password = std::fs::read_to_string(&secure.password_file).unwrap();
    let out = Command::new(harness::binary("redis-topology"))
        .args(["--json", "status", CLUSTER])
        .env("ETCD_ENDPOINTS", stack.etcd.endpoint())
        .env("ETCD_PREFIX", SECURE_PREFIX)
        .env("ETCDCTL_CACERT", &secure.ca)
        .env("ETCDCTL_CERT", &secure.client.cert)
        .env("ETCDCTL_KEY", &secure.client.key)
        .env("ETCDCTL_USER", harness::etcd::SERVICE_USER)
        .env("ETCDCTL_PASSWORD", password.trim_end())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&stack.nodes[1].redis.port().to_string()), "{stdout}");
}

#[test]
fn a_service_with_a_wrong_etcd_password_says_so_naming_the_endpoint() {
    let etcd = harness::Etcd::start_secure(SECURE_PREFIX);
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    let mut args = etcd.service_args();
    let at = args.iter().position(|a| a == "--etcd-password-file").unwrap();
    args[at + 1] = wrong.display().to_string();
    let out = Command::new(harness::binary("redis-topology")).args(&args).arg("list").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&etcd.endpoint()) && stderr.contains("authentication failed"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
}
