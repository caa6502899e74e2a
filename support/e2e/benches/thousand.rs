//! A thousand groups on one machine (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench thousand
//!     THOUSAND_GROUPS=100 cargo bench -p e2e --bench thousand     # a quick run
//!
//! `THOUSAND_GROUPS` groups (default 1000) of a master and a slave: twice as many
//! real redis-servers (`hz 1`, no persistence: idle groups), spread over
//! `THOUSAND_HOSTS` "hosts" (default one per 50 groups, at least 2), each watched by
//! ONE node-agent (`--instances-file`, `--host host-<i>`). Group `g`'s master runs
//! on host `g % H`, its slave on host `(g + 1) % H`, so every host carries
//! `G / H` masters and as many slaves. One control plane: one dictator, one dnsd,
//! one observer, over a 3-member etcd cluster started here. Topologies name
//! members by IP and port. The agents probe every `THOUSAND_INTERVAL_MS` (default
//! 1000; the agent's default of 250 ms, 8000 probes a second over 2000 instances,
//! keeps a 2-core machine busy with probes alone).
//!
//! It prints:
//! - the time from defining every topology to every group reconciled (cold), and
//!   from an observer restart (SIGTERM, new process) until every group's
//!   `/status/<group>` records a round that started after it, with result `ok`;
//! - etcd writes at rest (`etcd_mvcc_put_total` over 20 s, and which keys), and the
//!   CPU every kind of process used meanwhile;
//! - the RSS (and peak) of dnsd, the observer, the dictator and one agent;
//! - the write-unavailable window of 10 planned switchovers of one group while the
//!   others idle (a writer at ~1000 writes/s finds the master by `ROLE`, as the
//!   failover bench's Sentinel writer does; the longest gap between acknowledged
//!   writes around each move, as `--bench haproxy` measures it);
//! - after kill -9 of every redis-server of host 0 (its masters and slaves; its
//!   agent lives on and reports them down), the time until every group takes a
//!   `SET` again.
//!
//! Every process it starts dies with it (the harness's processes are killed when
//! dropped, and with the parent-death signal if the bench itself dies).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use counter::{median_max_ms, Destination, Pace, Writer};
use etcd_client::{Client, GetOptions};
use futures::future::join_all;
use harness::process::Process;
use harness::{free_port, Service};
use topology::Keys;

const REST_WINDOW: Duration = Duration::from_secs(20);
const MOVES: usize = 10;

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn group(g: usize) -> String {
    format!("g{g:04}")
}

/// One member of the 3-member etcd cluster.
struct Member {
    process: Process,
    client_port: u16,
}

fn start_etcd(dir: &Path) -> Vec<Member> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, (client, peer))| {
            let (client_url, peer_url) = (format!("http://127.0.0.1:{client}"), format!("http://127.0.0.1:{peer}"));
            let mut cmd = Command::new("etcd");
            cmd.arg("--name").arg(format!("e{i}"))
                .arg("--data-dir").arg(dir.join(format!("etcd-{i}")))
                .arg("--listen-client-urls").arg(&client_url)
                .arg("--advertise-client-urls").arg(&client_url)
                .arg("--listen-peer-urls").arg(&peer_url)
                .arg("--initial-advertise-peer-urls").arg(&peer_url)
                .arg("--initial-cluster").arg(&cluster)
                .arg("--initial-cluster-state").arg("new")
                .arg("--initial-cluster-token").arg("thousand")
                .arg("--log-level").arg("warn");
            Member { process: Process::spawn(&format!("etcd-{i}"), cmd, &dir.join(format!("etcd-{i}.log"))), client_port: *client }
        })
        .collect();
    for member in &members {
        harness::wait_until("etcd member healthy", Duration::from_secs(60), || {
            harness::etcd::http_get(member.client_port, "/health").is_some_and(|b| b.contains("\"true\""))
        });
    }
    members
}

