#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! No single dnsd in the way: every consumer of DNS names several dnsd replicas,
//! and losing one costs no write. HAProxy runs the shipped `deploy/haproxy/haproxy.cfg`
//! with every replica as a nameserver; the dictator, the observer and the counter
//! take a list (`--nameserver a,b` / `REDIS_TOPOLOGY_NAMESERVER=a,b`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::{read_list, Destination, Pace, Tally, Writer};
use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN};
use harness::{free_port, Etcd, Redis, Service};
use service::resolve::MemberResolver;

const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(5) };

/// A nameserver address where nothing listens: queries to it are refused.
fn dead_nameserver() -> SocketAddr {
    ([127, 0, 0, 1], free_port()).into()
}

/// Writes that failed (rejected or unknown outcome) at or after `from` and before `to`.
fn failed_between(tally: &Tally, from: Instant, to: Instant) -> Vec<&str> {
    tally.rejected.iter().chain(&tally.unknown).filter(|(_, at)| *at >= from && *at < to).map(|(id, _)| id.as_str()).collect()
}

/// The first acknowledgement at or after `from`.
fn first_ack_after(tally: &Tally, from: Instant) -> Option<Instant> {
    tally.acked.iter().map(|(_, at)| *at).filter(|at| *at >= from).min()
}

