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
//! - topology written to etcd -> HAProxy's write slot UP at the new master (its stats
//!   page polled every ms), and -> the first write acknowledged by the new master;
//! - push config only: dnsd's zone change -> HAProxy acknowledged the push (dnsd's log).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use counter::{median_max_ms, read_list, Destination, Pace, Writer};
use harness::stack::{Stack, StackOptions};

const MOVES: usize = 20;

struct Figures {
    window: (f64, f64),
    errored_per_move: (f64, usize),
    unknown: usize,
    to_switch: (f64, f64),
    to_first_ack: (f64, f64),
    push: Option<(f64, f64)>,
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
    println!("| topology in etcd -> HAProxy's write slot UP at the new master (ms) | {} | {} |", cell(dns.to_switch), cell(push.to_switch));
    println!("| topology in etcd -> first write acked by the new master (ms) | {} | {} |", cell(dns.to_first_ack), cell(push.to_first_ack));
    println!(
        "| dnsd zone change -> HAProxy acknowledged the push (ms) | - | {} |",
        push.push.map_or("-".to_string(), cell)
    );
    println!("DNS only: {}", dns.verdict);
    println!("push:     {}", push.verdict);
}

async fn run(push: bool) -> Figures {
    let stack = Stack::start(StackOptions { haproxy: true, haproxy_push: push, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let stats = stack.haproxy_stats.expect("haproxy stats");
    let poller = SlotPoller::start(stats.port());
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
        moves.push((at, stack.nodes[m].redis.addr()));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let changes = poller.stop();
    let verdict = tally.check(&read_list(&target, "bench-ids", Duration::from_secs(10)).await.expect("read back"));

    let (mut windows, mut to_first_ack, mut to_switch, mut errored) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (at, master) in &moves {
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
        to_switch.extend(changes.iter().find(|(t, addr, up)| *t >= *at && *up && addr == master).map(|(t, _, _)| *t - *at));
        errored.push(tally.rejected.iter().filter(|(_, t)| *t >= *at && *t <= end).count());
    }
    let pushes: Vec<Duration> = without_ansi(&stack.dnsd_log())
        .lines()
        .filter(|l| l.contains("pushed to HAProxy") && l.contains("redis_master/master1 addr"))
        .filter_map(|l| l.split(" ms=").nth(1)?.split_whitespace().next()?.parse::<f64>().ok())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    Figures {
        window: median_max_ms(&windows),
        errored_per_move: (tally.rejected.len() as f64 / MOVES as f64, errored.iter().copied().max().unwrap_or(0)),
        unknown: tally.unknown.len(),
        to_switch: median_max_ms(&to_switch),
        to_first_ack: median_max_ms(&to_first_ack),
        push: push.then(|| median_max_ms(&pushes)),
        verdict: verdict.to_string(),
    }
}

/// Polls HAProxy's stats CSV every millisecond and records each change of the write
/// slot's (address, UP).
struct SlotPoller {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<Vec<(Instant, SocketAddr, bool)>>>,
    thread: std::thread::JoinHandle<()>,
}

impl SlotPoller {
    fn start(port: u16) -> SlotPoller {
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (stop.clone(), changes.clone());
        let thread = std::thread::spawn(move || {
            let mut last = None;
            while !s.load(Ordering::SeqCst) {
                if let Some(now) = harness::etcd::http_get(port, "/;csv").and_then(|csv| write_slot(&csv)) {
                    if last != Some(now) {
                        last = Some(now);
                        c.lock().expect("poller lock").push((Instant::now(), now.0, now.1));
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        SlotPoller { stop, changes, thread }
    }

    fn stop(self) -> Vec<(Instant, SocketAddr, bool)> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
        let changes = self.changes.lock().expect("poller lock").clone();
        changes
    }
}

/// `text` without terminal colour codes (`ESC [ ... m`).
fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A chunked HTTP body (HAProxy's stats page is chunked even for HTTP/1.0) put together.
fn dechunk(body: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// `redis_master/master1`'s address and whether it is UP, from the stats CSV.
fn write_slot(body: &str) -> Option<(SocketAddr, bool)> {
    let csv = dechunk(body)?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.find(|l| l.starts_with("# "))?.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (addr, status) = (col("addr")?, col("status")?);
    lines.map(|l| l.split(',').collect::<Vec<_>>()).find(|f| f.first() == Some(&"redis_master") && f.get(1) == Some(&"master1")).and_then(|f| {
        Some((f.get(addr)?.parse().ok()?, f.get(status)? == &"UP"))
    })
}
