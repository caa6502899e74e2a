//! kill -9 of the master, side by side with Redis Sentinel (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench failover
//!
//! For each system, 10 times: a writer pushes ~500 ids/s, the master's redis is
//! killed with SIGKILL, and we measure the time from the kill to the first write
//! acknowledged again, and the acknowledged writes lost. The killed instance is
//! then restarted empty and must rejoin as a replica before the next kill.
//!
//! - redis-topology: writes through HAProxy (the recommended client path), default
//!   `--failover-after-ms 1000`;
//! - Redis Sentinel: 3 sentinels, quorum 2, `down-after-milliseconds 1000`; the
//!   writer finds the master by asking the instances for their `ROLE`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use counter::{median_max_ms, read_list, Pace, Tally, Destination, Writer};
use harness::process::Process;
use harness::stack::{Stack, StackOptions};
use harness::{free_port, Redis};

const KILLS: usize = 10;
const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(2) };

/// Time from `kill` to the first acknowledgement after it.
fn recovery(tally: &Tally, kill: Instant) -> Option<Duration> {
    tally.acked.iter().map(|(_, at)| *at).find(|at| *at > kill).map(|at| at - kill)
}

fn report(what: &str, recoveries: &[Duration], lost: &[usize], verdict: &counter::Verdict) {
    let (median, max) = median_max_ms(recoveries);
    let lost_total: usize = lost.iter().sum();
    println!("{what}: {} kill -9 of the master", recoveries.len());
    println!("  kill -> first write acknowledged again: median {median:.0} ms, max {max:.0} ms");
    let each: Vec<String> = recoveries.iter().map(|d| format!("{}", d.as_millis())).collect();
    println!("  each (ms): {}", each.join(" "));
    println!("  acknowledged writes lost: {lost_total} in total ({lost:?} per kill)");
    println!("  {verdict}");
}

/// Missing ids acknowledged in the second before each kill.
fn lost_per_kill(tally: &Tally, list: &[String], kills: &[Instant]) -> Vec<usize> {
    let present: std::collections::HashSet<&str> = list.iter().map(String::as_str).collect();
    kills
        .iter()
        .map(|k| {
            tally.acked.iter().filter(|(id, at)| *at <= *k && *at + Duration::from_secs(1) > *k && !present.contains(id.as_str())).count()
        })
        .collect()
}

async fn ours() {
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
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        let master = (0..3).find(|i| stack.nodes[*i].redis.role() == "master").expect("a master");
        let kill = Instant::now();
        stack.nodes[master].redis.kill();
        kills.push(kill);
        harness::wait_until("a new master", Duration::from_secs(30), || {
            (0..3).any(|i| i != master && stack.nodes[i].redis.role() == "master")
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        stack.nodes[master].redis.restart_empty();
        let old = &stack.nodes[master].redis;
        harness::wait_until("the old master to rejoin", Duration::from_secs(30), || {
            old.role() == "slave" && old.info_field("master_link_status").as_deref() == Some("up")
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let list = read_list(&target, "bench-ids", Duration::from_secs(10)).await.expect("read back");
    let recoveries: Vec<Duration> = kills.iter().filter_map(|k| recovery(&tally, *k)).collect();
    report("redis-topology (through HAProxy)", &recoveries, &lost_per_kill(&tally, &list, &kills), &tally.check(&list));
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

async fn redis_sentinel() {
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
    let mut kills = Vec::new();
    for _ in 0..KILLS {
        let master = (0..3).find(|i| nodes[*i].role() == "master").expect("a master");
        let kill = Instant::now();
        nodes[master].kill();
        kills.push(kill);
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
    let recoveries: Vec<Duration> = kills.iter().filter_map(|k| recovery(&tally, *k)).collect();
    report("Redis Sentinel (down-after-milliseconds 1000)", &recoveries, &lost_per_kill(&tally, &list, &kills), &tally.check(&list));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    if wanted("ours") {
        ours().await;
    }
    if wanted("sentinel") {
        redis_sentinel().await;
    }
}
