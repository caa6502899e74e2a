//! Switchovers as a client sees them through HAProxy, DNS-only config and push
//! config side by side in one run (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench haproxy
//!
//! For each config, a fresh stack: a writer pushes ~1000 ids/s through HAProxy's
//! write frontend (one connection, reconnecting after every error) while the
//! topology in etcd moves the master 20 times among 3 nodes. Printed per config:
//! - the write-unavailable window per move (median, max);
//! - errored writes per move (rejected: an error reply or no connection) and unknown
//!   outcomes (sent, then the connection dropped);
//! - topology written to etcd -> the first write acknowledged by the new master;
//! - push config only: push-to-switch, dnsd's zone change (the move published) ->
//!   HAProxy acknowledged the last command of the push (dnsd's log);
//! - the dictator's write pause and whole apply (its log), the part of the window
//!   that is the move itself.
//!
//! `BENCH_TRACE=1` also prints the slowest move, dnsd's pushes and HAProxy's log.
//! `BENCH_DNSDS=2` (or 3) runs that many dnsd replicas, all HAProxy's nameservers
//! (and, with push, all pushing to it), as a deployment without a single dnsd does.

use std::time::{Duration, Instant};

use counter::{median_max_ms, read_list, Destination, Pace, Writer};
use harness::stack::{Stack, StackOptions};

const MOVES: usize = 20;

struct Figures {
    window: (f64, f64),
    errored_per_move: (f64, usize),
    unknown: usize,
    to_first_ack: (f64, f64),
    push: Option<(f64, f64)>,
    /// The dictator's own figures per move: write pause (fence -> new master writable)
    /// and the whole apply (until its answer, which the publish waits for).
    pause: (f64, f64),
    apply: (f64, f64),
    verdict: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dns = run(false).await;
    let push = run(true).await;
    let cell = |(m, x): (f64, f64)| format!("{m:.1} / {x:.1}");
    println!("through HAProxy, {MOVES} switchovers among 3 nodes at ~1000 writes/s (median / max):");
    println!("| | DNS only | push |");
    println!("|---|---|---|");
    println!("| write-unavailable window (ms) | {} | {} |", cell(dns.window), cell(push.window));
    println!(
        "| errored writes per move (mean / max) | {:.1} / {} | {:.1} / {} |",
        dns.errored_per_move.0, dns.errored_per_move.1, push.errored_per_move.0, push.errored_per_move.1
    );
    println!("| unknown-outcome writes (total) | {} | {} |", dns.unknown, push.unknown);
    println!("| topology in etcd -> first write acked by the new master (ms) | {} | {} |", cell(dns.to_first_ack), cell(push.to_first_ack));
    println!(
        "| dnsd zone change -> HAProxy acknowledged the push (ms) | - | {} |",
        push.push.map_or("-".to_string(), cell)
    );
    println!("| the dictator's write pause, fence -> new master writable (ms) | {} | {} |", cell(dns.pause), cell(push.pause));
    println!("| the dictator's whole apply, until its answer (ms) | {} | {} |", cell(dns.apply), cell(push.apply));
    println!("DNS only: {}", dns.verdict);
    println!("push:     {}", push.verdict);
}

async fn run(push: bool) -> Figures {
    let dnsds = std::env::var("BENCH_DNSDS").ok().and_then(|n| n.parse().ok()).unwrap_or(1);
    let stack = Stack::start(StackOptions { haproxy: true, haproxy_push: push, dnsds, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let target = Destination::Fixed(stack.write.expect("haproxy"));
    let pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(5) };
    let writer = Writer::start(target.clone(), "bench-ids", pace);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut moves = Vec::new();
    for round in 1..=MOVES {
        let m = round % 3;
        let at = Instant::now();
        let revision = stack.define(m, &[(m + 1) % 3, (m + 2) % 3]).await;
        stack.wait_applied(revision).await;
        moves.push(at);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let verdict = tally.check(&read_list(&target, "bench-ids", Duration::from_secs(10)).await.expect("read back"));

    let (mut windows, mut to_first_ack, mut errored) = (Vec::new(), Vec::new(), Vec::new());
    for at in &moves {
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
        errored.push(tally.rejected.iter().filter(|(_, t)| *t >= *at && *t <= end).count());
    }
    let pushes: Vec<Duration> = harness::without_ansi(&stack.dnsd_log())
        .lines()
        .filter(|l| l.contains("pushed to HAProxy") && l.contains("redis_master/master1 addr"))
        .filter_map(|l| l.split(" ms=").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    // A move far slower than the rest: show what dnsd and HAProxy did (not a verdict).
    if std::env::var_os("BENCH_TRACE").is_some() {
        let slowest = windows.iter().enumerate().max_by_key(|(_, w)| **w).map(|(i, w)| (i, *w));
        eprintln!("slowest move: {slowest:?}");
        eprintln!("{}", harness::without_ansi(&stack.dnsd_log()).lines().filter(|l| l.contains("HAProxy") || l.contains("published")).collect::<Vec<_>>().join("\n"));
        eprintln!("{}", stack.haproxy_log(200_000));
    }
    let dictator = harness::without_ansi(&stack.dictator_log());
    let field = |name: &str| -> Vec<Duration> {
        dictator
            .lines()
            .filter(|l| l.contains(" applied ") && l.contains("write_pause_ms"))
            .filter_map(|l| l.split(&format!(" {name}=")).nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .skip(1) // the first apply sets the topology up; the moves follow
            .collect()
    };
    Figures {
        pause: median_max_ms(&field("write_pause_ms")),
        apply: median_max_ms(&field("total_ms")),
        window: median_max_ms(&windows),
        errored_per_move: (tally.rejected.len() as f64 / MOVES as f64, errored.iter().copied().max().unwrap_or(0)),
        unknown: tally.unknown.len(),
        to_first_ack: median_max_ms(&to_first_ack),
        push: push.then(|| median_max_ms(&pushes)),
        verdict: verdict.to_string(),
    }
}

