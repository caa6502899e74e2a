//! Switchovers as a client sees them through HAProxy (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench haproxy
//!
//! A writer pushes ~1000 ids/s through HAProxy's write frontend while the topology
//! in etcd moves the master 20 times among 3 nodes. Printed: the write-unavailable
//! window per switchover (median, max), and the time from writing the topology to
//! etcd until the first write acknowledged by the new master (the first ack after
//! the switchover's gap: the old master only ever errors once fenced).

use std::time::{Duration, Instant};

use counter::{median_max_ms, read_list, Pace, Destination, Writer};
use harness::stack::{Stack, StackOptions};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let stack = Stack::start(StackOptions { haproxy: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let target = Destination::Fixed(stack.write.expect("haproxy"));
    let pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(5) };
    let writer = Writer::start(target.clone(), "bench-ids", pace);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut written = Vec::new();
    for round in 1..=20 {
        let m = round % 3;
        let at = Instant::now();
        let revision = stack.define(m, &[(m + 1) % 3, (m + 2) % 3]).await;
        stack.wait_applied(revision).await;
        written.push(at);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let verdict = tally.check(&read_list(&target, "bench-ids", Duration::from_secs(10)).await.expect("read back"));

    let mut windows = Vec::new();
    let mut to_first_ack = Vec::new();
    for at in &written {
        let end = *at + Duration::from_millis(700);
        windows.push(tally.longest_gap(*at, end));
        // The longest gap after `at`; the ack that ends it is the new master's first.
        let first_new = tally
            .acked
            .windows(2)
            .filter(|w| w[1].1 >= *at && w[0].1 <= end)
            .max_by_key(|w| w[1].1 - w[0].1)
            .map(|w| w[1].1 - *at);
        to_first_ack.extend(first_new);
    }
    let (wm, wx) = median_max_ms(&windows);
    let (fm, fx) = median_max_ms(&to_first_ack);
    println!("through HAProxy, 20 switchovers among 3 nodes at ~1000 writes/s:");
    println!("  write-unavailable window: median {wm:.1} ms, max {wx:.1} ms");
    println!("  topology written to etcd -> first write acked by the new master: median {fm:.1} ms, max {fx:.1} ms");
    println!("  {verdict}");
}