fn start_redis(dir: &Path, port: u16) -> Process {
    let data = dir.join(format!("redis-{port}"));
    std::fs::create_dir_all(&data).expect("redis dir");
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "no"])
        .arg("--dir").arg(&data)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no", "--hz", "1"])
        .args(["--repl-diskless-sync-delay", "0"]);
    Process::spawn(&format!("redis:{port}"), cmd, &data.join("redis.log"))
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok() && matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// `/proc/<pid>/status` fields, in kB.
fn memory_kb(pid: Option<u32>, field: &str) -> u64 {
    let Some(pid) = pid else { return 0 };
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').trim().strip_suffix(" kB")?.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU time used so far (user + system) by `pid`, in seconds.
fn cpu_secs(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = text.rsplit_once(')') else { return 0.0 };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn etcd_counter(port: u16, name: &str) -> f64 {
    let text = harness::etcd::http_get(port, "/metrics").expect("etcd /metrics");
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("etcd's /metrics has no {name}"))
}

/// Every group's status record: (started_ms, result, topology_revision).
async fn statuses(client: &mut Client, keys: &Keys) -> BTreeMap<String, (u64, String, i64)> {
    let prefix = keys.status("");
    let got = match client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())).await {
        Ok(got) => got,
        Err(_) => return BTreeMap::new(),
    };
    got.kvs()
        .iter()
        .filter_map(|kv| {
            let group = kv.key_str().ok()?.strip_prefix(prefix.as_str())?.to_string();
            let v: serde_json::Value = serde_json::from_slice(kv.value()).ok()?;
            Some((group, (v["started_ms"].as_u64()?, v["result"].as_str()?.to_string(), v["topology_revision"].as_i64()?)))
        })
        .collect()
}

