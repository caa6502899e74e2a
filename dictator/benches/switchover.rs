//! Switchover benchmark (printed, never asserted). Run:
//!
//!     cargo build --release --bins && cargo bench -p dictator --bench switchover [-- dictator|failover|latency]
//!
//! 1. A writer pushes ~1000 ids/s while the dictator rotates the master 20 times
//!    among 3 instances: per-switchover write-unavailable window (median, max),
//!    rejected and unknown writes, and the lossless verdict.
//! 2. The same with Redis's own `FAILOVER` command, for comparison.
//! 3. Apply latency: `PUT /master` to the real `dictator` binary until its answer
//!    (a full rotation with verification), for 1 master + 2 slaves and 1 master +
//!    8 slaves.

use std::time::{Duration, Instant};

use dictator::execute::{ExecSettings, WriteSettings};
use service::redis_auth::Timeouts;
use dictator::{ApplyOptions, Dictator, Settings};
use counter::{median_max_ms, read_list, Pace, Destination, Writer};
use harness::Redis;

const PACE: Pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(10) };
use service::resolve::MemberResolver;
use topology::{Member, Topology};

const ROTATIONS: usize = 20;

fn dictator() -> Dictator {
    let settings = Settings {
        credentials: Default::default(),
        timeouts: Timeouts::default(),
        exec: ExecSettings {
            writes: WriteSettings { min_replicas_to_write: 0, min_replicas_max_lag: 10 },
            catch_up_timeout: Duration::from_secs(5),
            verify_timeout: Duration::from_secs(10),
        },
        lock_wait: Duration::from_secs(10),
    };
    Dictator::new(MemberResolver::new(Some(harness::silent_nameserver())).expect("resolver"), settings)
}

fn topology(nodes: &[Redis], master: usize) -> Topology {
    let member = |r: &Redis| Member::parse_host_port(&r.host_port()).expect("member");
    let slaves = nodes.iter().enumerate().filter(|(i, _)| *i != master).map(|(_, r)| member(r)).collect();
    Topology::new(member(&nodes[master]), slaves).expect("topology")
}

async fn apply(d: &Dictator, nodes: &[Redis], master: usize) -> dictator::Report {
    d.apply("bench", &topology(nodes, master), ApplyOptions::default()).await.expect("apply")
}

