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
            ("--cluster", "CLUSTER"),
            ("--node", "NODE"),
            ("--redis", "REDIS"),
            ("--advertise-address", "ADVERTISE_ADDRESS"),
            ("--advertise-port", "ADVERTISE_PORT"),
            ("--interval", "INTERVAL_MS"),
            ("--redis-timeout-ms", "REDIS_TIMEOUT_MS"),
            ("--lease-ttl", "LEASE_TTL_SECS"),
            ("--down-grace-secs", "DOWN_GRACE_SECS"),
            ("--self-fence-after-ms", "SELF_FENCE_AFTER_MS"),
            ("--redis-user", "REDIS_USER"),
            ("--redis-password-file", "REDIS_PASSWORD_FILE"),
            ("--listen", "LISTEN"),
            ("--etcd-endpoints", "ETCD_ENDPOINTS"),
            ("--etcd-prefix", "ETCD_PREFIX"),
            ("--log-format", "LOG_FORMAT"),
        ],
    );
    for alias in ["interval-ms", "lease-ttl-secs", "REDIS_PASSWORD"] {
        assert!(help.contains(alias), "--help lacks {alias}:\n{help}");
    }
}

#[test]
fn bad_settings_are_usage_errors_that_name_the_problem() {
    let run = |args: &[&str]| {
        let out = Command::new(harness::binary("node-agent"))
            .args(args)
            .env_remove("REDIS_PASSWORD")
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
            ("CLUSTER", "redis-1"),
            ("NODE", "node-7"),
            ("REDIS", &target),
            ("ADVERTISE_ADDRESS", "10.9.8.7"),
            ("ADVERTISE_PORT", "6400"),
            ("INTERVAL_MS", "100"),
            ("LEASE_TTL_SECS", "3"),
            ("ETCD_ENDPOINTS", &endpoint),
            ("ETCD_PREFIX", &prefix),
            ("LISTEN", &listen),
            ("LOG_FORMAT", "json"),
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
