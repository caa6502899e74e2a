//! A failed master, side by side with Redis Sentinel (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench failover [-- [ours|sentinel] [kill|stop]]
//!
//! For each system and each way to fail, 10 times: a writer pushes ~500 ids/s, the
//! master's redis fails, and we measure the time from the failure to the first
//! write acknowledged again, and the acknowledged writes lost (the counter's
//! `missing`, read back at the end). The failed instance is then restarted empty
//! and must rejoin as a replica before the next failure. Two ways to fail:
//!
//! - `kill`: kill -9; connections are refused, which the observer fails over at
//!   once (`--failover-after-refused-ms`, default 0);
//! - `stop`: SIGSTOP, a hung master; connections time out, which the observer
//!   waits `--failover-after-ms` (default 1000) for, as it may be a pause.
//!
//! - redis-topology: writes through HAProxy (the recommended client path), the
//!   observer's default delays;
//! - Redis Sentinel: 3 sentinels, quorum 2, `down-after-milliseconds 1000`; the
//!   writer finds the master by asking the instances for their `ROLE`.
//!
//! A failure after which no write is acknowledged again is printed and makes the
//! benchmark exit 1.

use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use counter::{median_max_ms, read_list, Pace, Tally, Destination, Writer};
use harness::process::Process;
use harness::stack::{Stack, StackOptions};
use harness::{free_port, Redis};

const FAILURES: usize = 10;
/// A write waits at most 500 ms: on a hung master, the time to recovery should
/// measure the failover more than the client's own timeout.
const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_millis(500) };

/// How the master's redis fails.
#[derive(Clone, Copy)]
enum Fault {
    /// kill -9: connections are refused.
    Kill,
    /// SIGSTOP: connections and writes time out.
    Stop,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill -9",
            Fault::Stop => "SIGSTOP",
        }
    }

    fn inflict(self, redis: &mut Redis) -> Instant {
        let at = Instant::now();
        match self {
            Fault::Kill => redis.kill(),
            Fault::Stop => redis.freeze(true),
        }
        at
    }
}

/// Time from `failure` to the acknowledgement that ends the longest gap before
/// the next failure: the first ack after it can be the failed master's reply
/// already on its way. `None` if writes never came back.
fn recovery(tally: &Tally, failure: Instant, next: Option<Instant>) -> Option<Duration> {
    let before_next = |at: Instant| next.is_none_or(|n| at < n);
    let after: Vec<Instant> = tally.acked.iter().map(|(_, at)| *at).filter(|at| *at > failure && before_next(*at)).collect();
    let last_before = tally.acked.iter().map(|(_, at)| *at).take_while(|at| *at <= failure).last();
    let first = *after.first()?;
    let gaps = std::iter::once((last_before.unwrap_or(failure), first)).chain(after.windows(2).map(|w| (w[0], w[1])));
    gaps.max_by_key(|(a, b)| *b - *a).map(|(_, end)| end - failure)
}

/// Prints the run; false when writes did not come back after some failure.
fn report(what: &str, fault: Fault, tally: &Tally, list: &[String], failures: &[Instant]) -> bool {
    let verdict = tally.check(list);
    let recoveries: Vec<Option<Duration>> =
        failures.iter().enumerate().map(|(i, f)| recovery(tally, *f, failures.get(i + 1).copied())).collect();
    let recovered: Vec<Duration> = recoveries.iter().flatten().copied().collect();
    let (median, max) = median_max_ms(&recovered);
    println!("{what}: {} {} of the master", failures.len(), fault.name());
    println!("  failure -> first write acknowledged again: median {median:.0} ms, max {max:.0} ms");
    let each: Vec<String> = recoveries.iter().map(|d| d.map_or("never".to_string(), |d| d.as_millis().to_string())).collect();
    println!("  each (ms): {}", each.join(" "));
    let never = recoveries.iter().filter(|r| r.is_none()).count();
    if never > 0 {
        println!("  FAILED: after {never} of {} failures no write was acknowledged again (before the next one)", failures.len());
    }
    println!("  acknowledged writes lost: {} ({:?} acknowledged before each failure)", verdict.missing, missing_per_failure(tally, list, failures));
    println!("  {verdict}");
    never == 0
}

/// The counter's missing ids, split by the failure that followed their
/// acknowledgement (the last entry: after the last failure).
fn missing_per_failure(tally: &Tally, list: &[String], failures: &[Instant]) -> Vec<usize> {
    let present: std::collections::HashSet<&str> = list.iter().map(String::as_str).collect();
    let mut per = vec![0; failures.len() + 1];
    for (_, at) in tally.acked.iter().filter(|(id, _)| !present.contains(id.as_str())) {
        per[failures.partition_point(|f| f < at)] += 1;
    }
    per
}

