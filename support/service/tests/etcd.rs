//! `service::etcd` against a real etcd: the list-then-watch loop and the kept lease.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Event, EventType, KeyValue, PutOptions};
use service::etcd::{follow, FollowError, FollowPolicy, Follower, KeptLease};
use tokio::sync::mpsc;

/// Keeps the followed keys as a map, and reports each list and each batch.
struct Mirror {
    keys: BTreeMap<String, String>,
    lists: u32,
    unavailable: u32,
    seen: mpsc::UnboundedSender<(u32, BTreeMap<String, String>)>,
}

impl Follower for Mirror {
    fn listed(&mut self, _revision: i64, kvs: &[KeyValue]) {
        self.lists += 1;
        self.keys = kvs.iter().map(|kv| (kv.key_str().unwrap().to_string(), kv.value_str().unwrap().to_string())).collect();
        let _ = self.seen.send((self.lists, self.keys.clone()));
    }

    fn changed(&mut self, events: &[Event]) {
        for event in events {
            let kv = event.kv().unwrap();
            let key = kv.key_str().unwrap().to_string();
            match event.event_type() {
                EventType::Put => self.keys.insert(key, kv.value_str().unwrap().to_string()),
                EventType::Delete => self.keys.remove(&key),
            };
        }
        let _ = self.seen.send((self.lists, self.keys.clone()));
    }

    fn unavailable(&mut self, _error: &FollowError) {
        self.unavailable += 1;
    }
}

/// Waits for the mirror to hold `want`, returning how many lists it took.
async fn until_mirror(seen: &mut mpsc::UnboundedReceiver<(u32, BTreeMap<String, String>)>, want: &[(&str, &str)]) -> u32 {
    let want: BTreeMap<String, String> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let (lists, keys) = seen.recv().await.expect("the follower stopped");
            if keys == want {
                return lists;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the mirror never held {want:?}"))
}

#[tokio::test]
async fn follow_lists_at_one_revision_watches_and_lists_again_after_etcd_restarts() {
    let mut etcd = harness::Etcd::start();
    let mut client = etcd.client().await;
    client.put("/a/1", "one", None).await.unwrap();
    client.put("/b/1", "uno", None).await.unwrap();
    client.put("/c/1", "not followed", None).await.unwrap();

    let (tx, mut seen) = mpsc::unbounded_channel();
    let endpoint = etcd.endpoint();
    let following = tokio::spawn(async move {
        let mut mirror = Mirror { keys: BTreeMap::new(), lists: 0, unavailable: 0, seen: tx };
        let connect = || etcd_client::Client::connect([endpoint.clone()], None);
        follow(connect, &["/a/".to_string(), "/b/".to_string()], &FollowPolicy::default(), &mut mirror).await;
    });
    let lists = until_mirror(&mut seen, &[("/a/1", "one"), ("/b/1", "uno")]).await;
    assert_eq!(lists, 1);

    client.put("/a/2", "two", None).await.unwrap();
    client.delete("/b/1", None).await.unwrap();
    client.put("/c/2", "still not followed", None).await.unwrap();
    let lists = until_mirror(&mut seen, &[("/a/1", "one"), ("/a/2", "two")]).await;
    assert_eq!(lists, 1, "changes arrive as events, not by listing again");

    // While etcd is down nothing can be seen; afterwards a fresh list has it all.
    etcd.kill();
    etcd.restart();
    let mut client = etcd.client().await;
    client.put("/b/2", "dos", None).await.unwrap();
    let lists = until_mirror(&mut seen, &[("/a/1", "one"), ("/a/2", "two"), ("/b/2", "dos")]).await;
    assert!(lists >= 2, "the broken watch ended in a new list");
    following.abort();
}

#[tokio::test]
async fn a_kept_lease_outlives_its_ttl_and_reports_itself_lost_when_etcd_goes() {
    let mut etcd = harness::Etcd::start();
    let mut client = etcd.client().await;
    let mut lease = KeptLease::grant(&mut client, Duration::from_secs(2)).await.unwrap();
    client.put("/held", "x", Some(PutOptions::new().with_lease(lease.id()))).await.unwrap();

    // Three TTLs later the key is still there: the renewals work.
    let ttl = lease.ttl();
    tokio::select! {
        lost = lease.lost() => panic!("lost a healthy lease: {lost}"),
        () = tokio::time::sleep(ttl * 3) => {}
    }
    let held = client.get("/held", None).await.unwrap();
    assert_eq!(held.kvs().len(), 1, "the leased key expired although its lease was kept");

    etcd.kill();
    let reason = tokio::time::timeout(Duration::from_secs(30), lease.lost()).await.expect("a lease without etcd is lost");
    // Asking again gives the same answer rather than hanging.
    assert_eq!(tokio::time::timeout(Duration::from_secs(1), lease.lost()).await.unwrap(), reason);
}
