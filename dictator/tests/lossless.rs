#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The promise: a writer pushing unique ids through 20 switchovers loses none
//! and has none applied that errored.

mod common;

use std::time::{Duration, Instant};

use common::*;
use counter::{median_max_ms, read_list, Pace, Destination, Writer};
use harness::Redis;

const PACE: Pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(10) };
/// Ids the writer must land on each master before the next switchover.
const WRITES_BETWEEN: usize = 20;
const ROUNDS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_switchovers_under_continuous_writes_lose_nothing() {
    let nodes = [Redis::start(), Redis::start(), Redis::start()];
    let d = dictator();
    apply(&d, &nodes[0], &[&nodes[1], &nodes[2]]).await;

    let writer = Writer::start(Destination::Discover(nodes.iter().map(Redis::addr).collect()), "ids", PACE);
    wait_for_writes(&nodes[0], 0).await;
    let mut windows = Vec::new();
    for round in 1..=ROUNDS {
        let m = &nodes[round % 3];
        let slaves = [&nodes[(round + 1) % 3], &nodes[(round + 2) % 3]];
        let started = Instant::now();
        let report = apply(&d, m, &slaves).await;
        assert!(report.changed && report.outcome.lagging.is_empty(), "{report:?}");
        windows.push((started, Instant::now()));
        // Each switchover happens under writes: the writer has reached this master.
        let written = m.cmd::<usize>(&["LLEN", "ids"]);
        wait_for_writes(m, written).await;
    }
    let tally = writer.stop().await.unwrap();
    let final_master = &nodes[ROUNDS % 3];
    let verdict = tally.check(&read_list(&Destination::Fixed(final_master.addr()), "ids", Duration::from_secs(5)).await.unwrap());
    println!("{verdict}");
    let gaps: Vec<Duration> = windows.iter().map(|(a, b)| tally.longest_gap(*a, *b)).collect();
    let (median, max) = median_max_ms(&gaps);
    println!("write-unavailable window per switchover: median {median:.1} ms, max {max:.1} ms");
    // Every id in the list was acknowledged (no phantom), and the list grew by
    // WRITES_BETWEEN on each master.
    assert!(verdict.acked >= WRITES_BETWEEN * (ROUNDS + 1), "the writer made progress: {verdict}");
    assert_eq!(verdict.missing, 0, "acknowledged writes lost: {verdict}");
    assert_eq!(verdict.phantom, 0, "rejected writes applied: {verdict}");
}

/// Waits until the list on `master` holds WRITES_BETWEEN more ids than `than`.
async fn wait_for_writes(master: &Redis, than: usize) {
    harness::wait_until_async("the writer to write to the master", Duration::from_secs(20), || async {
        master.cmd::<usize>(&["LLEN", "ids"]) >= than + WRITES_BETWEEN
    })
    .await;
}
