//! dnsd, dnsmasq and Knot side by side: CPU per query (printed, never asserted). Run:
//!
//!     cargo bench -p dnsd --bench servers              # all three, both loads
//!     cargo bench -p dnsd --bench servers -- dnsd      # one server (dnsd|dnsmasq|knot)
//!
//! (cargo builds the release `dnsd` next to the bench first.) The servers run one
//! after another, each pinned to core 0 (`taskset`), with `dnsperf` pinned to core 1,
//! serving the same records: 4 clusters of a master and 2 slaves (master and slaves
//! SRV, with and without `_redis._tcp`, the master's A record, every node's A and SRV
//! records), asked the same mix of those names. Two loads: as fast as dnsperf can send
//! (queries/s is then the server's ceiling), and a fixed 20,000 queries/s that all
//! three sustain, where CPU per query compares like for like. CPU is the server's
//! utime + stime from `/proc/<pid>/stat` over the run, divided by the queries answered.
//! dnsd serves one UDP socket on one tokio worker (`--dns-udp-sockets 1`,
//! `TOKIO_WORKER_THREADS=1`), Knot one UDP worker, dnsmasq is single-threaded.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use harness::process::Process;
use harness::{free_port, Etcd};
use serde_json::json;

const DOMAIN: &str = "cluster.local";
const CLUSTERS: usize = 4;
const NODES: usize = 3;
const SECONDS: &str = "10";
const FIXED_RATE: &str = "20000";
const SERVER_CORE: &str = "0";
const CLIENT_CORE: &str = "1";

fn address(cluster: usize, node: usize) -> String {
    format!("10.0.{cluster}.{node}")
}
fn redis_port(node: usize) -> u16 {
    7000 + node as u16
}
fn node_name(cluster: usize, node: usize) -> String {
    format!("node-{node}.redis-{cluster}.{DOMAIN}")
}

/// The names asked, with their type, the same for every server.
fn query_file(dir: &Path) -> PathBuf {
    let mut lines = Vec::new();
    for c in 1..=CLUSTERS {
        for name in ["master", "_redis._tcp.master", "slaves", "_redis._tcp.slaves"] {
            lines.push(format!("{name}.redis-{c}.{DOMAIN} SRV"));
        }
        lines.push(format!("master.redis-{c}.{DOMAIN} A"));
        for n in 1..=NODES {
            lines.push(format!("{} A", node_name(c, n)));
            lines.push(format!("{} SRV", node_name(c, n)));
        }
    }
    let path = dir.join("queries.txt");
    std::fs::write(&path, lines.join("\n") + "\n").expect("write the query file");
    path
}

/// Clock ticks of CPU (user + system) `pid` used so far, all threads.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn ticks_per_second() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100)
}

struct Run {
    qps: f64,
    completed: u64,
    lost: String,
    codes: String,
    cpu_us_per_query: f64,
}

/// dnsperf on the client core against `port`, while measuring `pid`'s CPU.
fn dnsperf(pid: u32, port: u16, queries: &Path, rate: Option<&str>) -> Option<Run> {
    let before = cpu_ticks(pid)?;
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", CLIENT_CORE, "dnsperf", "-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(["-l", SECONDS, "-c", "1", "-T", "1", "-q", "200"]);
    if let Some(rate) = rate {
        cmd.args(["-Q", rate]);
    }
    let out = cmd.output().ok()?;
    let after = cpu_ticks(pid)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| text.lines().find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()));
    let completed: u64 = field("Queries completed:")?.split_whitespace().next()?.parse().ok()?;
    let qps = field("Queries per second:")?.parse().ok()?;
    let cpu_us = (after - before) as f64 * 1e6 / ticks_per_second() as f64;
    Some(Run {
        qps,
        completed,
        lost: field("Queries lost:").unwrap_or_default(),
        codes: field("Response codes:").unwrap_or_default(),
        cpu_us_per_query: cpu_us / completed.max(1) as f64,
    })
}

fn pinned(program: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", SERVER_CORE, program]);
    cmd
}

