#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The observer sends each topology's etcd revision with its apply and its publish,
//! so a late request from a deposed leader (an older revision) changes nothing.

use harness::stack::{Stack, StackOptions, CLUSTER};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_observer_sends_the_revision_and_a_late_older_apply_changes_nothing() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let old = stack.define(1, &[0, 2]).await;
    stack.wait_applied(old).await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    // Both services recorded the revision the observer sent.
    let got = stack.etcd.client().await.get(format!("/applied/{CLUSTER}"), None).await.unwrap();
    assert_eq!(got.kvs()[0].value_str().unwrap(), revision.to_string());
    let got = stack.etcd.client().await.get(format!("/dns/{CLUSTER}"), None).await.unwrap();
    let published: Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    assert_eq!(published["topology_revision"].as_i64(), Some(revision), "{published}");

    // A deposed leader's apply of the older topology arrives late: both refuse it.
    let older = stack.topology(1, &[0, 2]);
    for url in [format!("{}/clusters/{CLUSTER}/master", stack.dictator_url), format!("{}/clusters/{CLUSTER}/dns", stack.dnsd_url)] {
        let (status, body) = harness::put_json(&format!("{url}?revision={old}"), older.clone()).await;
        assert_eq!(status, 409, "{url}: {body}");
        assert_eq!((body["revision"].as_i64(), body["applied_revision"].as_i64()), (Some(old), Some(revision)), "{body}");
    }
    assert_eq!(stack.nodes[0].redis.role(), "master");
    assert_eq!(stack.nodes[1].redis.role(), "slave");
    let got = stack.etcd.client().await.get(format!("/dns/{CLUSTER}"), None).await.unwrap();
    let now: Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    assert_eq!(now, published, "DNS was rolled back");
}
