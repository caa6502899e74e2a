#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The whole system secured: etcd with client TLS (certificates made in the
//! test) and auth on, every service and the operator's command connecting as a
//! user whose role may touch only the installation's prefix; redis with
//! `requirepass`, `masterauth` and an ACL user for the services that may send
//! only their commands; HAProxy's health check authenticating.

use std::process::Command;
use std::time::Duration;

use counter::{read_list_as, Destination, Pace, Writer};
use service::redis_auth::Credentials;
use harness::stack::{Stack, StackOptions, CLUSTER, SECURE_PREFIX};

const PACE: Pace = Pace { per_second: 300, count: None, timeout: Duration::from_secs(5) };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_switches_over_against_etcd_with_tls_and_auth_and_redis_with_acls() {
    let mut stack = Stack::start(StackOptions { haproxy: true, secure_etcd: true, redis_auth: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("DNS to name node-1", Duration::from_secs(10), || {
        stack.dns_master_port() == Some(stack.nodes[0].redis.port())
    });

    let through_haproxy = Destination::Fixed(stack.write.unwrap());
    // A client is redis's `default` user, behind requirepass.
    let client = Credentials::new(None, Some(harness::redis::admin_password()));
    let writer = Writer::start_as(through_haproxy.clone(), "secure-ids", PACE, client.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = writer.stop().await.unwrap();
    let list = read_list_as(&through_haproxy, "secure-ids", Duration::from_secs(10), &client).await.unwrap();
    let verdict = tally.check(&list);
    assert!(verdict.acked > 100, "writes went through: {verdict}");
    assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{verdict}");
    assert_eq!(stack.nodes[1].redis.role(), "master");
    for i in [0, 2] {
        harness::wait_until("the slaves to sync as the replica user", Duration::from_secs(10), || {
            stack.nodes[i].redis.info_field("master_link_status").as_deref() == Some("up")
        });
    }
    harness::wait_until("DNS to name node-2", Duration::from_secs(10), || {
        stack.dns_master_port() == Some(stack.nodes[1].redis.port())
    });

    // The dictator did every step as the service user: nothing refused (NOPERM).
    let status = stack.status().await.unwrap();
    let report = &status["report"];
    assert_eq!(report["failed"], serde_json::json!([]), "{status}");
    assert_eq!(report["lagging"], serde_json::json!([]), "{status}");
    assert!(!status.to_string().to_lowercase().contains("noperm") && !stack.dictator_log().to_lowercase().contains("noperm"), "{status}");

    // An automatic failover: the observer asks the slaves (INFO, CONFIG GET) as
    // the service user, and moves the master through its txn on the prefix.
    stack.nodes[1].redis.kill();
    harness::wait_until("an automatic failover under ACLs", Duration::from_secs(30), || {
        [0, 2].into_iter().any(|i| stack.nodes[i].redis.role() == "master")
    });
    let new = [0, 2].into_iter().find(|i| stack.nodes[*i].redis.role() == "master").unwrap();
    let new_master = serde_json::json!(stack.nodes[new].redis.host_port());
    harness::wait_until_async("the failover applied", Duration::from_secs(30), || async {
        stack.status().await.is_some_and(|s| s["report"]["master"] == new_master && s["report"]["failed"] == serde_json::json!([]))
    })
    .await;
    harness::wait_until("DNS to name the new master", Duration::from_secs(30), || {
        stack.dns_master_port() == Some(stack.nodes[new].redis.port())
    });
    let logs = [stack.dictator_log(), stack.observers[0].0.log(), stack.nodes[0].agent.as_ref().unwrap().log()];
    for log in logs {
        assert!(!log.to_lowercase().contains("noperm"), "{log}");
    }

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
        .env("ETCDCTL_ENDPOINTS", stack.etcd.endpoint())
        .env("REDIS_TOPOLOGY_ETCD_PREFIX", SECURE_PREFIX)
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

#[test]
fn the_readme_documents_the_acls_the_tests_run() {
    use harness::redis::{CHECK_ACL, CHECK_USER, REPLICA_ACL, REPLICA_USER, SERVICE_ACL, SERVICE_USER};
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    for (user, acl) in [(SERVICE_USER, SERVICE_ACL), (REPLICA_USER, REPLICA_ACL), (CHECK_USER, CHECK_ACL)] {
        let line = format!("user {user} on >PASSWORD {acl}");
        assert!(readme.contains(&line), "README.md lacks `{line}`");
    }
}