async fn ours(fault: Fault) -> bool {
    let mut stack = Stack::start(StackOptions {
        haproxy: true,
        observer_args: &["--failover-cooldown-secs", "0"],
        ..StackOptions::default()
    });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let target = Destination::Fixed(stack.write.expect("haproxy"));
    let writer = Writer::start(target.clone(), "bench-ids", PACE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut failures = Vec::new();
    for _ in 0..FAILURES {
        let master = (0..3).find(|i| stack.nodes[*i].redis.role() == "master").expect("a master");
        failures.push(fault.inflict(&mut stack.nodes[master].redis));
        harness::wait_until("a new master", Duration::from_secs(30), || {
            (0..3).any(|i| i != master && stack.nodes[i].redis.role() == "master")
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Killed (even if stopped) and back empty: after either fault the old
        // master returns the same way, so the runs differ only in how it failed.
        stack.nodes[master].redis.restart_empty();
        let old = &stack.nodes[master].redis;
        harness::wait_until("the old master to rejoin", Duration::from_secs(30), || {
            old.role() == "slave" && old.info_field("master_link_status").as_deref() == Some("up")
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let list = read_list(&target, "bench-ids", Duration::from_secs(10)).await.expect("read back");
    report("redis-topology (through HAProxy)", fault, &tally, &list, &failures)
}

struct Sentinel {
    _process: Process,
    _dir: tempfile::TempDir,
}

fn sentinel(master: u16) -> Sentinel {
    let dir = tempfile::tempdir().expect("sentinel dir");
    let port = free_port();
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor bench 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds bench 1000\nsentinel failover-timeout bench 10000\n\
             sentinel parallel-syncs bench 2\n",
            dir.path().display()
        ),
    )
    .expect("write sentinel.conf");
    let mut cmd = Command::new("redis-server");
    cmd.arg(&conf).arg("--sentinel");
    let process = Process::spawn("sentinel", cmd, &dir.path().join("sentinel.log"));
    Sentinel { _process: process, _dir: dir }
}

async fn redis_sentinel(fault: Fault) -> bool {
    let mut nodes: Vec<Redis> = (0..3).map(|_| Redis::start()).collect();
    for n in &nodes[1..] {
        n.cmd::<()>(&["REPLICAOF", "127.0.0.1", &nodes[0].port().to_string()]);
    }
    harness::wait_until("replicas linked", Duration::from_secs(20), || {
        nodes[1..].iter().all(|n| n.info_field("master_link_status").as_deref() == Some("up"))
    });
    let _sentinels: Vec<Sentinel> = (0..3).map(|_| sentinel(nodes[0].port())).collect();
    tokio::time::sleep(Duration::from_secs(3)).await; // sentinels discover each other
    let addrs: Vec<SocketAddr> = nodes.iter().map(Redis::addr).collect();
    let target = Destination::Discover(addrs);
    let writer = Writer::start(target.clone(), "bench-ids", PACE);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut failures = Vec::new();
    for _ in 0..FAILURES {
        let master = (0..3).find(|i| nodes[*i].role() == "master").expect("a master");
        failures.push(fault.inflict(&mut nodes[master]));
        harness::wait_until("sentinel to promote a replica", Duration::from_secs(60), || {
            (0..3).any(|i| i != master && nodes[i].role() == "master")
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        nodes[master].restart_empty();
        let old = &nodes[master];
        harness::wait_until("sentinel to turn the old master into a replica", Duration::from_secs(60), || {
            old.role() == "slave" && old.info_field("master_link_status").as_deref() == Some("up")
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let list = read_list(&target, "bench-ids", Duration::from_secs(10)).await.expect("read back");
    report("Redis Sentinel (down-after-milliseconds 1000)", fault, &tally, &list, &failures)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |names: &[&str], name: &str| !only.iter().any(|o| names.contains(&o.as_str())) || only.iter().any(|o| o == name);
    let mut recovered = true;
    for (fault, name) in [(Fault::Kill, "kill"), (Fault::Stop, "stop")] {
        if !wanted(&["kill", "stop"], name) {
            continue;
        }
        if wanted(&["ours", "sentinel"], "ours") {
            recovered &= ours(fault).await;
        }
        if wanted(&["ours", "sentinel"], "sentinel") {
            recovered &= redis_sentinel(fault).await;
        }
    }
    if recovered { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