async fn dictator_rotations() {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let d = dictator();
    apply(&d, &nodes, 0).await;
    let writer = Writer::start(Destination::Discover(nodes.iter().map(Redis::addr).collect()), "ids", PACE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut spans = Vec::new();
    let mut pauses = Vec::new();
    let mut slowest: Option<dictator::Report> = None;
    for round in 1..=ROTATIONS {
        let started = Instant::now();
        let report = apply(&d, &nodes, round % 3).await;
        spans.push((started, Instant::now()));
        pauses.push(Duration::from_secs_f64(report.outcome.write_pause_ms / 1000.0));
        if slowest.as_ref().is_none_or(|s| s.outcome.write_pause_ms < report.outcome.write_pause_ms) {
            slowest = Some(report);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let verdict = tally.check(&read_list(&Destination::Fixed(nodes[ROTATIONS % 3].addr()), "ids", Duration::from_secs(5)).await.expect("read back"));
    report_windows("dictator", &tally, &spans, verdict);
    let (median, max) = median_max_ms(&pauses);
    println!("  dictator-measured write pause (fence -> promoted): median {median:.2} ms, max {max:.2} ms");
    if let Some(slowest) = slowest {
        let steps: Vec<String> = slowest.outcome.steps.iter().map(|s| format!("{} {:.2}ms", s.step, s.ms.unwrap_or(0.0))).collect();
        println!("  slowest switchover's steps: {}", steps.join(", "));
    }
}

async fn redis_failover_rotations() {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    apply(&dictator(), &nodes, 0).await;
    let writer = Writer::start(Destination::Discover(nodes.iter().map(Redis::addr).collect()), "ids", PACE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut spans = Vec::new();
    for round in 1..=ROTATIONS {
        let (old, new) = (&nodes[(round - 1) % 3], &nodes[round % 3]);
        let started = Instant::now();
        old.cmd::<()>(&["FAILOVER", "TO", "127.0.0.1", &new.port().to_string(), "TIMEOUT", "5000"]);
        harness::wait_until("FAILOVER to finish", Duration::from_secs(10), || {
            new.role() == "master" && old.info_field("master_failover_state").as_deref() == Some("no-failover")
        });
        spans.push((started, Instant::now()));
        // FAILOVER re-points only the old master; bring the third along.
        let third = &nodes[(round + 1) % 3];
        third.cmd::<()>(&["REPLICAOF", "127.0.0.1", &new.port().to_string()]);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let verdict = tally.check(&read_list(&Destination::Fixed(nodes[ROTATIONS % 3].addr()), "ids", Duration::from_secs(5)).await.expect("read back"));
    report_windows("redis FAILOVER", &tally, &spans, verdict);
}

fn report_windows(
    what: &str,
    tally: &counter::Tally,
    spans: &[(Instant, Instant)],
    verdict: counter::Verdict,
) {
    let gaps: Vec<Duration> = spans.iter().map(|(a, b)| tally.longest_gap(*a, *b)).collect();
    let (median, max) = median_max_ms(&gaps);
    println!("{what}: {ROTATIONS} switchovers among 3 instances at ~1000 writes/s");
    println!("  write-unavailable window per switchover: median {median:.1} ms, max {max:.1} ms");
    println!("  rejected writes: {} ({:.1} per switchover)", verdict.rejected, verdict.rejected as f64 / ROTATIONS as f64);
    println!("  {verdict}");
}

/// The topology as the HTTP API takes it.
fn topology_json(nodes: &[Redis], master: usize) -> String {
    let member = |r: &Redis| serde_json::json!({"address": "127.0.0.1", "port": r.port()});
    let slaves: Vec<_> = nodes.iter().enumerate().filter(|(i, _)| *i != master).map(|(_, r)| member(r)).collect();
    serde_json::json!({"master": member(&nodes[master]), "slaves": slaves}).to_string()
}

/// What an HTTP client waits for: `PUT /master` to the dictator binary until the
/// answer, on one client warmed by the first PUT, so its setup is not in the figure.
async fn apply_latency(members: usize) {
    let nodes: Vec<Redis> = (0..members).map(|_| Redis::start()).collect();
    let port = harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    // A nameserver where nothing listens: members are addresses, nothing to resolve.
    let nameserver = format!("127.0.0.1:{}", harness::free_port());
    let mut service = harness::Service::start("dictator", &["--listen", &listen, "--nameserver", &nameserver, "--cluster", "bench"], &[]);
    service.wait_http(port);
    let url = format!("http://{listen}/master");
    let client = reqwest::Client::new();
    let put = |master: usize| {
        let request = client.put(&url).body(topology_json(&nodes, master));
        async move {
            let resp = request.send().await.expect("PUT /master");
            let status = resp.status();
            let answer = resp.text().await.expect("the answer");
            assert!(status.is_success(), "PUT /master: {status} {answer}");
        }
    };
    put(0).await;
    let mut latencies = Vec::new();
    for round in 1..=10 {
        nodes[(round - 1) % 2].cmd::<()>(&["SET", "round", &round.to_string()]);
        let started = Instant::now();
        put(round % 2).await;
        latencies.push(started.elapsed());
    }
    let (median, max) = median_max_ms(&latencies);
    println!("apply latency over HTTP (PUT to answer), 1 master + {} slaves (10 switchovers): median {median:.1} ms, max {max:.1} ms", members - 1);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench -p dictator --bench switchover -- dictator` runs one section.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wanted("dictator") {
        dictator_rotations().await;
    }
    if wanted("failover") {
        redis_failover_rotations().await;
    }
    if wanted("latency") {
        apply_latency(3).await;
        apply_latency(9).await;
    }
}
