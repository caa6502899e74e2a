#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The real `dictator` binary: HTTP API status codes, the CLI mode, --help, SIGTERM.

use std::time::Duration;

use harness::{free_port, Redis, Service};
use serde_json::{json, Value};

struct Api {
    service: Service,
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
    Api { service, base: format!("http://{listen}") }
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
            (
                "a durability two slaves short",
                json!({"master": {"address": "127.0.0.1", "port": a.port()}, "slaves": [{"address": "127.0.0.1", "port": b.port()}],
                       "durability": {"min_replicas_to_write": 3}}).to_string(),
                422,
                "durability.min_replicas_to_write: is 3 but the topology has 1 slave(s)",
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
            ("down=node-1", "query: Failed to deserialize query string: down: invalid socket address syntax"),
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
    // The master holding the writes at stake is fenced, and the report says so.
    assert_eq!(err["report"]["steps"][0]["action"], "quarantine", "{err}");
    assert_eq!(err["report"]["steps"][0]["node"], b.host_port(), "{err}");
    assert!(is_fenced(&b));
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
            ("--listen", "REDIS_TOPOLOGY_LISTEN"),
            ("--cluster", "REDIS_TOPOLOGY_CLUSTER"),
            ("--nameserver", "REDIS_TOPOLOGY_NAMESERVER"),
            ("--catch-up-timeout-ms", "REDIS_TOPOLOGY_CATCH_UP_TIMEOUT_MS"),
            ("--verify-timeout-ms", "REDIS_TOPOLOGY_VERIFY_TIMEOUT_MS"),
            ("--lock-wait-ms", "REDIS_TOPOLOGY_LOCK_WAIT_MS"),
            ("--redis-connect-timeout-ms", "REDIS_TOPOLOGY_REDIS_CONNECT_TIMEOUT_MS"),
            ("--redis-command-timeout-ms", "REDIS_TOPOLOGY_REDIS_COMMAND_TIMEOUT_MS"),
            ("--min-replicas-to-write", "REDIS_TOPOLOGY_MIN_REPLICAS_TO_WRITE"),
            ("--min-replicas-max-lag", "REDIS_TOPOLOGY_MIN_REPLICAS_MAX_LAG"),
            ("--log-format", "REDIS_TOPOLOGY_LOG_FORMAT"),
            ("--etcd-endpoints", "ETCDCTL_ENDPOINTS"),
            ("--etcd-prefix", "REDIS_TOPOLOGY_ETCD_PREFIX"),
            ("--redis-user", "REDIS_TOPOLOGY_REDIS_USER"),
            ("--redis-password-file", "REDIS_TOPOLOGY_REDIS_PASSWORD_FILE"),
        ],
    );
}

#[tokio::test]
async fn sigterm_stops_it_cleanly_and_env_vars_configure_it() {
    let port = free_port();
    let mut service = Service::start(
        "dictator",
        &[],
        &[("REDIS_TOPOLOGY_LISTEN", &format!("127.0.0.1:{port}")), ("REDIS_TOPOLOGY_LOG_FORMAT", "json"), ("REDIS_TOPOLOGY_NAMESERVER", &harness::silent_nameserver().to_string())],
    );
    service.wait_http(port);
    let status = service.process().terminate(Duration::from_secs(5));
    assert!(status.is_some_and(|s| s.success()), "did not exit cleanly on SIGTERM: {status:?}");
    let log = service.log();
    assert!(log.lines().any(|l| l.starts_with('{') && l.contains("HTTP API listening")), "{log}");
}

// ---------------------------------------------------------------------------
// Applies held up on purpose: `slave` replicates `master` as ACL user "repl", and
// turning that user off stalls the link while `slave` keeps `master`'s history.
// A catch-up of `slave` then cannot finish until the test turns the user on again.

fn replicate_as_repl_user(master: &Redis, slave: &Redis) {
    master.cmd::<()>(&["ACL", "SETUSER", "repl", "on", ">pw", "+@all", "~*"]);
    slave.cmd::<()>(&["CONFIG", "SET", "masteruser", "repl"]);
    slave.cmd::<()>(&["CONFIG", "SET", "masterauth", "pw"]);
    slave.cmd::<()>(&["REPLICAOF", "127.0.0.1", &master.port().to_string()]);
    harness::wait_until("the replication link", Duration::from_secs(20), || {
        slave.info_field("master_link_status").as_deref() == Some("up")
    });
}

fn cut_link(master: &Redis) {
    master.cmd::<()>(&["ACL", "SETUSER", "repl", "off"]);
    master.cmd::<i64>(&["CLIENT", "KILL", "USER", "repl"]);
}