/// Waits until every group has an `ok` round that started at or after `since_ms`
/// (and for a topology revision at least `revision`); returns how long it took
/// from `from`, or `None` after `timeout` (printing how many were done).
async fn wait_reconciled(
    client: &mut Client,
    keys: &Keys,
    groups: usize,
    since_ms: u64,
    revision: i64,
    from: Instant,
    timeout: Duration,
) -> Option<Duration> {
    let mut done = 0;
    while from.elapsed() < timeout {
        let all = statuses(client, keys).await;
        done = all.values().filter(|(started, result, rev)| *started >= since_ms && result == "ok" && *rev >= revision).count();
        if done >= groups {
            return Some(from.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("  (only {done} of {groups} groups reconciled within {timeout:?})");
    None
}

async fn count_healthy(client: &mut Client, keys: &Keys) -> usize {
    let Ok(got) = client.get(keys.nodes_prefix(), Some(GetOptions::new().with_prefix())).await else { return 0 };
    got.kvs()
        .iter()
        .filter(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).is_ok_and(|v| v["healthy"] == true))
        .count()
}

fn topology(master: u16, slave: u16) -> String {
    serde_json::json!({
        "master": { "address": "127.0.0.1", "port": master },
        "slaves": [{ "address": "127.0.0.1", "port": slave }],
    })
    .to_string()
}

/// Whether redis on `port` takes a SET now.
async fn writable(port: u16) -> bool {
    let attempt = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("SET").arg("thousand-probe").arg("1").query_async::<()>(&mut conn).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_millis(300), attempt).await, Ok(Some(())))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let groups = env_usize("THOUSAND_GROUPS").unwrap_or(1000).max(1);
    let hosts = env_usize("THOUSAND_HOSTS").unwrap_or_else(|| groups.div_ceil(50)).max(2);
    let interval = env_usize("THOUSAND_INTERVAL_MS").unwrap_or(1000);
    let dir = tempfile::tempdir().expect("bench temp dir");
    let keys = Keys::new("");
    let nofile = Command::new("sh").args(["-c", "ulimit -n"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    println!(
        "{groups} groups (master + slave, {} redis-servers, hz 1), {hosts} hosts with one node-agent each (interval {interval} ms), \
         1 dictator, 1 dnsd, 1 observer, 3 etcd members; ulimit -n {}",
        2 * groups,
        nofile.unwrap_or_default()
    );

    let started = Instant::now();
    let etcd = start_etcd(dir.path());
    let endpoints = etcd.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect::<Vec<_>>().join(",");
    let mut client = Client::connect(etcd.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect::<Vec<_>>(), None)
        .await
        .expect("connect to etcd");

    // Ports: group g's master is ports[2g], its slave ports[2g + 1].
    let ports: Vec<u16> = (0..2 * groups).map(|_| free_port()).collect();
    let mut redis: Vec<Option<Process>> = ports.iter().map(|p| Some(start_redis(dir.path(), *p))).collect();
    for port in &ports {
        harness::wait_until(&format!("redis on {port}"), Duration::from_secs(60), || ping(*port));
    }
    let host_of = |i: usize| if i.is_multiple_of(2) { (i / 2) % hosts } else { (i / 2 + 1) % hosts };
    println!("  {} redis-servers up in {:.1} s", ports.len(), started.elapsed().as_secs_f64());

    // The control plane.
    let (dns_port, dnsd_port, dictator_port, sentinel_port) = (free_port(), free_port(), free_port(), free_port());
    let (dns, dnsd_listen, sentinel) =
        (format!("127.0.0.1:{dns_port}"), format!("127.0.0.1:{dnsd_port}"), format!("127.0.0.1:{sentinel_port}"));
    let mut dnsd = Service::start(
        "dnsd",
        &["--listen", &dnsd_listen, "--dns-listen", &dns, "--sentinel-listen", &sentinel, "--domain", "cluster.local",
          "--cluster", &group(0), "--etcd-endpoints", &endpoints],
        &[],
    );
    dnsd.wait_http(dnsd_port);
    let dictator_listen = format!("127.0.0.1:{dictator_port}");
    let mut dictator = Service::start(
        "dictator",
        &["--listen", &dictator_listen, "--nameserver", &dns, "--cluster", &group(0), "--etcd-endpoints", &endpoints],
        &[],
    );
    dictator.wait_http(dictator_port);
    let (dictator_url, dnsd_url) = (format!("http://127.0.0.1:{dictator_port}"), format!("http://127.0.0.1:{dnsd_port}"));
    let start_observer = |id: &str| {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut observer = Service::start(
            "observer",
            &["--listen", &listen, "--dictator", &dictator_url, "--dnsd", &dnsd_url, "--id", id, "--nameserver", &dns,
              "--etcd-endpoints", &endpoints],
            &[],
        );
        observer.wait_http(port);
        observer
    };
    let mut observer = start_observer("observer-1");

    // One agent per host, for all of its instances.
    let interval_arg = interval.to_string();
    let mut agents: Vec<Service> = (0..hosts)
        .map(|h| {
            let lines: Vec<String> = (0..ports.len())
                .filter(|i| host_of(*i) == h)
                .map(|i| format!("{}/node-{}=127.0.0.1:{}", group(i / 2), if i.is_multiple_of(2) { "a" } else { "b" }, ports[i]))
                .collect();
            let file = dir.path().join(format!("instances-{h}"));
            std::fs::write(&file, lines.join("\n")).expect("write instances file");
            let port = free_port();
            let (listen, file, host) = (format!("127.0.0.1:{port}"), file.display().to_string(), format!("host-{h}"));
            let mut agent = Service::start(
                "node-agent",
                &["--instances-file", &file, "--host", &host, "--listen", &listen, "--etcd-endpoints", &endpoints,
                  "--interval", &interval_arg],
                &[("RUST_LOG", "warn")],
            );
            agent.wait_http(port);
            agent
        })
        .collect();
    let registering = Instant::now();
    while count_healthy(&mut client, &keys).await < ports.len() {
        assert!(registering.elapsed() < Duration::from_secs(120), "not every redis registered within 120 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("  all {} registered healthy {:.1} s after the agents started", ports.len(), registering.elapsed().as_secs_f64());

    // Cold: every topology defined at once.
    let since = now_ms();
    let defining = Instant::now();
    let puts = (0..groups).map(|g| {
        let (mut client, key, value) = (client.clone(), keys.topology(&group(g)), topology(ports[2 * g], ports[2 * g + 1]));
        async move { client.put(key, value, None).await.expect("put a topology").header().map_or(0, |h| h.revision()) }
    });
    let revisions = join_all(puts).await;
    let first_revision = revisions.iter().copied().min().unwrap_or(0);
    let cold = wait_reconciled(&mut client, &keys, groups, since, first_revision, defining, Duration::from_secs(600)).await;
    println!("reconcile-all, cold (every topology defined at once -> every group applied and published): {}", secs(cold));

    // An observer restart: every group is reconciled again by the new one.
    let _ = observer.process().terminate(Duration::from_secs(10));
    let since = now_ms();
    let restarting = Instant::now();
    observer = start_observer("observer-2");
    let restart = wait_reconciled(&mut client, &keys, groups, since, 0, restarting, Duration::from_secs(600)).await;
    println!("reconcile-all after an observer restart (new process -> every group's round ok): {}", secs(restart));

    // At rest.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut events = client
        .watch("", Some(etcd_client::WatchOptions::new().with_all_keys()))
        .await
        .expect("watch etcd");
    let port = etcd[0].client_port;
    let puts_before = etcd_counter(port, "etcd_mvcc_put_total");
    let cpu = |agents: &mut [Service], redis: &[Option<Process>], observer: &mut Service, dnsd: &mut Service, dictator: &mut Service, etcd: &[Member]| {
        [
            agents.iter_mut().map(|a| cpu_secs(a.process().pid())).sum::<f64>(),
            redis.iter().flatten().map(|r| cpu_secs(r.pid())).sum::<f64>(),
            cpu_secs(observer.process().pid()),
            cpu_secs(dnsd.process().pid()),
            cpu_secs(dictator.process().pid()),
            etcd.iter().map(|m| cpu_secs(m.process.pid())).sum::<f64>(),
        ]
    };
    let cpu_before = cpu(&mut agents, &redis, &mut observer, &mut dnsd, &mut dictator, &etcd);
    let resting = Instant::now();
    tokio::time::sleep(REST_WINDOW).await;
    let cpu_after = cpu(&mut agents, &redis, &mut observer, &mut dnsd, &mut dictator, &etcd);
    let puts_after = etcd_counter(port, "etcd_mvcc_put_total");
    let secs_at_rest = resting.elapsed().as_secs_f64();
    let mut written = BTreeMap::<String, usize>::new();
    let mut examples = Vec::new();
    while let Ok(Ok(Some(resp))) = tokio::time::timeout(Duration::from_millis(200), events.message()).await {
        for e in resp.events() {
            if let Some(kv) = e.kv() {
                let key = kv.key_str().unwrap_or("?");
                // By kind: /nodes/<g>/<n> counts as /nodes.
                let kind = key.split('/').take(2).collect::<Vec<_>>().join("/");
                *written.entry(kind).or_default() += 1;
                if examples.len() < 6 {
                    examples.push(format!("{key} = {}", kv.value_str().unwrap_or("?")));
                }
            }
        }
    }
    println!(
        "etcd at rest: {:.2} puts/s over {secs_at_rest:.0} s (etcd_mvcc_put_total {puts_before} -> {puts_after}); keys written: {written:?}",
        (puts_after - puts_before) / secs_at_rest
    );
    for example in &examples {
        println!("  e.g. {example}");
    }
    let names = ["node-agents (all)", "redis-servers (all)", "observer", "dnsd", "dictator", "etcd (3 members)"];
    let shares: Vec<String> = names
        .iter()
        .zip(cpu_before.iter().zip(&cpu_after))
        .map(|(name, (a, b))| format!("{name} {:.1}%", 100.0 * (b - a) / secs_at_rest))
        .collect();
    println!("CPU at rest (100% = one core): {}", shares.join(", "));
    for (name, pid) in [
        ("dnsd", dnsd.process().pid()),
        ("observer", observer.process().pid()),
        ("dictator", dictator.process().pid()),
        ("one node-agent", agents[0].process().pid()),
    ] {
        println!("RSS {name}: {:.1} MB (peak {:.1} MB)", memory_kb(pid, "VmRSS") as f64 / 1024.0, memory_kb(pid, "VmHWM") as f64 / 1024.0);
    }
    let redis_rss: u64 = redis.iter().flatten().map(|r| memory_kb(r.pid(), "VmRSS")).sum();
    println!("RSS of all redis-servers (shared pages counted each time): {:.1} GB", redis_rss as f64 / 1024.0 / 1024.0);

    // A planned switchover of group 0 while the others idle.
    let (a, b) = (ports[0], ports[1]);
    let nodes = vec![std::net::SocketAddr::from(([127, 0, 0, 1], a)), std::net::SocketAddr::from(([127, 0, 0, 1], b))];
    let pace = Pace { per_second: 1000, count: None, timeout: Duration::from_secs(2) };
    let writer = Writer::start(Destination::Discover(nodes), "thousand-ids", pace);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut moves = Vec::new();
    for round in 1..=MOVES {
        let (master, slave) = if !round.is_multiple_of(2) { (b, a) } else { (a, b) };
        let at = Instant::now();
        let since = now_ms();
        let revision = client.put(keys.topology(&group(0)), topology(master, slave), None).await.expect("put topology").header().map_or(0, |h| h.revision());
        loop {
            let s = statuses(&mut client, &keys).await;
            if s.get(&group(0)).is_some_and(|(started, result, rev)| *started >= since && result == "ok" && *rev >= revision) {
                break;
            }
            assert!(at.elapsed() < Duration::from_secs(30), "switchover {round} not applied within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        moves.push(at);
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let tally = writer.stop().await.expect("the writer");
    let windows: Vec<Duration> = moves.iter().map(|at| tally.longest_gap(*at, *at + Duration::from_millis(700))).collect();
    let (median, max) = median_max_ms(&windows);
    println!(
        "planned switchover of one group, {MOVES} moves at ~1000 writes/s: write-unavailable window median {median:.1} ms, max {max:.1} ms ({} rejected writes)",
        tally.rejected.len()
    );

    // Host 0 loses every redis-server (kill -9); its agent lives on.
    let on_host: Vec<usize> = (0..ports.len()).filter(|i| host_of(*i) == 0).collect();
    let masters_lost: Vec<usize> = on_host.iter().filter(|i| i.is_multiple_of(2)).map(|i| i / 2).collect();
    let killed_at = Instant::now();
    // All signalled first, reaped after: a host loses them together.
    for i in &on_host {
        if let Some(process) = &redis[*i] {
            process.signal(9);
        }
    }
    let killed_in = killed_at.elapsed();
    for i in &on_host {
        if let Some(mut process) = redis[*i].take() {
            process.kill();
        }
    }
    // Where each group takes writes now: the slave where the master died.
    let target = |g: usize| if masters_lost.contains(&g) { ports[2 * g + 1] } else { ports[2 * g] };
    // The groups that lost their master first, then the others (asking a
    // thousand redis-servers at once would load the machine being measured).
    let mut pending: Vec<usize> = masters_lost.clone();
    let mut recovered: BTreeMap<usize, Duration> = BTreeMap::new();
    let mut others_added = false;
    while killed_at.elapsed() < Duration::from_secs(120) {
        if pending.is_empty() {
            if others_added {
                break;
            }
            others_added = true;
            pending = (0..groups).filter(|g| !masters_lost.contains(g)).collect();
        }
        let checks = pending.iter().map(|g| {
            let port = target(*g);
            async move { (*g, writable(port).await) }
        });
        let results = join_all(checks).await;
        let elapsed = killed_at.elapsed();
        for (g, ok) in results {
            if ok {
                recovered.insert(g, elapsed);
            }
        }
        pending.retain(|g| !recovered.contains_key(g));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost: Vec<Duration> = masters_lost.iter().filter_map(|g| recovered.get(g).copied()).collect();
    let (median, max) = median_max_ms(&lost);
    let all = recovered.values().max().copied().filter(|_| pending.is_empty());
    println!(
        "host 0 lost {} redis-servers ({} masters, {} slaves) by kill -9 (issued over {} ms): the groups that lost their master \
         took writes again after median {median:.0} ms, max {max:.0} ms; every group writable again after {}{}",
        on_host.len(),
        masters_lost.len(),
        on_host.len() - masters_lost.len(),
        killed_in.as_millis(),
        all.map_or("never (within 120 s)".to_string(), |d| format!("{} ms", d.as_millis())),
        if pending.is_empty() { String::new() } else { format!(" ({} groups never, e.g. {})", pending.len(), group(pending[0])) },
    );
    let late: Vec<String> = recovered.iter().filter(|(g, d)| !masters_lost.contains(g) && **d > Duration::from_millis(500)).map(|(g, d)| format!("{} {} ms", group(*g), d.as_millis())).take(5).collect();
    if !late.is_empty() {
        println!("  groups that kept their master but refused writes for a while: {}", late.join(", "));
    }
    println!("whole bench: {:.0} s", started.elapsed().as_secs_f64());
    // Keep the control plane's logs for a look at what took the time.
    if let Ok(keep) = std::env::var("THOUSAND_LOGS") {
        std::fs::create_dir_all(&keep).expect("THOUSAND_LOGS dir");
        for (name, service) in [("observer", &observer), ("dictator", &dictator), ("dnsd", &dnsd), ("node-agent-0", &agents[0])] {
            std::fs::write(Path::new(&keep).join(format!("{name}.log")), harness::without_ansi(&service.log())).expect("write a log");
        }
    }
    // Dropping the processes kills them: agents, control plane, redis, etcd.
    drop(agents);
    drop(observer);
    drop(dictator);
    drop(dnsd);
    drop(redis);
    drop(etcd);
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not within the timeout".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
}