/// dnsd against a fresh etcd, every cluster published through `PUT /clusters/<c>/dns`.
async fn dnsd(dir: &Path) -> (Process, u16, Etcd) {
    let etcd = Etcd::start();
    let mut client = etcd.client().await;
    for c in 1..=CLUSTERS {
        for n in 1..=NODES {
            let record = json!({"address": address(c, n), "port": redis_port(n), "role": "unknown", "repl_offset": 0,
                "run_id": "bench", "healthy": true, "updated_ms": 1});
            client.put(format!("/nodes/redis-{c}/node-{n}"), record.to_string(), None).await.expect("register");
        }
    }
    let (http, dns) = (free_port(), free_port());
    let binary = harness::binary("dnsd");
    let mut cmd = pinned(binary.to_str().expect("path"));
    cmd.args(["--listen", &format!("127.0.0.1:{http}"), "--dns-listen", &format!("127.0.0.1:{dns}")])
        .args(["--etcd-endpoints", &etcd.endpoint(), "--dns-udp-sockets", "1"])
        .env("TOKIO_WORKER_THREADS", "1")
        .env("RUST_LOG", "warn");
    let process = Process::spawn("dnsd", cmd, &dir.join("dnsd.log"));
    let http_client = reqwest::Client::new();
    for c in 1..=CLUSTERS {
        let slaves: Vec<_> = (2..=NODES).map(|n| json!({"address": node_name(c, n)})).collect();
        let topology = json!({"master": {"address": node_name(c, 1)}, "slaves": slaves}).to_string();
        let url = format!("http://127.0.0.1:{http}/clusters/redis-{c}/dns");
        let mut tries = 0;
        loop {
            match http_client.put(&url).body(topology.clone()).send().await {
                Ok(r) if r.status().is_success() => break,
                other if tries > 100 => panic!("PUT {url}: {other:?}"),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
            tries += 1;
        }
    }
    (process, dns, etcd)
}

fn dnsmasq(dir: &Path) -> (Process, u16) {
    let port = free_port();
    let mut cmd = pinned("dnsmasq");
    cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--user={}", user()))
        .arg(format!("--local=/{DOMAIN}/"))
        .arg("--local-ttl=1")
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
    for c in 1..=CLUSTERS {
        for name in ["master", "_redis._tcp.master"] {
            cmd.arg(format!("--srv-host={name}.redis-{c}.{DOMAIN},{},{}", node_name(c, 1), redis_port(1)));
        }
        for name in ["slaves", "_redis._tcp.slaves"] {
            for n in 2..=NODES {
                cmd.arg(format!("--srv-host={name}.redis-{c}.{DOMAIN},{},{}", node_name(c, n), redis_port(n)));
            }
        }
        for n in 1..=NODES {
            cmd.arg(format!("--srv-host={},{},{}", node_name(c, n), node_name(c, n), redis_port(n)));
            cmd.arg(format!("--host-record={},{}", node_name(c, n), address(c, n)));
        }
        cmd.arg(format!("--host-record=master.redis-{c}.{DOMAIN},{}", address(c, 1)));
    }
    (Process::spawn("dnsmasq", cmd, &dir.join("dnsmasq.log")), port)
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn knot(dir: &Path) -> (Process, u16) {
    let port = free_port();
    let mut zone = vec![
        format!("$ORIGIN {DOMAIN}."),
        "$REDIS_TOPOLOGY_TTL 1".to_string(),
        "@ SOA ns hostmaster 1 60 10 3600 1".to_string(),
        "@ NS ns".to_string(),
        "ns A 127.0.0.1".to_string(),
    ];
    for c in 1..=CLUSTERS {
        let target = |n: usize| format!("{}.", node_name(c, n));
        for name in ["master", "_redis._tcp.master"] {
            zone.push(format!("{name}.redis-{c} SRV 0 100 {} {}", redis_port(1), target(1)));
        }
        zone.push(format!("master.redis-{c} A {}", address(c, 1)));
        for name in ["slaves", "_redis._tcp.slaves"] {
            for n in 2..=NODES {
                zone.push(format!("{name}.redis-{c} SRV 0 100 {} {}", redis_port(n), target(n)));
            }
        }
        for n in 1..=NODES {
            zone.push(format!("node-{n}.redis-{c} A {}", address(c, n)));
            zone.push(format!("node-{n}.redis-{c} SRV 0 100 {} {}", redis_port(n), target(n)));
        }
    }
    std::fs::write(dir.join(format!("{DOMAIN}.zone")), zone.join("\n") + "\n").expect("zone file");
    let config = format!(
        "server:\n    rundir: \"{d}\"\n    listen: 127.0.0.1@{port}\n    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n\
         database:\n    storage: \"{d}\"\n\
         log:\n  - target: stderr\n    any: warning\n\
         zone:\n  - domain: {DOMAIN}\n    storage: \"{d}\"\n    file: {DOMAIN}.zone\n    semantic-checks: on\n",
        d = dir.display()
    );
    let conf = dir.join("knot.conf");
    std::fs::write(&conf, config).expect("knot.conf");
    let mut cmd = pinned("knotd");
    cmd.arg("-c").arg(&conf);
    (Process::spawn("knotd", cmd, &dir.join("knotd.log")), port)
}

/// Waits until `dig` gets the master's SRV record from `port`.
fn wait_serving(name: &str, port: u16, process: &mut Process) {
    for _ in 0..100 {
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &port.to_string(), "+short", "+time=1", "+tries=1"])
            .args([&format!("_redis._tcp.master.redis-1.{DOMAIN}"), "SRV"])
            .output();
        if out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("node-1.redis-1")) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} does not answer on {port}:\n{}", process.log_tail(3000));
}

