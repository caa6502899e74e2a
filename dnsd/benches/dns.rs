//! DNS benchmark (printed, never asserted). Run:
//!
//!     cargo bench -p dnsd --bench dns
//!
//! (cargo builds the release `dnsd` binary next to the bench first.)
//!
//! 1. Throughput: `dnsperf` for 10 s against dnsd (release build, 3 registered nodes,
//!    one published topology) with a mix of master/slaves/_redis._tcp/node SRV and A
//!    queries, then the same against dnsmasq serving equivalent records, if installed.
//! 2. Propagation: 100 `PUT /dns` changes alternating the master; for each, the time
//!    from the PUT response to the first UDP answer with the new master, on the
//!    replica that took the PUT and on a second replica (via the etcd watch), plus a
//!    count of answers that were neither the old nor the new master (must be 0).

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{free_port, Etcd, Service};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use serde_json::json;

const CLUSTER: &str = "bench";
const NODES: [(&str, &str, u16); 3] =
    [("node-1", "127.0.0.11", 7001), ("node-2", "127.0.0.12", 7002), ("node-3", "127.0.0.13", 7003)];
const CHANGES: usize = 100;
const DNSPERF_SECONDS: &str = "10";

struct Replica {
    _service: Service,
    http: u16,
    dns: u16,
}

fn start_dnsd(etcd: &Etcd) -> Replica {
    let (http, dns) = (free_port(), free_port());
    let (listen, dns_listen) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{dns}"));
    let endpoint = etcd.endpoint();
    let args = ["--listen", &listen, "--dns-listen", &dns_listen, "--etcd-endpoints", &endpoint, "--cluster", CLUSTER];
    let mut service = Service::start("dnsd", &args, &[("RUST_LOG", "warn")]);
    service.wait_http(http);
    Replica { _service: service, http, dns }
}

fn topology(master: usize) -> String {
    let name = |i: usize| format!("{}.{CLUSTER}.cluster.local", NODES[i].0);
    let slaves: Vec<_> = (0..NODES.len()).filter(|i| *i != master).map(|i| json!({"address": name(i)})).collect();
    json!({"master": {"address": name(master)}, "slaves": slaves}).to_string()
}

fn query_file() -> tempfile::NamedTempFile {
    let mut lines = Vec::new();
    for name in ["master", "_redis._tcp.master", "slaves", "_redis._tcp.slaves"] {
        lines.push(format!("{name}.{CLUSTER}.cluster.local SRV"));
    }
    for (node, _, _) in NODES {
        lines.push(format!("{node}.{CLUSTER}.cluster.local SRV"));
        lines.push(format!("{node}.{CLUSTER}.cluster.local A"));
    }
    lines.push(format!("master.{CLUSTER}.cluster.local A"));
    let file = tempfile::NamedTempFile::new().expect("query file");
    std::fs::write(file.path(), lines.join("\n") + "\n").expect("write query file");
    file
}

/// Runs dnsperf; returns (queries/s, lost, summary line).
fn dnsperf(port: u16, queries: &std::path::Path) -> Option<(f64, String)> {
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-p", &port.to_string(), "-d"])
        .arg(queries)
        .args(["-l", DNSPERF_SECONDS, "-c", "4", "-Q", "500000"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
    };
    let qps = field("Queries per second:")?.parse().ok()?;
    let lost = field("Queries lost:").unwrap_or_default();
    let codes = field("Response codes:").unwrap_or_default();
    Some((qps, format!("lost {lost}; {codes}")))
}

fn dnsmasq(port: u16) -> Option<harness::process::Process> {
    let which = Command::new("sh").args(["-c", "command -v dnsmasq"]).output().ok()?;
    if !which.status.success() {
        return None;
    }
    let user = Command::new("id").arg("-un").output().ok()?;
    let user = String::from_utf8_lossy(&user.stdout).trim().to_string();
    let dir = std::env::temp_dir().join(format!("dnsd-bench-dnsmasq-{port}"));
    let _ = std::fs::create_dir_all(&dir);
    let mut cmd = Command::new("dnsmasq");
    cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--user={user}"))
        .arg("--local-ttl=1");
    let target = |i: usize| format!("{}.{CLUSTER}.cluster.local", NODES[i].0);
    for name in ["master", "_redis._tcp.master"] {
        cmd.arg(format!("--srv-host={name}.{CLUSTER}.cluster.local,{},{}", target(0), NODES[0].2));
    }
    for name in ["slaves", "_redis._tcp.slaves"] {
        for (i, (_, _, port)) in NODES.iter().enumerate().skip(1) {
            cmd.arg(format!("--srv-host={name}.{CLUSTER}.cluster.local,{},{port}", target(i)));
        }
    }
    for (i, (_, address, port)) in NODES.iter().enumerate() {
        cmd.arg(format!("--srv-host={},{},{port}", target(i), target(i)));
        cmd.arg(format!("--host-record={},{address}", target(i)));
    }
    cmd.arg(format!("--host-record=master.{CLUSTER}.cluster.local,{}", NODES[0].1));
    Some(harness::process::Process::spawn("dnsmasq", cmd, &dir.join("dnsmasq.log")))
}

/// The SRV targets `_redis._tcp.master` answers with, or the rcode.
fn master_target(socket: &UdpSocket, server: SocketAddr, id: u16) -> Result<Vec<String>, String> {
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(format!("_redis._tcp.master.{CLUSTER}.cluster.local.")).map_err(|e| e.to_string())?;
    message.add_query(Query::query(name, RecordType::SRV));
    let bytes = message.to_vec().map_err(|e| e.to_string())?;
    socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 2048];
    loop {
        let n = socket.recv(&mut buf).map_err(|e| e.to_string())?;
        let reply = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
        if reply.metadata.id != id {
            continue; // a late answer to an earlier poll
        }
        if reply.metadata.response_code != ResponseCode::NoError {
            return Err(reply.metadata.response_code.to_string());
        }
        return Ok(reply
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.target.to_string()),
                _ => None,
            })
            .collect());
    }
}

