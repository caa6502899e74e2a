#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The revision rule on the real `dictator` binary with etcd and redis-server: an
//! apply carrying `?revision=N` older than the newest accepted for its cluster is
//! refused with 409 and changes nothing; a duplicate changes nothing; every dictator
//! of the installation agrees, through `/applied/<cluster>` in etcd.

use harness::{free_port, Etcd, Redis, Service};
use serde_json::{json, Value};

struct Api {
    _service: Service,
    base: String,
}

fn start_dictator(etcd: &Etcd, prefix: &str) -> Api {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let nameserver = harness::silent_nameserver().to_string();
    let endpoint = etcd.endpoint();
    let args = ["--listen", &listen, "--nameserver", &nameserver, "--etcd-endpoints", &endpoint, "--etcd-prefix", prefix];
    let mut service = Service::start("dictator", &args, &[]);
    service.wait_http(port);
    Api { _service: service, base: format!("http://{listen}") }
}

fn topo(master: &Redis, slaves: &[&Redis]) -> String {
    json!({
        "master": {"address": "127.0.0.1", "port": master.port()},
        "slaves": slaves.iter().map(|s| json!({"address": "127.0.0.1", "port": s.port()})).collect::<Vec<_>>(),
    })
    .to_string()
}

async fn put(api: &Api, query: &str, body: String) -> (u16, Value) {
    harness::put_json(&format!("{}/clusters/redis-1/master{query}", api.base), body).await
}

async fn applied(etcd: &Etcd) -> Option<String> {
    let got = etcd.client().await.get("/p/applied/redis-1", None).await.unwrap();
    got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
}

/// Role and upstream port: what an apply changes.
fn roles(rs: &[&Redis]) -> Vec<(String, Option<String>)> {
    rs.iter().map(|r| (r.role(), r.info_field("master_port"))).collect()
}

#[tokio::test]
async fn a_late_older_apply_is_refused_with_both_revisions_and_changes_nothing() {
    let etcd = Etcd::start();
    let (a, b) = (Redis::start(), Redis::start());
    let (first, second) = (start_dictator(&etcd, "/p"), start_dictator(&etcd, "/p"));

    let (status, report) = put(&first, "?revision=10", topo(&a, &[&b])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(applied(&etcd).await.as_deref(), Some("10"));
    let before = roles(&[&a, &b]);
    assert_eq!(before[0].0, "master");

    // A deposed observer's older topology, to either dictator: refused, nothing moves.
    for api in [&first, &second] {
        let (status, body) = put(api, "?revision=9", topo(&b, &[&a])).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!((body["revision"].as_i64(), body["applied_revision"].as_i64()), (Some(9), Some(10)), "{body}");
        assert_eq!(body["report"], Value::Null);
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("revision 9") && error.contains("revision 10"), "{error}");
        assert_eq!(roles(&[&a, &b]), before, "a refused apply changed roles");
    }
    // A dry run is checked the same way.
    let (status, body) = put(&second, "?revision=9&dry_run=true", topo(&b, &[&a])).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(applied(&etcd).await.as_deref(), Some("10"));

    // A duplicate (same revision) is accepted and changes nothing.
    let (status, report) = put(&second, "?revision=10", topo(&a, &[&b])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["changed"], false, "{report}");
    assert_eq!(roles(&[&a, &b]), before);

    // A newer one goes through and raises the floor for both.
    let (status, report) = put(&second, "?revision=11", topo(&b, &[&a])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!((a.role(), b.role()), ("slave".to_string(), "master".to_string()));
    assert_eq!(applied(&etcd).await.as_deref(), Some("11"));
    let (status, body) = put(&first, "?revision=10", topo(&a, &[&b])).await;
    assert_eq!((status, body["applied_revision"].as_i64()), (409, Some(11)), "{body}");
    assert_eq!(b.role(), "master");
}

#[tokio::test]
async fn an_operator_apply_without_a_revision_is_neither_checked_nor_recorded() {
    let etcd = Etcd::start();
    let (a, b) = (Redis::start(), Redis::start());
    let api = start_dictator(&etcd, "/p");
    let (status, _) = put(&api, "?revision=10", topo(&a, &[&b])).await;
    assert_eq!(status, 200);
    let (status, report) = put(&api, "", topo(&b, &[&a])).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(b.role(), "master");
    assert_eq!(applied(&etcd).await.as_deref(), Some("10"), "not recorded");
    let (status, body) = put(&api, "?revision=abc", topo(&a, &[&b])).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("query:"), "{body}");
    assert_eq!(b.role(), "master");
}
