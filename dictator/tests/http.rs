#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The real `dictator` binary: HTTP API status codes, the CLI mode, --help, SIGTERM.

use std::time::Duration;

use harness::{free_port, Redis, Service};
use serde_json::{json, Value};

struct Api {
    _service: Service,
    base: String,
}

fn start_dictator(extra: &[&str]) -> Api {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    // A nameserver that never answers: tests must not use the machine's resolver.
    let nameserver = harness::silent_nameserver().to_string();
    let mut args = vec!["--listen", &listen, "--nameserver", &nameserver, "--cluster", "redis-1"];
    args.extend_from_slice(extra);
    let mut service = Service::start("dictator", &args, &[]);
    service.wait_http(port);
    Api { _service: service, base: format!("http://{listen}") }
}

async fn put(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    harness::put_json(url, body).await
}

fn topo(master: &Redis, slaves: &[&Redis]) -> String {
    json!({
        "master": {"address": "127.0.0.1", "port": master.port()},
        "slaves": slaves.iter().map(|s| json!({"address": "127.0.0.1", "port": s.port()})).collect::<Vec<_>>(),
    })
    .to_string()
}

#[tokio::test]
async fn applies_over_both_endpoints_and_reports_each_step() {
    let (a, b) = (Redis::start(), Redis::start());
    let api = start_dictator(&[]);
    let (status, report) = put(&format!("{}/clusters/redis-2/master", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["changed"], true);
    assert_eq!(report["cluster"], "redis-2");
    assert_eq!(report["master"], a.host_port());
    let steps = report["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["action"].is_string() && s["node"].is_string() && s["ms"].is_number()), "{report}");
    assert_eq!(b.role(), "slave");

    // The original endpoint applies to --cluster.
    let (status, report) = put(&format!("{}/master", api.base), topo(&b, &[&a])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["cluster"], "redis-1");
    assert!(report["write_pause_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(b.role(), "master");
    drop(api);
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let (a, b) = (Redis::start(), Redis::start());
    let api = start_dictator(&[]);
    let url = format!("{}/master", api.base);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"master\":".into(), 400, "malformed JSON"),
        ("unknown field", r#"{"master":{"address":"127.0.0.1"},"slave":[]}"#.into(), 422, "slave"),
        ("bad port", r#"{"master":{"address":"127.0.0.1","port":70000}}"#.into(), 422, "master.port"),
        (
            "one instance twice",
            json!({"master": {"address": "127.0.0.1", "port": a.port()}, "slaves": [{"address": "127.0.0.1", "port": a.port()}]}).to_string(),
            422,
            "slaves[0]",
        ),
        ("too large", "x".repeat(100 * 1024), 413, ""),
    ];
    harness::assert_json_errors(&url, cases).await;
    // Wrong method, unknown path, bad query, bad cluster name.
    let client = reqwest::Client::new();
    let resp = client.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let resp = client.put(format!("{}/nope", api.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let (status, _) = put(&format!("{url}?force=maybe"), topo(&a, &[&b])).await;
    assert_eq!(status, 400);
    let (status, _) = put(&format!("{}/clusters/Bad_Name/master", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 404);
    // A name that cannot be resolved (the nameserver does not answer): 502, named.
    let (status, err) = put(&url, r#"{"master":{"address":"node-1.redis-1.cluster.local"}}"#).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("master: cannot resolve node-1.redis-1.cluster.local"), "{err}");
    // Nothing was touched.
    assert_eq!(a.role(), "master");
    assert_eq!(b.role(), "master");
    drop(api);
}

#[tokio::test]
async fn refusal_is_409_with_the_reason_and_force_applies() {
    let (a, b) = (Redis::start(), Redis::start());
    b.cmd::<()>(&["SET", "precious", "1"]);
    let api = start_dictator(&[]);
    let (status, err) = put(&format!("{}/master", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 409, "{err}");
    assert!(err["error"].as_str().unwrap().contains("force=true"));
    let (status, report) = put(&format!("{}/master?dry_run=true", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 200);
    assert!(report["refusal"].is_string() && report["members"].as_array().unwrap().len() == 2, "{report}");
    assert_eq!(b.role(), "master");
    let (status, report) = put(&format!("{}/master?force=true", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["forced"].as_array().unwrap().len(), 1);
    assert_eq!(b.role(), "slave");
}

#[tokio::test]
async fn cli_apply_prints_a_report_and_exits_by_outcome() {
    let (a, b) = (Redis::start(), Redis::start());
    let nameserver = harness::silent_nameserver().to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(harness::binary("dictator"))
            .args(["--nameserver", &nameserver])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["apply", "--master", &a.host_port(), "--slave", &b.host_port()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["changed"], true);
    assert_eq!(b.role(), "slave");

    let out = run(&["apply", "--master", &a.host_port(), "--slave", &a.host_port()]);
    assert_eq!(out.status.code(), Some(2), "duplicate member is a usage error");
    let mut dead = Redis::start();
    dead.kill();
    let out = run(&["apply", "--master", &dead.host_port()]);
    assert_eq!(out.status.code(), Some(1));
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["status"], 502);
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    harness::assert_documents_flags(
        "dictator",
        &[
            ("--listen", "LISTEN"),
            ("--cluster", "CLUSTER"),
            ("--nameserver", "NAMESERVER"),
            ("--catch-up-timeout-ms", "CATCH_UP_TIMEOUT_MS"),
            ("--verify-timeout-ms", "VERIFY_TIMEOUT_MS"),
            ("--lock-wait-ms", "LOCK_WAIT_MS"),
            ("--redis-connect-timeout-ms", "REDIS_CONNECT_TIMEOUT_MS"),
            ("--redis-command-timeout-ms", "REDIS_COMMAND_TIMEOUT_MS"),
            ("--min-replicas-to-write", "MIN_REPLICAS_TO_WRITE"),
            ("--min-replicas-max-lag", "MIN_REPLICAS_MAX_LAG"),
            ("--log-format", "LOG_FORMAT"),
            ("--redis-user", "REDIS_USER"),
            ("--redis-password-file", "REDIS_PASSWORD_FILE"),
        ],
    );
}

#[tokio::test]
async fn sigterm_stops_it_cleanly_and_env_vars_configure_it() {
    let port = free_port();
    let mut service = Service::start(
        "dictator",
        &[],
        &[("LISTEN", &format!("127.0.0.1:{port}")), ("LOG_FORMAT", "json"), ("NAMESERVER", &harness::silent_nameserver().to_string())],
    );
    service.wait_http(port);
    let status = service.process().terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "did not exit cleanly on SIGTERM: {status:?}");
    let log = service.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("HTTP API listening")), "{log}");
}
