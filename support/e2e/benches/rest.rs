//! etcd writes at rest (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench rest
//!
//! A whole stack (etcd, 3 redis-servers with their node-agents, dnsd, the
//! dictator, the observer) with a defined and applied group, while a client
//! writes ~1000 ids/s to the master, so replication offsets move all the time.
//! Over 20 s it reads etcd's own counters (`etcd_mvcc_put_total`,
//! `etcd_mvcc_delete_total`, `etcd_mvcc_txn_total` on its `/metrics`) and prints
//! the writes per second: what an idle group costs the control plane.

use std::time::{Duration, Instant};

use counter::{Destination, Pace, Writer};
use harness::stack::{Stack, StackOptions};

const WINDOW: Duration = Duration::from_secs(20);

fn counters(port: u16) -> (f64, f64, f64) {
    let text = harness::etcd::http_get(port, "/metrics").expect("etcd /metrics");
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("etcd's /metrics has no {name}"))
    };
    (value("etcd_mvcc_put_total"), value("etcd_mvcc_delete_total"), value("etcd_mvcc_txn_total"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(2) };
    let writer = Writer::start(Destination::Fixed(stack.nodes[0].redis.addr()), "rest-ids", pace);
    // Let the apply's own writes (status, applied revision, DNS) settle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let port = stack.etcd.client_port();
    // Which keys are written, to say who writes at rest.
    let mut client = stack.etcd.client().await;
    let mut events = client
        .watch("", Some(etcd_client::WatchOptions::new().with_all_keys()))
        .await
        .expect("watch etcd");
    let (puts, deletes, txns) = counters(port);
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let (puts2, deletes2, txns2) = counters(port);
    let mut written = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(Duration::from_millis(200), events.message()).await {
        for e in resp.events() {
            if let Some(kv) = e.kv() {
                *written.entry(kv.key_str().unwrap_or("?").to_string()).or_default() += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let tally = writer.stop().await.expect("the writer");
    println!(
        "etcd at rest, 1 group of 3 nodes (3 node-agents, dnsd, dictator, observer), {} writes to redis in {secs:.0} s:",
        tally.acked.len()
    );
    println!(
        "  puts {:.2}/s, deletes {:.2}/s, txns {:.2}/s (etcd_mvcc_put_total {puts} -> {puts2})",
        (puts2 - puts) / secs,
        (deletes2 - deletes) / secs,
        (txns2 - txns) / secs
    );
    println!("  keys written: {written:?}");
}