fn median_max(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(samples[samples.len() / 2]), ms(samples[samples.len() - 1]))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let etcd = Etcd::start();
    let mut client = etcd.client().await;
    for (node, address, port) in NODES {
        let record = json!({"address": address, "port": port, "role": "unknown", "repl_offset": 0,
            "run_id": "bench", "healthy": true, "updated_ms": 1});
        client.put(format!("/nodes/{CLUSTER}/{node}"), record.to_string(), None).await.expect("register");
    }
    let a = start_dnsd(&etcd);
    let b = start_dnsd(&etcd);
    let http = reqwest::Client::new();
    let put = |replica: &Replica, master: usize| {
        http.put(format!("http://127.0.0.1:{}/dns", replica.http)).body(topology(master)).send()
    };
    let status = put(&a, 0).await.expect("PUT /dns").status();
    assert!(status.is_success(), "PUT /dns: {status}");

    println!("== DNS throughput: dnsperf -l {DNSPERF_SECONDS} -c 4 -Q 500000, mix of master/slaves/_redis._tcp/node SRV and A ==");
    let queries = query_file();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    println!("  (client and server share this machine's {cpus} CPU(s))");
    match dnsperf(a.dns, queries.path()) {
        Some((qps, detail)) => println!("  dnsd:    {qps:>10.0} queries/s ({detail})"),
        None => println!("  dnsd:    dnsperf failed or is not installed (apt-get install dnsperf)"),
    }
    let port = free_port();
    match dnsmasq(port) {
        Some(mut process) => {
            std::thread::sleep(Duration::from_millis(500));
            match dnsperf(port, queries.path()) {
                Some((qps, detail)) => println!("  dnsmasq: {qps:>10.0} queries/s ({detail})"),
                None => println!("  dnsmasq: dnsperf failed:\n{}", process.log_tail(2000)),
            }
            process.kill();
        }
        None => println!("  dnsmasq: not installed (apt-get install dnsmasq-base); skipped"),
    }

    println!("== Propagation: {CHANGES} PUT /dns changes (alternating the master), PUT response -> new answer over UDP ==");
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let servers = [SocketAddr::from(([127, 0, 0, 1], a.dns)), SocketAddr::from(([127, 0, 0, 1], b.dns))];
    let mut local = Vec::new();
    let mut remote = Vec::new();
    let (mut wrong, mut errors, mut id) = (0usize, 0usize, 0u16);
    let started = Instant::now();
    for change in 1..=CHANGES {
        let (old, new) = ((change - 1) % NODES.len(), change % NODES.len());
        let want = format!("{}.{CLUSTER}.cluster.local.", NODES[new].0);
        let was = format!("{}.{CLUSTER}.cluster.local.", NODES[old].0);
        let status = put(&a, new).await.expect("PUT /dns").status();
        assert!(status.is_success(), "PUT /dns: {status}");
        let returned = Instant::now();
        for (server, samples) in servers.iter().zip([&mut local, &mut remote]) {
            loop {
                id = id.wrapping_add(1);
                match master_target(&socket, *server, id) {
                    Ok(targets) if targets == [want.clone()] => break,
                    Ok(targets) if targets == [was.clone()] => {}
                    Ok(_) => wrong += 1,
                    Err(_) => errors += 1,
                }
                if returned.elapsed() > Duration::from_secs(5) {
                    println!("  change {change}: {server} did not serve the new master within 5 s");
                    break;
                }
            }
            samples.push(returned.elapsed());
        }
    }
    let (lm, lx) = median_max(&mut local);
    let (rm, rx) = median_max(&mut remote);
    println!("  replica that took the PUT: median {lm:.3} ms, max {lx:.3} ms");
    println!("  other replica (etcd watch): median {rm:.3} ms, max {rx:.3} ms");
    println!("  answers neither old nor new master: {wrong}; errors/timeouts: {errors}");
    println!("  ({CHANGES} changes in {:.1} s)", started.elapsed().as_secs_f64());
}