/// A new connection through HAProxy's write frontend answers PING: HAProxy has a
/// server for it (PING is no write, so a fenced master answers it too).
fn ping_through(write: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&write, Duration::from_secs(1)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_haproxy_survive_the_loss_of_one_dnsd() {
    // Two dnsd replicas on one etcd. The dictator, the observer and HAProxy name
    // both, the one killed below first; the observer publishes to the other.
    let mut stack = Stack::start(StackOptions { haproxy: true, dnsds: 2, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let write = stack.write.unwrap();
    harness::wait_until("HAProxy to reach the master", Duration::from_secs(20), || ping_through(write));

    // One writer through HAProxy; one that resolves the master's SRV record itself
    // through both replicas, as `counter --cluster --nameserver a,b` does.
    let through_haproxy = Destination::Fixed(write);
    let haproxy_writer = Writer::start(through_haproxy.clone(), "ns-haproxy-ids", PACE);
    let resolver = MemberResolver::new(&stack.nameservers).unwrap();
    let by_srv = Destination::Srv { name: format!("master.{CLUSTER}.{DOMAIN}"), resolver: Box::new(resolver) };
    let srv_writer = Writer::start(by_srv.clone(), "ns-srv-ids", PACE);
    // A new connection through HAProxy every 50 ms, from the kill to the end.
    let (probing, probe_failures) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let probe = {
        let (probing, failures) = (probing.clone(), probe_failures.clone());
        std::thread::spawn(move || {
            let mut probes = 0;
            while !probing.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            while probing.load(Ordering::SeqCst) {
                if !ping_through(write) {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                probes += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            probes
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // kill -9 of the first nameserver, under writes.
    let killed = Instant::now();
    stack.dnsd(0).process().kill();
    probing.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A switchover while it is dead: the dictator resolves the new master's SRV
    // name, and HAProxy and the SRV writer find it, through the survivor alone.
    let switch = Instant::now();
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    let applied = Instant::now();
    harness::wait_until("node-2 to be the master", Duration::from_secs(10), || stack.nodes[1].redis.role() == "master");
    tokio::time::sleep(Duration::from_secs(3)).await;

    probing.store(false, Ordering::SeqCst);
    let probes = probe.join().unwrap();
    let haproxy_tally = haproxy_writer.stop().await.unwrap();
    let srv_tally = srv_writer.stop().await.unwrap();
    let end = Instant::now();

    for (what, tally, target, key) in [
        ("through HAProxy", &haproxy_tally, &through_haproxy, "ns-haproxy-ids"),
        ("by SRV through both replicas", &srv_tally, &by_srv, "ns-srv-ids"),
    ] {
        let verdict = tally.check(&read_list(target, key, Duration::from_secs(10)).await.unwrap());
        // The dnsd's loss costs nothing: no write fails between the kill and the
        // switchover, none once the new master acknowledged its first write, and
        // the switchover's own errors are the usual ones of a move.
        let before_switch = failed_between(tally, killed, switch);
        let resumed = first_ack_after(tally, applied)
            .unwrap_or_else(|| panic!("{what}: no write acknowledged after the switchover: {verdict}"));
        let after_resumed = failed_between(tally, resumed, end);
        let during_switch = failed_between(tally, switch, resumed);
        println!(
            "{what}: {verdict}; failed writes: {} after the kill, before the switchover; {} in the switchover \
             (its window {:.0} ms); {} after",
            before_switch.len(),
            during_switch.len(),
            resumed.duration_since(switch).as_secs_f64() * 1000.0,
            after_resumed.len(),
        );
        assert!(verdict.acked > 1000, "{what}: writes went through: {verdict}");
        assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{what}: {verdict}");
        assert!(before_switch.is_empty(), "{what}: writes failed after the dnsd died: {before_switch:?}");
        assert!(after_resumed.is_empty(), "{what}: writes failed after the new master took writes: {after_resumed:?}");
        assert!(tally.acked.iter().filter(|(_, at)| *at >= resumed).count() > 500, "{what}: writes went on after the switchover");
    }
    println!("new connections through HAProxy after the kill: {probes}, of which {} failed", probe_failures.load(Ordering::SeqCst));
    assert!(probes > 50, "HAProxy was probed");
    assert_eq!(probe_failures.load(Ordering::SeqCst), 0, "a new connection through HAProxy found no server after the dnsd died");
    assert!(!stack.dnsd(0).process().is_running(), "the first dnsd stayed dead throughout");
}

/// etcd, a dnsd, and node-1 registered by its agent: dnsd serves the SRV record
/// `node-1.redis-1.cluster.local`.
struct OneNode {
    etcd: Etcd,
    redis: Redis,
    dns: SocketAddr,
    dnsd_http: SocketAddr,
    _dnsd: Service,
    _agent: Service,
}

async fn one_node() -> OneNode {
    let etcd = Etcd::start();
    let redis = Redis::start();
    let (http, dns, agent_port) = (free_port(), free_port(), free_port());
    let mut dnsd = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{http}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--etcd-endpoints", &etcd.endpoint(), "--domain", DOMAIN],
        &[],
    );
    dnsd.wait_http(http);
    let mut agent = Service::start(
        "node-agent",
        &["--cluster", CLUSTER, "--node", "node-1", "--redis", &redis.host_port(),
          "--listen", &format!("127.0.0.1:{agent_port}"), "--etcd-endpoints", &etcd.endpoint()],
        &[],
    );
    agent.wait_http(agent_port);
    let dns: SocketAddr = ([127, 0, 0, 1], dns).into();
    let resolver = MemberResolver::new(&[dns]).unwrap();
    harness::wait_until_async("dnsd to serve node-1's SRV record", Duration::from_secs(20), || async {
        resolver.srv(&format!("node-1.{CLUSTER}.{DOMAIN}")).await.is_ok_and(|a| a == [redis.addr()])
    })
    .await;
    OneNode { etcd, redis, dns, dnsd_http: ([127, 0, 0, 1], http).into(), _dnsd: dnsd, _agent: agent }
}

/// A dictator given `REDIS_TOPOLOGY_NAMESERVER` (a comma-separated list) dry-runs a topology
/// whose master is a node name, resolved by SRV: the HTTP status and the master
/// it resolved.
async fn dictator_resolves(nameservers: &str, etcd: &Etcd) -> (u16, serde_json::Value) {
    let port = free_port();
    let mut dictator = Service::start(
        "dictator",
        &["--listen", &format!("127.0.0.1:{port}"), "--cluster", CLUSTER, "--etcd-endpoints", &etcd.endpoint()],
        &[("REDIS_TOPOLOGY_NAMESERVER", nameservers)],
    );
    dictator.wait_http(port);
    let topology = format!(r#"{{"master":{{"address":"node-1.{CLUSTER}.{DOMAIN}"}}}}"#);
    harness::put_json(&format!("http://127.0.0.1:{port}/clusters/{CLUSTER}/master?dry_run=true"), topology).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dictator_resolves_an_srv_member_with_its_first_nameservers_dead_or_empty() {
    let node = one_node().await;
    // First a nameserver where nothing listens (refused), then one that never
    // answers (a dead host), then dnsd.
    let (dead, silent) = (dead_nameserver(), harness::silent_nameserver());
    let (status, report) = dictator_resolves(&format!("{dead},{silent},{}", node.dns), &node.etcd).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["master"], node.redis.addr().to_string(), "{report}");

    // A replica with an empty zone (its own, empty etcd) answers NXDOMAIN; the
    // live one's answer still wins. (One that never listed etcd answers REFUSED.)
    let empty_etcd = Etcd::start();
    let (http, dns) = (free_port(), free_port());
    let mut empty = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{http}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--etcd-endpoints", &empty_etcd.endpoint(), "--domain", DOMAIN],
        &[],
    );
    empty.wait_http(http);
    let empty_first: SocketAddr = ([127, 0, 0, 1], dns).into();
    let resolver = MemberResolver::new(&[empty_first, node.dns]).unwrap();
    let node_name = format!("node-1.{CLUSTER}.{DOMAIN}");
    for _ in 0..20 {
        assert_eq!(resolver.srv(&node_name).await.unwrap(), [node.redis.addr()], "an NXDOMAIN from the empty replica won");
    }
    let (status, report) = dictator_resolves(&format!("{empty_first},{}", node.dns), &node.etcd).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["master"], node.redis.addr().to_string(), "{report}");
    let (status, report) = dictator_resolves(&format!("127.0.0.1:{dns}"), &node.etcd).await;
    assert_eq!(status, 422, "the empty replica alone: {report}");

    // Without dnsd in the list the name does not resolve: the answer above came
    // from the third nameserver.
    let (status, report) = dictator_resolves(&format!("{dead},{silent}"), &node.etcd).await;
    assert_eq!(status, 502, "{report}");
    assert!(report["error"].as_str().is_some_and(|e| e.contains("cannot resolve")), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counter_and_redis_topology_use_the_next_nameserver_when_the_first_is_dead() {
    let node = one_node().await;
    // node-1 is the master: defined in etcd and published by dnsd, so
    // master.redis-1.cluster.local has an SRV record.
    let topology = format!(r#"{{"master":{{"address":"node-1.{CLUSTER}.{DOMAIN}"}}}}"#);
    node.etcd.client().await.put(format!("/config/{CLUSTER}/topology"), topology.clone(), None).await.unwrap();
    let (status, published) = harness::put_json(&format!("http://{}/clusters/{CLUSTER}/dns", node.dnsd_http), topology).await;
    assert_eq!(status, 200, "{published}");
    let dead = dead_nameserver();
    let both = format!("{dead},{}", node.dns);

    let counter = std::process::Command::new(harness::binary("counter"))
        .args(["--cluster", CLUSTER, "--count", "200", "--rate", "1000"])
        .env("REDIS_TOPOLOGY_NAMESERVER", &both)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&counter.stdout);
    assert!(counter.status.success(), "{stdout}{}", String::from_utf8_lossy(&counter.stderr));
    assert!(stdout.contains("ack'd: 200 (0 missing) err'd: 0 (0 phantom)"), "{stdout}");

    let check = |nameservers: &str| {
        let out = std::process::Command::new(harness::binary("redis-topology"))
            .args(["check", CLUSTER])
            .env("ETCDCTL_ENDPOINTS", node.etcd.endpoint())
            .env_remove("REDIS_TOPOLOGY_ETCD_PREFIX")
            .env("REDIS_TOPOLOGY_NAMESERVER", nameservers)
            .output()
            .unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    // `check` asks DNS for the master: through the second nameserver it agrees
    // (it may still list other differences: no observer ran here)...
    let out = check(&both);
    assert!(!out.contains("DNS:"), "{out}");
    // ...and with the dead one alone it cannot ask.
    let out = check(&dead.to_string());
    assert!(out.contains("DNS: cannot resolve"), "{out}");
}
