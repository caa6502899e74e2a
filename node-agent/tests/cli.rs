//! The binary's flags: --help, usage errors, environment variables.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use harness::{free_port, Etcd, Redis, Service};
use topology::records::Role;

#[test]
fn help_documents_every_flag_with_its_env_var() {
    let help = harness::assert_documents_flags(
        "node-agent",
        &[
            ("--cluster", "REDIS_TOPOLOGY_CLUSTER"),
            ("--node", "REDIS_TOPOLOGY_NODE"),
            ("--redis", "REDIS_TOPOLOGY_REDIS"),
            ("--advertise-address", "REDIS_TOPOLOGY_ADVERTISE_ADDRESS"),
            ("--advertise-port", "REDIS_TOPOLOGY_ADVERTISE_PORT"),
            ("--interval", "REDIS_TOPOLOGY_INTERVAL_MS"),
            ("--redis-timeout-ms", "REDIS_TOPOLOGY_REDIS_TIMEOUT_MS"),
            ("--lease-ttl", "REDIS_TOPOLOGY_LEASE_TTL_SECS"),
            ("--down-grace-secs", "REDIS_TOPOLOGY_DOWN_GRACE_SECS"),
            ("--self-fence-after-ms", "REDIS_TOPOLOGY_SELF_FENCE_AFTER_MS"),
            ("--redis-user", "REDIS_TOPOLOGY_REDIS_USER"),
            ("--redis-password-file", "REDIS_TOPOLOGY_REDIS_PASSWORD_FILE"),
            ("--listen", "REDIS_TOPOLOGY_LISTEN"),
            ("--etcd-endpoints", "ETCDCTL_ENDPOINTS"),
            ("--etcd-prefix", "REDIS_TOPOLOGY_ETCD_PREFIX"),
            ("--log-format", "REDIS_TOPOLOGY_LOG_FORMAT"),
        ],
    );
    for alias in ["interval-ms", "lease-ttl-secs", "REDIS_TOPOLOGY_REDIS_PASSWORD"] {
        assert!(help.contains(alias), "--help lacks {alias}:\n{help}");
    }
}

#[test]
fn bad_settings_are_usage_errors_that_name_the_problem() {
    let run = |args: &[&str]| {
        let out = Command::new(harness::binary("node-agent"))
            .args(args)
            .env_remove("REDIS_TOPOLOGY_REDIS_PASSWORD")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let cases: [(&[&str], &str); 9] = [
        (&["--node", "node-1"], "--cluster"),
        (&["--cluster", "Redis_1", "--node", "node-1"], "cluster name"),
        (&["--cluster", "redis-1", "--node", "master"], "reserved"),
        (&["--cluster", "redis-1", "--node", "node-1", "--redis", "127.0.0.1:0"], "port"),
        (&["--cluster", "redis-1", "--node", "node-1", "--interval", "0"], "--interval"),
        (&["--cluster", "redis-1", "--node", "node-1", "--redis-user", "agent"], "needs a password"),
        (&["--cluster", "redis-1", "--node", "node-1", "--redis-password-file", "/nonexistent/pw"], "/nonexistent/pw"),
        (&["--cluster", "redis-1", "--node", "node-1", "--lease-ttl", "2", "--self-fence-after-ms", "2000"], "shorter than the lease TTL"),
        (&["--cluster", "redis-1", "--node", "node-1", "--lease-ttl", "2", "--self-fence-after-ms", "999"], "at least half the lease TTL"),
    ];
    for (args, names) in cases {
        let (code, stderr) = run(args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(names), "{args:?}: expected {names:?} in {stderr}");
    }
}

#[tokio::test]
async fn environment_variables_configure_it_and_sigterm_stops_it() {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let mut client = etcd.client().await;
    let http_port = free_port();
    let prefix = prefix();
    let (listen, endpoint, target) = (format!("127.0.0.1:{http_port}"), etcd.endpoint(), redis.host_port());
    let mut service = Service::start(
        "node-agent",
        &[],
        &[
            ("REDIS_TOPOLOGY_CLUSTER", "redis-1"),
            ("REDIS_TOPOLOGY_NODE", "node-7"),
            ("REDIS_TOPOLOGY_REDIS", &target),
            ("REDIS_TOPOLOGY_ADVERTISE_ADDRESS", "10.9.8.7"),
            ("REDIS_TOPOLOGY_ADVERTISE_PORT", "6400"),
            ("REDIS_TOPOLOGY_INTERVAL_MS", "100"),
            ("REDIS_TOPOLOGY_LEASE_TTL_SECS", "3"),
            ("ETCDCTL_ENDPOINTS", &endpoint),
            ("REDIS_TOPOLOGY_ETCD_PREFIX", &prefix),
            ("REDIS_TOPOLOGY_LISTEN", &listen),
            ("REDIS_TOPOLOGY_LOG_FORMAT", "json"),
        ],
    );
    service.wait_http(http_port);
    let key = topology::Keys::new(&prefix).node("redis-1", "node-7");
    let (stored, _) = wait_registration(&mut client, &key, "registered", Duration::from_secs(10), |s| s.record.healthy).await;
    assert_eq!((stored.record.address.as_str(), stored.record.port, stored.record.role), ("10.9.8.7", 6400, Role::Master));
    assert_eq!(client.lease_time_to_live(stored.lease, None).await.unwrap().granted_ttl(), 3);
    // /healthz follows the shared conventions; unknown paths and methods are JSON errors.
    let http = reqwest::Client::new();
    let base = format!("http://{listen}");
    let resp = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["status"], "ok");
    let resp = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.json::<serde_json::Value>().await.unwrap()["error"].is_string());
    let resp = http.post(format!("{base}/status")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let status: serde_json::Value = http.get(format!("{base}/status")).send().await.unwrap().json().await.unwrap();
    assert_eq!((status["cluster"].as_str(), status["node"].as_str()), (Some("redis-1"), Some("node-7")), "{status}");
    assert_eq!(status["key"], key.as_str(), "{status}");

    let status = service.process().terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = service.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("registered in etcd")), "{log}");
}
