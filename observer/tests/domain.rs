#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! An observer whose `--domain` differs from the zone dnsd serves cannot match
//! topology members to registrations; it must say so: an error in its log, and
//! `domain_error` in `GET /status`.

use std::time::Duration;

use harness::{free_port, Etcd, Service};
use serde_json::Value;

fn start_dnsd(etcd: &Etcd, domain: &str) -> Service {
    let (http, dns) = (free_port(), free_port());
    let mut dnsd = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{http}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--etcd-endpoints", &etcd.endpoint(), "--domain", domain],
        &[],
    );
    dnsd.wait_http(http);
    dnsd
}

fn status(port: u16) -> Value {
    let body = harness::etcd::http_get(port, "/status").unwrap_or_default();
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_domain_other_than_dnsds_is_logged_as_an_error_and_shown_in_status() {
    let etcd = Etcd::start();
    let _dnsd = start_dnsd(&etcd, "example.org");
    harness::wait_until_async("dnsd records its domain", Duration::from_secs(10), || async {
        let got = etcd.client().await.get("/domain", None).await.unwrap();
        got.kvs().first().is_some_and(|kv| kv.value() == b"example.org")
    })
    .await;
    // A second dnsd with another domain leaves the recorded one alone and says why.
    let mut other = start_dnsd(&etcd, "cluster.local");
    harness::wait_until("the second dnsd's error", Duration::from_secs(10), || {
        other.log().contains("but this dnsd serves cluster.local")
    });
    other.process().terminate(Duration::from_secs(5));
    let got = etcd.client().await.get("/domain", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"example.org");

    // The observer runs with the default domain, cluster.local.
    let port = free_port();
    let mut observer = Service::start(
        "observer",
        &["--listen", &format!("127.0.0.1:{port}"), "--etcd-endpoints", &etcd.endpoint(),
          "--dictator", "http://127.0.0.1:9", "--dnsd", "http://127.0.0.1:9", "--log-format", "json"],
        &[],
    );
    observer.wait_http(port);
    harness::wait_until("domain_error in /status", Duration::from_secs(15), || status(port)["domain_error"].is_string());
    let error = status(port)["domain_error"].as_str().unwrap().to_string();
    assert!(error.contains("--domain is cluster.local but dnsd serves example.org"), "{error}");
    let log = observer.log();
    assert!(
        log.lines().any(|l| l.contains("\"level\":\"ERROR\"") && l.contains("dnsd serves example.org")),
        "no error logged:\n{log}"
    );
}
