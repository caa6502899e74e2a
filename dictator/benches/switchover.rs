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
//! 4. `durability`: the rotations of 1 with the group's durability set
//!    (`min-replicas-to-write 1`, lag 1 s): what the guard costs a switchover.
//! 5. `thaw`: 20 clients write straight to the master (no HAProxy, no agent),
//!    which is frozen (SIGSTOP) and failed over, then thawed, with and without
//!    the durability setting: the writes queued in its sockets, and those sent
//!    after the thaw, that it acknowledges though the group moved on.

use std::time::{Duration, Instant};

use dictator::execute::{ExecSettings, WriteSettings};
use service::redis_auth::Timeouts;
use dictator::{ApplyOptions, Dictator, Settings};
use counter::{median_max_ms, read_list, Pace, Destination, Writer};
use harness::Redis;

const PACE: Pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(10) };
use service::resolve::MemberResolver;
use topology::{Durability, Member, Topology};

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
    Dictator::new(MemberResolver::new(&[harness::silent_nameserver()]).expect("resolver"), settings)
}

fn topology(nodes: &[Redis], master: usize) -> Topology {
    let member = |r: &Redis| Member::parse_host_port(&r.host_port()).expect("member");
    let slaves = nodes.iter().enumerate().filter(|(i, _)| *i != master).map(|(_, r)| member(r)).collect();
    Topology::new(member(&nodes[master]), slaves).expect("topology")
}

async fn apply(d: &Dictator, nodes: &[Redis], master: usize) -> dictator::Report {
    apply_durable(d, nodes, master, None).await
}

async fn apply_durable(d: &Dictator, nodes: &[Redis], master: usize, durability: Option<Durability>) -> dictator::Report {
    let topology = topology(nodes, master).with_durability(durability).expect("durability");
    d.apply("bench", &topology, ApplyOptions::default()).await.expect("apply")
}

/// The guard the `durability` and `thaw` sections set.
const GUARD: Durability = Durability { min_replicas_to_write: 1, min_replicas_max_lag: 1 };

async fn dictator_rotations(durability: Option<Durability>) {
    let nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let d = dictator();
    apply_durable(&d, &nodes, 0, durability).await;
    let writer = Writer::start(Destination::Discover(nodes.iter().map(Redis::addr).collect()), "ids", PACE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut spans = Vec::new();
    let mut pauses = Vec::new();
    let mut slowest: Option<dictator::Report> = None;
    for round in 1..=ROTATIONS {
        let started = Instant::now();
        let report = apply_durable(&d, &nodes, round % 3, durability).await;
        spans.push((started, Instant::now()));
        pauses.push(Duration::from_secs_f64(report.outcome.write_pause_ms / 1000.0));
        if slowest.as_ref().is_none_or(|s| s.outcome.write_pause_ms < report.outcome.write_pause_ms) {
            slowest = Some(report);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let verdict = tally.check(&read_list(&Destination::Fixed(nodes[ROTATIONS % 3].addr()), "ids", Duration::from_secs(5)).await.expect("read back"));
    let what = match durability {
        None => "dictator".to_string(),
        Some(d) => format!("dictator, durability min-replicas-to-write {} lag {} s", d.min_replicas_to_write, d.min_replicas_max_lag),
    };
    report_windows(&what, &tally, &spans, verdict);
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

/// One write to the frozen master: `(id, sent, answered, acknowledged)`.
type Write = (String, Instant, Instant, bool);
type Sent = Vec<Write>;

/// See section 5 of the module's doc.
async fn thaw(durability: Option<Durability>) {
    const CLIENTS: usize = 20;
    let mut nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    let d = dictator();
    apply_durable(&d, &nodes, 0, durability).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let master = nodes[0].addr();
    let clients: Vec<std::thread::JoinHandle<Sent>> = (0..CLIENTS)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://{master}")).expect("client");
                let mut conn = client.get_connection().expect("a connection to the master");
                conn.set_read_timeout(Some(Duration::from_secs(30))).expect("read timeout");
                let mut sent = Vec::new();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let id = format!("{c}-{n}");
                    let at = Instant::now();
                    let answer: redis::RedisResult<i64> = redis::cmd("RPUSH").arg("thaw").arg(&id).query(&mut conn);
                    sent.push((id, at, Instant::now(), answer.is_ok()));
                    std::thread::sleep(Duration::from_millis(20));
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[0].freeze(true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The failover: the frozen master answers no INFO, so it is left out.
    let down = ApplyOptions { down: Some(master), ..ApplyOptions::default() };
    let topology = topology(&nodes, 1).with_durability(durability).expect("durability");
    let report = d.apply("bench", &topology, down).await.expect("the failover");
    assert!(report.unreachable.contains(&master), "the frozen master was observed: {report:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let thawed = Instant::now();
    nodes[0].freeze(false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent: Vec<_> = clients.into_iter().flat_map(|c| c.join().expect("a client")).collect();
    let kept: std::collections::HashSet<String> = nodes[1].cmd::<Vec<String>>(&["LRANGE", "thaw", "0", "-1"]).into_iter().collect();
    let lost = |f: &dyn Fn(&Write) -> bool| {
        let of: Vec<_> = sent.iter().filter(|w| f(w)).collect();
        (of.iter().filter(|w| w.3 && !kept.contains(&w.0)).count(), of.iter().filter(|w| w.3).count(), of.len())
    };
    let (queued_lost, queued_acked, queued) = lost(&|w| w.1 < thawed && w.2 >= thawed);
    let (later_lost, later_acked, later) = lost(&|w| w.1 >= thawed);
    let (before_lost, ..) = lost(&|w| w.2 < thawed);
    let what = match durability {
        None => "no durability setting".to_string(),
        Some(d) => format!("durability min-replicas-to-write {} lag {} s", d.min_replicas_to_write, d.min_replicas_max_lag),
    };
    println!("thaw after a 1.5 s freeze and a failover, {CLIENTS} direct clients, {what}:");
    println!("  queued in the frozen master's sockets: {queued} writes, {queued_acked} acknowledged after the thaw, {queued_lost} of them lost");
    println!("  sent in the 2 s after the thaw: {later} writes, {later_acked} acknowledged, {later_lost} lost");
    println!("  acknowledged before the freeze and lost: {before_lost}");
    nodes[0].kill();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench -p dictator --bench switchover -- dictator` runs one section.
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wanted("dictator") {
        dictator_rotations(None).await;
    }
    if wanted("durability") {
        dictator_rotations(Some(GUARD)).await;
    }
    if wanted("thaw") {
        for _ in 0..3 {
            thaw(None).await;
            thaw(Some(GUARD)).await;
        }
    }
    if wanted("failover") {
        redis_failover_rotations().await;
    }
    if wanted("latency") {
        apply_latency(3).await;
        apply_latency(9).await;
    }
}