fn report(name: &str, pid: u32, port: u16, queries: &Path) {
    for (load, rate) in [("max", None), ("fixed", Some(FIXED_RATE))] {
        match dnsperf(pid, port, queries, rate) {
            Some(run) => println!(
                "  {name:<8} {load:<5} {:>9.0} queries/s  {:>6.2} us CPU/query  ({} completed; lost {}; {})",
                run.qps, run.cpu_us_per_query, run.completed, run.lost, run.codes
            ),
            None => println!("  {name:<8} {load:<5} dnsperf failed"),
        }
    }
}

fn missing(program: &str) -> bool {
    !Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    for program in ["taskset", "dnsperf", "dig"] {
        if missing(program) {
            println!("{program} is not installed: run scripts/install-deps.sh");
            return;
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let queries = query_file(dir.path());
    println!(
        "== {CLUSTERS} clusters x {NODES} nodes; {} names; each server pinned to core {SERVER_CORE}, dnsperf (-c 1 -T 1 -q 200 -l {SECONDS}) to core {CLIENT_CORE}; max rate, then -Q {FIXED_RATE} ==",
        std::fs::read_to_string(&queries).map_or(0, |q| q.lines().count())
    );
    if wanted("dnsd") {
        let (mut process, port, _etcd) = dnsd(dir.path()).await;
        wait_serving("dnsd", port, &mut process);
        report("dnsd", process.pid().expect("dnsd pid"), port, &queries);
        process.kill();
    }
    if wanted("dnsmasq") {
        if missing("dnsmasq") {
            println!("  dnsmasq: not installed (scripts/install-deps.sh); skipped");
        } else {
            let (mut process, port) = dnsmasq(dir.path());
            wait_serving("dnsmasq", port, &mut process);
            report("dnsmasq", process.pid().expect("dnsmasq pid"), port, &queries);
            process.kill();
        }
    }
    if wanted("knot") {
        if missing("knotd") {
            println!("  knot: not installed (scripts/install-deps.sh); skipped");
        } else {
            let (mut process, port) = knot(dir.path());
            wait_serving("knot", port, &mut process);
            report("knot", process.pid().expect("knotd pid"), port, &queries);
            process.kill();
        }
    }
}
