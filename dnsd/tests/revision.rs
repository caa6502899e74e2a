#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The revision rule on real dnsd replicas and etcd: a publish carrying
//! `?revision=N` older than the newest published for its cluster is refused with 409
//! and changes neither etcd nor any DNS answer; a duplicate writes nothing; replicas
//! agree, since the floor is stored with the topology in `/dns/<cluster>`.

mod common;

use common::*;
use harness::Etcd;
use serde_json::Value;

async fn stored(etcd: &Etcd) -> (i64, Value) {
    let got = etcd.client().await.get("/dns/redis-1", None).await.unwrap();
    let kv = &got.kvs()[0];
    (kv.mod_revision(), serde_json::from_slice(kv.value()).unwrap())
}

fn master_srv(dnsd: &Dnsd) -> Vec<String> {
    dnsd.short(&["SRV", "_redis._tcp.master.redis-1.cluster.local"])
}

#[tokio::test]
async fn a_late_older_publish_is_refused_with_both_revisions_and_changes_nothing() {
    let etcd = Etcd::start();
    register(&etcd, "redis-1", "node-1", "127.0.0.11", 7011).await;
    register(&etcd, "redis-1", "node-2", "127.0.0.12", 7012).await;
    let (first, second) = (Dnsd::start(&etcd, &[]), Dnsd::start(&etcd, &[]));
    let url = |d: &Dnsd, query: &str| d.url(&format!("/clusters/redis-1/dns{query}"));

    let (status, body) = put(&url(&first, "?revision=10"), nodes_topology("node-1", &["node-2"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topology_revision"], 10, "{body}");
    let node_1 = vec!["0 100 7011 node-1.redis-1.cluster.local.".to_string()];
    eventually("both replicas serve node-1 as master", || {
        first.records(&["SRV", "_redis._tcp.master.redis-1.cluster.local"]) == node_1
            && second.records(&["SRV", "_redis._tcp.master.redis-1.cluster.local"]) == node_1
    });
    let before = stored(&etcd).await;
    assert_eq!(before.1["topology_revision"], 10);

    // A deposed observer's older topology, to either replica: refused, nothing moves.
    for dnsd in [&first, &second] {
        let (status, body) = put(&url(dnsd, "?revision=9"), nodes_topology("node-2", &["node-1"])).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!((body["revision"].as_i64(), body["applied_revision"].as_i64()), (Some(9), Some(10)), "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("revision 9") && error.contains("revision 10"), "{error}");
        assert_eq!(stored(&etcd).await, before, "a refused publish wrote to etcd");
        assert_eq!(master_srv(&first), node_1);
        assert_eq!(master_srv(&second), node_1);
    }

    // A duplicate answers what is published and writes nothing.
    let (status, body) = put(&url(&second, "?revision=10"), nodes_topology("node-1", &["node-2"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["revision"].as_i64(), Some(before.0), "{body}");
    assert_eq!(stored(&etcd).await, before, "a duplicate wrote to etcd");

    // An operator's publish without a revision goes through and keeps the floor.
    let (status, body) = put(&url(&second, ""), nodes_topology("node-2", &["node-1"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["topology_revision"], 10, "{body}");
    let (status, body) = put(&url(&first, "?revision=9"), nodes_topology("node-1", &["node-2"])).await;
    assert_eq!((status, body["applied_revision"].as_i64()), (409, Some(10)), "{body}");
    assert_eq!(master_srv(&first), vec!["0 100 7012 node-2.redis-1.cluster.local.".to_string()]);

    let (status, body) = put(&url(&first, "?revision=x"), nodes_topology("node-1", &[])).await;
    assert_eq!(status, 400, "{body}");
}
