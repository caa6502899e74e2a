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
    // A nameserver where nothing listens: tests must not use the machine's resolver.
    let nameserver = format!("127.0.0.1:{}", free_port());
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
    // The pause's length is the benchmark's business; the report carries it.
    assert!(report["write_pause_ms"].is_number(), "{report}");
    assert_eq!(b.role(), "master");
    drop(api);
}

/// What an apply could change on `r`: role, upstream, write fence, keys.
fn state(r: &Redis) -> (String, Option<String>, String, i64) {
    let min_replicas = r.cmd::<Vec<String>>(&["CONFIG", "GET", "min-replicas-to-write"]).remove(1);
    (r.role(), r.info_field("master_port"), min_replicas, r.cmd(&["DBSIZE"]))
}

/// `json` padded with trailing spaces (still the same JSON) to exactly `len` bytes.
fn padded(json: &str, len: usize) -> String {
    assert!(json.len() <= len);
    format!("{json}{}", " ".repeat(len - json.len()))
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_changes_nothing() {
    let (a, b) = (Redis::start(), Redis::start());
    let api = start_dictator(&[]);
    let before = (state(&a), state(&b));
    let unchanged = |what: &str| assert_eq!((state(&a), state(&b)), before, "{what} changed redis");
    let limit = service::http::BODY_LIMIT;
    assert_eq!(limit, 64 * 1024, "the documented limit");
    // A topology that makes b a slave of a when it is accepted.
    let good = topo(&a, &[&b]);
    for url in [format!("{}/master", api.base), format!("{}/clusters/redis-2/master", api.base)] {
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
            ("64 KiB, not JSON", "x".repeat(limit), 400, "malformed JSON"),
            ("one byte over 64 KiB", padded(&good, limit + 1), 413, "length limit exceeded"),
        ];
        harness::assert_json_errors(&url, cases).await;
        unchanged(&url);
        for (query, named) in [
            ("force=maybe", "query: Failed to deserialize query string: force: provided string was not `true` or `false`"),
            ("dry_run=2", "query: Failed to deserialize query string: dry_run: provided string was not `true` or `false`"),
            ("force=true&dry_run=yes", "query: Failed to deserialize query string: dry_run: provided string was not `true` or `false`"),
        ] {
            let (status, err) = put(&format!("{url}?{query}"), good.clone()).await;
            assert_eq!(status, 400, "?{query}: {err}");
            assert_eq!(err["error"], named, "?{query}");
            unchanged(query);
        }
    }
    // Wrong method, unknown path, cluster names that are no DNS label.
    let client = reqwest::Client::new();
    let resp = client.get(format!("{}/master", api.base)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let resp = client.put(format!("{}/nope", api.base)).body(good.clone()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());
    let long = "a".repeat(64);
    for cluster in ["Bad_Name", "-redis", long.as_str()] {
        let (status, err) = put(&format!("{}/clusters/{cluster}/master", api.base), good.clone()).await;
        assert_eq!(status, 404, "{cluster}: {err}");
        assert!(err["error"].as_str().unwrap().starts_with("cluster name"), "{cluster}: {err}");
    }
    // A name that cannot be resolved (the nameserver does not answer): 502, named.
    let url = format!("{}/master", api.base);
    let (status, err) = put(&url, r#"{"master":{"address":"node-1.redis-1.cluster.local"}}"#).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"].as_str().unwrap().contains("master: cannot resolve node-1.redis-1.cluster.local"), "{err}");
    unchanged("the refusals");

    // Exactly 64 KiB is within the limit: planned, then applied.
    let (status, report) = put(&format!("{url}?dry_run=true"), padded(&good, limit)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((report["dry_run"].clone(), report["changed"].clone()), (json!(true), json!(true)), "{report}");
    unchanged("a dry run");
    let (status, report) = put(&url, padded(&good, limit)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(b.role(), "slave", "{report}");
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
    let nameserver = format!("127.0.0.1:{}", free_port());
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
        &[("LISTEN", &format!("127.0.0.1:{port}")), ("LOG_FORMAT", "json"), ("NAMESERVER", "127.0.0.1:1")],
    );
    service.wait_http(port);
    let status = service.process().terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "did not exit cleanly on SIGTERM: {status:?}");
    let log = service.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("HTTP API listening")), "{log}");
}