fn restore_link(master: &Redis) {
    master.cmd::<()>(&["ACL", "SETUSER", "repl", "on"]);
}

fn is_fenced(r: &Redis) -> bool {
    let value: u32 = r.cmd::<Vec<String>>(&["CONFIG", "GET", "min-replicas-to-write"])[1].parse().unwrap();
    value >= topology::FENCE_MIN_REPLICAS
}

/// Writes `count` keys `<prefix>:<i>` to `r`; each SET answered OK is acknowledged.
fn write_keys(r: &Redis, prefix: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}:{i}")).collect();
    for key in &keys {
        r.cmd::<()>(&["SET", key, "acked"]);
    }
    keys
}

fn assert_has_keys(r: &Redis, keys: &[String]) {
    let missing: Vec<&String> = keys.iter().filter(|k| r.cmd::<Option<String>>(&["GET", k]).is_none()).collect();
    assert!(missing.is_empty(), "{} lost acknowledged writes: {missing:?}", r.host_port());
}

/// The error a write gets, or None when it was accepted.
fn write_error(r: &Redis, key: &str) -> Option<String> {
    let result: redis::RedisResult<()> = redis::cmd("SET").arg(key).arg("1").query(&mut r.conn());
    result.err().map(|e| e.to_string())
}

/// A (b master, a slave) apply that has fenced a and now waits in a catch-up that
/// cannot finish: a holds writes b has not received, over a cut link.
async fn stalled_apply(api: &Api, a: &Redis, b: &Redis) -> (tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>, Vec<String>) {
    replicate_as_repl_user(a, b);
    let mut acked = write_keys(a, "replicated", 50);
    harness::wait_until("b to apply a's writes", Duration::from_secs(20), || {
        b.cmd::<Option<String>>(&["GET", "replicated:49"]).is_some()
    });
    cut_link(a);
    acked.extend(write_keys(a, "unreplicated", 50));
    let url = format!("{}/master", api.base);
    let body = topo(b, &[a]);
    let first = tokio::spawn(async move { reqwest::Client::new().put(url).body(body).send().await });
    harness::wait_until_async("the first apply to fence a", Duration::from_secs(20), || async { is_fenced(a) }).await;
    assert_eq!(b.role(), "slave", "the apply must still be waiting for b to catch up");
    (first, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_apply_to_a_busy_cluster_gets_409_after_the_lock_wait() {
    let (a, b) = (Redis::start(), Redis::start());
    let (c, d) = (Redis::start(), Redis::start());
    let api = start_dictator(&["--lock-wait-ms", "200", "--catch-up-timeout-ms", "600000"]);
    let (first, acked) = stalled_apply(&api, &a, &b).await;

    // Bounded, so a lock that ignores --lock-wait-ms fails here instead of hanging.
    let url = format!("{}/clusters/redis-1/master", api.base);
    let second = put(&url, topo(&b, &[&a]));
    let (status, err) = tokio::time::timeout(Duration::from_secs(60), second).await.expect("no answer while busy");
    assert_eq!(status, 409, "{err}");
    assert_eq!(
        err["error"],
        "another apply to cluster redis-1 is still running after 200ms; try again",
        "{err}"
    );
    assert_eq!(err["report"], Value::Null, "a refused apply did nothing");
    // Only that cluster waits: another one applies meanwhile.
    let (status, report) = put(&format!("{}/clusters/redis-2/master", api.base), topo(&c, &[&d])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(d.role(), "slave");
    // The busy cluster is as the first apply left it: a fenced, b not promoted.
    assert!(is_fenced(&a));
    assert_eq!(b.role(), "slave");

    restore_link(&a);
    let resp = first.await.unwrap().expect("the first apply answers");
    let status = resp.status().as_u16();
    let report: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(b.role(), "master");
    assert_eq!(a.role(), "slave");
    assert_has_keys(&b, &acked);
}

#[tokio::test]
async fn a_slave_that_cannot_show_the_marker_is_listed_as_lagging() {
    let (a, b) = (Redis::start(), Redis::start());
    let api = start_dictator(&["--verify-timeout-ms", "300"]);
    replicate_as_repl_user(&a, &b);
    cut_link(&a);
    // Something to do: lift a fence an earlier apply left on a; then verify b,
    // which cannot see the marker over the cut link.
    a.cmd::<()>(&["CONFIG", "SET", "min-replicas-to-write", &topology::FENCE_MIN_REPLICAS.to_string()]);
    let (status, report) = put(&format!("{}/master", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 200, "a lagging slave does not fail the apply: {report}");
    assert_eq!(report["lagging"], json!([b.host_port()]), "{report}");
    let verify = report["steps"].as_array().unwrap().iter().find(|s| s["action"] == "verify").cloned();
    let error = verify.as_ref().and_then(|s| s["error"].as_str()).unwrap_or_default().to_string();
    assert!(error.contains(&format!("{} did not show the marker within 300ms", b.host_port())), "{report}");
    assert!(!is_fenced(&a), "the rest of the apply was done");
    assert!(a.cmd::<Vec<String>>(&["KEYS", "redis-topology:*"]).is_empty(), "the marker is removed");

    // With the link back, b is in step and the next apply has nothing to do.
    restore_link(&a);
    harness::wait_until("b to reconnect", Duration::from_secs(20), || {
        b.info_field("master_link_status").as_deref() == Some("up")
    });
    let (status, report) = put(&format!("{}/master", api.base), topo(&a, &[&b])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["changed"], false, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictator_killed_mid_apply_leaves_the_old_master_fenced_and_a_new_one_finishes() {
    let (a, b) = (Redis::start(), Redis::start());
    let mut api = start_dictator(&["--catch-up-timeout-ms", "600000"]);
    let (first, acked) = stalled_apply(&api, &a, &b).await;

    // kill -9 between the fence and the promotion.
    api.service.process().kill();
    assert!(first.await.unwrap().is_err(), "a killed dictator answers nothing");

    // No instance takes writes: a is fenced, b is still a read-only slave.
    assert_eq!((a.role(), b.role()), ("master".to_string(), "slave".to_string()));
    let refused = write_error(&a, "during-the-fence").expect("the fenced master refuses writes");
    assert!(refused.contains("NOREPLICAS"), "{refused}");
    let refused = write_error(&b, "on-the-slave").expect("a slave refuses writes");
    assert!(refused.contains("read only replica"), "{refused}");
    // The CLIENT PAUSE would end on its own; the fence does not end with it.
    a.cmd::<()>(&["CLIENT", "UNPAUSE"]);
    let refused = write_error(&a, "after-the-pause").expect("still fenced after the pause");
    assert!(refused.contains("NOREPLICAS"), "{refused}");
    assert_has_keys(&a, &acked);

    // A new dictator applies the same topology once b can catch up.
    restore_link(&a);
    let api = start_dictator(&["--catch-up-timeout-ms", "60000"]);
    let (status, report) = put(&format!("{}/master", api.base), topo(&b, &[&a])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(b.role(), "master");
    assert_takes_writes(&b);
    harness::wait_until("a to follow b", Duration::from_secs(20), || {
        a.info_field("master_link_status").as_deref() == Some("up")
    });
    assert_eq!(a.info_field("master_port"), Some(b.port().to_string()));
    assert!(!is_fenced(&a), "released once it follows b");
    assert_has_keys(&b, &acked);
    for refused in ["during-the-fence", "after-the-pause", "on-the-slave"] {
        assert_eq!(b.cmd::<Option<String>>(&["GET", refused]), None, "a refused write was applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_does_not_cancel_the_apply() {
    let (a, b, c) = (Redis::start(), Redis::start(), Redis::start());
    let api = start_dictator(&["--redis-command-timeout-ms", "60000"]);
    let (status, report) = put(&format!("{}/master", api.base), topo(&a, &[&b, &c])).await;
    assert_eq!(status, 200, "{report}");

    // A frozen slave holds the next apply in its observation for as long as it is frozen.
    c.freeze(true);
    let client = reqwest::Client::builder().timeout(Duration::from_millis(500)).build().unwrap();
    let sent = client.put(format!("{}/master", api.base)).body(topo(&b, &[&a, &c])).send().await;
    assert!(sent.is_err_and(|e| e.is_timeout()), "the apply answered while a member was frozen");
    assert_eq!(b.role(), "slave", "the apply must still be under way");
    c.freeze(false);

    // Nobody listens for the answer any more; the apply is done all the same.
    harness::wait_until("the apply to finish without its client", Duration::from_secs(20), || {
        b.role() == "master" && a.info_field("master_port") == Some(b.port().to_string())
    });
    harness::wait_until("c to follow b", Duration::from_secs(20), || c.info_field("master_port") == Some(b.port().to_string()));
    assert_takes_writes(&b);
}

fn assert_takes_writes(r: &Redis) {
    assert_eq!(write_error(r, "writable-check"), None, "{} refuses writes", r.host_port());
}
