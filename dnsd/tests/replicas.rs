//! Several dnsd replicas on one etcd, and etcd going away and coming back.

mod common;

use common::*;
use harness::Etcd;

const MASTER: [&str; 2] = ["_redis._tcp.master.redis-1.cluster.local", "SRV"];

/// The master's SRV record; there must be one.
fn master_of(dnsd: &Dnsd) -> Vec<String> {
    dnsd.short(&MASTER)
}

#[tokio::test]
async fn two_replicas_agree_after_a_put_to_one() {
    let etcd = Etcd::start();
    for (node, last) in [("node-1", 11), ("node-2", 12), ("node-3", 13)] {
        register(&etcd, "redis-1", node, &format!("127.0.0.{last}"), 7000 + last).await;
    }
    let (a, b) = (Dnsd::start(&etcd, &[]), Dnsd::start(&etcd, &[]));
    for (round, master) in ["node-1", "node-2", "node-3", "node-1"].into_iter().enumerate() {
        let slaves: Vec<&str> = ["node-1", "node-2", "node-3"].into_iter().filter(|n| *n != master).collect();
        let to = if round % 2 == 0 { &a } else { &b };
        let (status, body) = put(&to.url("/dns"), nodes_topology(master, &slaves)).await;
        assert_eq!(status, 200, "{body}");
        let want = vec![format!("0 100 {} {master}.redis-1.cluster.local.", body["master"]["port"])];
        // The replica that took the PUT serves it as soon as the PUT returns.
        assert_eq!(master_of(to), want, "round {round}");
        let other = if round % 2 == 0 { &b } else { &a };
        eventually("the other replica to follow", || other.records(&MASTER) == want);
        for what in [
            &["slaves.redis-1.cluster.local", "SRV"][..],
            &["version.redis-1.cluster.local", "TXT"],
            &["master.redis-1.cluster.local", "A"],
        ] {
            assert_eq!(a.short(what), b.short(what), "{what:?}");
        }
        assert_eq!(a.serial(), b.serial());
    }
    // A replica started later lists what is already there.
    let c = Dnsd::start(&etcd, &[]);
    let want = master_of(&a);
    eventually("a new replica to list", || c.records(&MASTER) == want);
}

#[tokio::test]
async fn keeps_answering_while_etcd_is_down_and_catches_up_after() {
    let mut etcd = Etcd::start();
    register(&etcd, "redis-1", "node-1", "127.0.0.11", 7011).await;
    register(&etcd, "redis-1", "node-2", "127.0.0.12", 7012).await;
    let dnsd = Dnsd::start(&etcd, &[]);
    let (status, body) = put(&dnsd.url("/dns"), nodes_topology("node-1", &["node-2"])).await;
    assert_eq!(status, 200, "{body}");
    let before = master_of(&dnsd);

    etcd.kill();
    for _ in 0..5 {
        assert_eq!(master_of(&dnsd), before, "last known records while etcd is down");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(dnsd.short(&["node-2.redis-1.cluster.local", "A"]), vec!["127.0.0.12"]);
    // Publishing needs etcd: 502, named, and nothing changes.
    let (status, body) = put(&dnsd.url("/dns"), nodes_topology("node-2", &["node-1"])).await;
    assert_eq!(status, 502, "{body}");
    assert!(body["error"].as_str().unwrap().contains("etcd"), "{body}");
    assert_eq!(master_of(&dnsd), before);
    let (status, _) = get(&dnsd.url("/healthz")).await;
    assert_eq!(status, 200);

    etcd.restart();
    // A registration written behind dnsd's back is picked up by the new watch.
    register(&etcd, "redis-1", "node-5", "127.0.0.15", 7015).await;
    eventually("the re-watch to see node-5", || dnsd.records(&["node-5.redis-1.cluster.local", "A"]) == ["127.0.0.15"]);
    // And publishing works again.
    let mut published = None;
    for _ in 0..50 {
        let (status, body) = put(&dnsd.url("/dns"), nodes_topology("node-2", &["node-1"])).await;
        if status == 200 {
            published = Some(body);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(published.is_some(), "PUT never succeeded after etcd came back");
    assert_eq!(master_of(&dnsd), vec!["0 100 7012 node-2.redis-1.cluster.local."]);
    // A change made directly in etcd (another replica's PUT) arrives too.
    etcd.client().await.delete("/dns/redis-1", None).await.unwrap();
    eventually("the deletion", || dnsd.status(&["master.redis-1.cluster.local", "SRV"]) == "NXDOMAIN");
}

#[tokio::test]
async fn starts_without_etcd_and_lists_when_it_appears() {
    let mut etcd = Etcd::start();
    register(&etcd, "redis-1", "node-1", "127.0.0.11", 7011).await;
    etcd.kill();
    let dnsd = Dnsd::start(&etcd, &[]);
    // It answers at once, but knows nothing yet: REFUSED (a resolver asks another
    // nameserver), not an empty zone's NXDOMAIN, which resolvers cache.
    assert_eq!(dnsd.status(&["cluster.local", "SOA"]), "REFUSED", "no zone before the first listing");
    assert_eq!(dnsd.status(&["node-1.redis-1.cluster.local", "A"]), "REFUSED");
    etcd.restart();
    eventually("the first listing", || dnsd.records(&["node-1.redis-1.cluster.local", "A"]) == ["127.0.0.11"]);
}
