#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The observer on real processes: etcd, redis-server, the dictator and dnsd
//! binaries, and one or two observers.
//!
//! "Nothing happened" is only ever asserted after a positive synchronisation
//! point: a log line saying the observer looked and decided, an election key, a
//! status record. Observers log JSON so those lines can be read field by field.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{CompactionOptions, DeleteOptions, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use harness::{free_port, Etcd, Persistence, Redis, Service};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use topology::records::{NodeRecord, StatusRecord};
use topology::Keys;

const CLUSTER: &str = "redis-1";

/// etcd, a dictator, a dnsd and `redis` instances registered as nodes.
struct Stack {
    etcd: Etcd,
    dictator: Service,
    dictator_url: String,
    _dnsd: Service,
    dnsd_url: String,
    /// dnsd's DNS listener, `127.0.0.1:<port>`.
    nameserver: String,
    /// How the nodes' redis-servers keep their data.
    persistence: Persistence,
    nodes: Vec<Redis>,
    /// Real node-agents, when a test started them (else the test registers nodes).
    agents: Vec<Service>,
    keys: Keys,
}

impl Stack {
    async fn start(redis_count: usize) -> Stack {
        Stack::start_with(redis_count, &[]).await
    }

    /// With extra flags for the dictator.
    async fn start_with(redis_count: usize, dictator_args: &[&str]) -> Stack {
        Stack::start_persistent(redis_count, Persistence::None, dictator_args).await
    }

    async fn start_persistent(redis_count: usize, persistence: Persistence, dictator_args: &[&str]) -> Stack {
        let etcd = Etcd::start();
        let (dictator_port, dnsd_port, dns_port) = (free_port(), free_port(), free_port());
        let nameserver = format!("127.0.0.1:{dns_port}");
        let listen = format!("127.0.0.1:{dictator_port}");
        // A frozen redis holds an apply in flight for as long as a test needs.
        let endpoint = etcd.endpoint();
        let mut args = vec!["--listen", &listen, "--nameserver", &nameserver, "--redis-command-timeout-ms", "60000", "--etcd-endpoints", &endpoint];
        args.extend_from_slice(dictator_args);
        let mut dictator = Service::start("dictator", &args, &[]);
        dictator.wait_http(dictator_port);
        let dnsd = start_dnsd(&etcd, dnsd_port, &nameserver);
        let mut stack = Stack {
            dictator_url: format!("http://127.0.0.1:{dictator_port}"),
            dnsd_url: format!("http://127.0.0.1:{dnsd_port}"),
            nameserver,
            persistence,
            etcd,
            dictator,
            _dnsd: dnsd,
            nodes: Vec::new(),
            agents: Vec::new(),
            keys: Keys::new(""),
        };
        stack.add_nodes(CLUSTER, redis_count).await;
        stack
    }

    /// Starts `count` more redis-servers and registers them in `cluster` as a
    /// node-agent would (`node-1`, ... in the order added to that cluster), so
    /// dnsd can name them and the observer can judge their health.
    async fn add_nodes(&mut self, cluster: &str, count: usize) {
        let prefix = self.keys.cluster_nodes_prefix(cluster);
        let mut client = self.etcd.client().await;
        let existing = client.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count();
        for i in 0..count {
            let node = match self.persistence {
                Persistence::None => Redis::start(),
                persistence => Redis::start_with(persistence),
            };
            let name = format!("node-{}", existing as usize + i + 1);
            client.put(self.keys.node(cluster, &name), registration(node.port(), true), None).await.unwrap();
            self.nodes.push(node);
        }
    }

    /// Real node-agents for the nodes of `REDIS_TOPOLOGY_CLUSTER` (`node-1`, ... in order),
    /// probing every 100 ms; they replace the test's registrations.
    fn start_agents(&mut self) {
        for i in 0..self.nodes.len() {
            let endpoint = self.etcd.endpoint();
            self.start_agent(i, &endpoint, &[]);
        }
    }

    /// A node-agent for `nodes[i]` reaching etcd at `endpoint`, with extra flags
    /// (a lease TTL of 2 s unless they set one).
    fn start_agent(&mut self, i: usize, endpoint: &str, extra: &[&str]) {
        let port = free_port();
        let (node, redis, listen) = (format!("node-{}", i + 1), self.nodes[i].host_port(), format!("127.0.0.1:{port}"));
        let mut args = vec!["--cluster", CLUSTER, "--node", &node, "--redis", &redis, "--listen", &listen,
                            "--etcd-endpoints", endpoint, "--interval", "100", "--log-format", "json"];
        if !extra.contains(&"--lease-ttl") {
            args.extend_from_slice(&["--lease-ttl", "2"]);
        }
        args.extend_from_slice(extra);
        let mut agent = Service::start("node-agent", &args, &[]);
        agent.wait_http(port);
        self.agents.push(agent);
    }

    /// The registration of `node` in `REDIS_TOPOLOGY_CLUSTER`, with its etcd mod revision.
    async fn registration_of(&self, node: &str) -> Option<(NodeRecord, i64)> {
        let got = self.etcd.client().await.get(self.keys.node(CLUSTER, node), None).await.unwrap();
        got.kvs().first().map(|kv| (serde_json::from_slice(kv.value()).unwrap(), kv.mod_revision()))
    }

    /// The mod revision of `REDIS_TOPOLOGY_CLUSTER`'s trigger (0: none).
    async fn trigger_revision(&self) -> i64 {
        let got = self.etcd.client().await.get(self.keys.trigger(CLUSTER), None).await.unwrap();
        got.kvs().first().map_or(0, |kv| kv.mod_revision())
    }

    fn observer(&self, id: &str) -> (Service, u16) {
        self.observer_with(id, &[])
    }

    fn observer_with(&self, id: &str, extra: &[&str]) -> (Service, u16) {
        self.observer_at(id, &self.etcd.endpoint(), 2, extra)
    }

    /// An observer reaching etcd at `endpoint`, with an election lease of `ttl_secs`.
    fn observer_at(&self, id: &str, endpoint: &str, ttl_secs: u64, extra: &[&str]) -> (Service, u16) {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let ttl = ttl_secs.to_string();
        let mut args = vec![
            "--listen", &listen,
            "--etcd-endpoints", endpoint,
            "--dictator", &self.dictator_url,
            "--dnsd", &self.dnsd_url,
            "--id", id,
            "--election-ttl-secs", &ttl,
            "--retry-min-ms", "100",
            "--retry-max-ms", "500",
            "--log-format", "json",
        ];
        args.extend_from_slice(extra);
        let mut service = Service::start("observer", &args, &[]);
        service.wait_http(port);
        (service, port)
    }

    fn topology(&self, master: usize, slaves: &[usize]) -> String {
        let member = |i: usize| json!({"address": "127.0.0.1", "port": self.nodes[i].port()});
        json!({"master": member(master), "slaves": slaves.iter().map(|i| member(*i)).collect::<Vec<_>>()}).to_string()
    }

    /// Writes the topology of `REDIS_TOPOLOGY_CLUSTER`, as an operator does; returns its revision.
    async fn define(&self, topology: String) -> i64 {
        self.define_in(CLUSTER, topology).await
    }

    async fn define_in(&self, cluster: &str, topology: String) -> i64 {
        let put = self.etcd.client().await.put(self.keys.topology(cluster), topology, None).await.unwrap();
        put.header().unwrap().revision()
    }

    /// The topology of `REDIS_TOPOLOGY_CLUSTER` in etcd, with its revision.
    async fn stored_topology(&self) -> (String, i64) {
        let got = self.etcd.client().await.get(self.keys.topology(CLUSTER), None).await.unwrap();
        let kv = &got.kvs()[0];
        (kv.value_str().unwrap().to_string(), kv.mod_revision())
    }

    async fn trigger(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.etcd.client().await.put(self.keys.trigger(CLUSTER), id.clone(), None).await.unwrap();
        id
    }

    async fn status(&self) -> Option<StatusRecord> {
        self.status_of(CLUSTER).await
    }

    async fn status_of(&self, cluster: &str) -> Option<StatusRecord> {
        let resp = self.etcd.client().await.get(self.keys.status(cluster), None).await.unwrap();
        resp.kvs().first().map(|kv| serde_json::from_slice(kv.value()).unwrap())
    }

    async fn published_master_port(&self, cluster: &str) -> Option<u64> {
        let resp = reqwest::get(format!("{}/clusters/{cluster}/dns", self.dnsd_url)).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        body.pointer("/master/port").and_then(Value::as_u64)
    }

    async fn wait_applied(&self, master: usize, what: &str) {
        self.wait_applied_in(CLUSTER, master, what).await;
    }

    /// Waits until `cluster`'s last round succeeded and dnsd publishes `master`,
    /// then checks that redis agrees. A round that skipped unreachable members
    /// (`partial`, not retried: a dead node) succeeded too.
    async fn wait_applied_in(&self, cluster: &str, master: usize, what: &str) {
        let port = self.nodes[master].port() as u64;
        harness::wait_until_async(what, Duration::from_secs(20), || async {
            self.published_master_port(cluster).await == Some(port)
                && self.status_of(cluster).await.is_some_and(|s| s.result == "ok" || (s.result == "partial" && s.retry.is_none()))
        })
        .await;
        assert_eq!(self.nodes[master].role(), "master");
    }

    /// The observers campaigning, in the order they joined the election (the
    /// first is the leader).
    async fn candidates(&self) -> Vec<String> {
        let sorted = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        let got = self.etcd.client().await.get(format!("{}/", self.keys.election()), Some(sorted)).await.unwrap();
        got.kvs().iter().map(|kv| kv.value_str().unwrap().to_string()).collect()
    }
}

fn start_dnsd(etcd: &Etcd, http_port: u16, dns: &str) -> Service {
    let mut dnsd = Service::start(
        "dnsd",
        &[
            "--listen", &format!("127.0.0.1:{http_port}"),
            "--dns-listen", dns,
            "--etcd-endpoints", &etcd.endpoint(),
            "--log-format", "json",
        ],
        &[],
    );
    dnsd.wait_http(http_port);
    dnsd
}

/// A node-agent's record of a redis on 127.0.0.1.
fn registration(port: u16, healthy: bool) -> String {
    json!({"address": "127.0.0.1", "port": port, "role": "master", "repl_offset": 0,
           "run_id": "x", "healthy": healthy, "updated_ms": 0})
    .to_string()
}

/// A TCP proxy in front of etcd (or redis) that can cut every connection through
/// it without closing any: a partition between one process and etcd, while etcd
/// runs on. Or only hold new connections, while the established ones flow.
struct Partition {
    port: u16,
    cut: Arc<AtomicBool>,
    block_new: Arc<AtomicBool>,
    _accept: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn start(upstream: u16) -> Partition {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let block_new = Arc::new(AtomicBool::new(false));
        let (flag, blocked) = (cut.clone(), block_new.clone());
        let accept = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                if blocked.load(Ordering::SeqCst) {
                    // Accepted, never answered: as a host behind a firewall that drops.
                    held.push(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else { continue };
                let ((client_read, client_write), (server_read, server_write)) = (client.into_split(), server.into_split());
                tokio::spawn(pump(client_read, server_write, flag.clone()));
                tokio::spawn(pump(server_read, client_write, flag.clone()));
            }
        });
        Partition { port, cut, block_new, _accept: accept }
    }

    /// From now on new connections are accepted but never answered; those already
    /// through flow on.
    fn block_new(&self) {
        self.block_new.store(true, Ordering::SeqCst);
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// From now on no byte passes either way; the connections stay open.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Bytes pass again, those held first.
    fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copies one direction until the end, holding every byte once `cut`.
async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, cut: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        while cut.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// What the observer on `port` says about leading; `None` when it does not answer.
async fn leader_flag(port: u16) -> Option<bool> {
    let body = harness::etcd::http_get(port, "/status")?;
    serde_json::from_str::<Value>(&body).ok()?["leader"].as_bool()
}

/// The automatic failovers the observer on `port` counts.
fn failover_counts(port: u16) -> Value {
    let body = harness::etcd::http_get(port, "/status").unwrap();
    serde_json::from_str::<Value>(&body).unwrap()["failovers"].clone()
}

/// What a service started with `--log-format json` logged, in order.
fn log_lines(service: &Service) -> Vec<Value> {
    service.log().lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()).collect()
}

/// The lines a service started with `--log-format json` logged with `message`.
fn logged(service: &Service, message: &str) -> Vec<Value> {
    log_lines(service).into_iter().filter(|line| line["message"] == message).collect()
}

/// The port of the SRV record `_redis._tcp.master.<cluster>` that the DNS
/// server at `nameserver` answers.
fn dns_master_port(nameserver: &str, cluster: &str) -> Option<u16> {
    let (host, port) = nameserver.split_once(':')?;
    let out = std::process::Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", "-p", port, &format!("@{host}")])
        .args(["SRV", &format!("_redis._tcp.master.{cluster}.cluster.local")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2)?.parse().ok()
}

/// The ports of the SRV records `_redis._tcp.slaves.<cluster>` (the read pool),
/// sorted; empty when there are none.
fn dns_slave_ports(nameserver: &str, cluster: &str) -> Vec<u16> {
    let Some((host, port)) = nameserver.split_once(':') else { return Vec::new() };
    let out = std::process::Command::new("dig")
        .args(["+short", "+time=1", "+tries=1", "-p", port, &format!("@{host}")])
        .args(["SRV", &format!("_redis._tcp.slaves.{cluster}.cluster.local")])
        .output()
        .expect("dig runs");
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2)?.parse().ok())
        .collect();
    ports.sort_unstable();
    ports
}

/// Whether process `pid` holds an established TCP connection to 127.0.0.1:`port`.
fn holds_connection_to(pid: u32, port: u16) -> bool {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let remote = format!("0100007F:{port:04X}");
    std::fs::read_to_string("/proc/net/tcp").unwrap_or_default().lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // rem_address, st (01: ESTABLISHED), inode.
        fields.len() > 9 && fields[2] == remote && fields[3] == "01" && inodes.contains(fields[9])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_applies_the_topology_and_publishes_dns() {
    let stack = Stack::start(3).await;
    let (_observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology applied and published").await;
    assert_eq!(stack.nodes[1].role(), "slave");

    // A new topology moves the master; a trigger alone re-applies (no change).
    stack.define(stack.topology(1, &[0, 2])).await;
    stack.wait_applied(1, "moved master applied and published").await;
    let trigger = stack.trigger().await;
    harness::wait_until_async("trigger recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.trigger.as_deref() == Some(trigger.as_str()) && s.result == "ok")
    })
    .await;
    let status = stack.status().await.unwrap();
    assert_eq!(status.observer, "o1");
    assert_eq!(status.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictator_failure_publishes_nothing_and_is_retried() {
    let mut stack = Stack::start(2).await;
    let (_observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "first topology").await;

    // The intended new master is down: the dictator answers 502, DNS stays.
    stack.nodes[1].kill();
    stack.define(stack.topology(1, &[0])).await;
    harness::wait_until_async("a failed round recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.result == "dictator" && s.failures >= 2)
    })
    .await;
    let status = stack.status().await.unwrap();
    assert!(status.error.as_deref().unwrap_or("").contains("502"), "{status:?}");
    assert_eq!(stack.published_master_port(CLUSTER).await, Some(stack.nodes[0].port() as u64), "DNS must not move");

    // It comes back (empty): the retry applies without anyone writing again.
    stack.nodes[1].restart_empty();
    stack.wait_applied(1, "retried round").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_is_published_though_a_slave_failed_and_that_slave_is_retried() {
    let stack = Stack::start(3).await;
    let (_observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology").await;

    // The third node refuses REPLICAOF: the dictator promotes node 1 and re-points
    // node 0, but cannot re-point node 2.
    let stuck = &stack.nodes[2];
    stuck.cmd::<()>(&["ACL", "SETUSER", "default", "-replicaof"]);
    let moved = stack.define(stack.topology(1, &[0, 2])).await;
    let new_master = Some(stack.nodes[1].port() as u64);
    harness::wait_until_async("the partial apply published and recorded", Duration::from_secs(20), || async {
        stack.published_master_port(CLUSTER).await == new_master
            && stack.status().await.is_some_and(|s| s.result == "partial" && s.topology_revision == moved)
    })
    .await;
    let status = stack.status().await.unwrap();
    let error = status.error.unwrap_or_default();
    assert!(error.contains(&format!("{} (replicate", stuck.host_port())), "{error}");
    assert_eq!(stack.nodes[1].role(), "master");
    assert_eq!(stuck.info_field("master_port"), Some(stack.nodes[0].port().to_string()), "node 2 was not re-pointed");

    // Retried with nobody writing to etcd: once it accepts REPLICAOF, it follows.
    stuck.cmd::<()>(&["ACL", "SETUSER", "default", "+replicaof"]);
    harness::wait_until_async("the retry to complete the apply", Duration::from_secs(20), || async {
        stack.status().await.is_some_and(|s| s.result == "ok" && s.topology_revision == moved)
    })
    .await;
    assert_eq!(stuck.info_field("master_port"), Some(stack.nodes[1].port().to_string()));
    assert_eq!(stack.published_master_port(CLUSTER).await, new_master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_observers_acts_and_the_other_takes_over() {
    let stack = Stack::start(2).await;
    let (mut first, first_port) = stack.observer("first");
    harness::wait_until_async("first leads", Duration::from_secs(10), || async {
        leader_flag(first_port).await == Some(true)
    })
    .await;
    let (_second, second_port) = stack.observer("second");
    // Once the second's key is in the election behind the first's, it has
    // campaigned and waits: from then on both must answer, and only one leads.
    harness::wait_until_async("second campaigns", Duration::from_secs(10), || async {
        stack.candidates().await == ["first", "second"]
    })
    .await;
    assert_eq!(leader_flag(first_port).await, Some(true), "the first stopped leading");
    assert_eq!(leader_flag(second_port).await, Some(false), "two leaders (or the second does not answer)");

    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "applied by the leader").await;
    assert_eq!(stack.status().await.unwrap().observer, "first");

    first.process().kill();
    harness::wait_until_async("second takes over", Duration::from_secs(15), || async {
        leader_flag(second_port).await == Some(true)
    })
    .await;
    stack.define(stack.topology(1, &[0])).await;
    stack.wait_applied(1, "applied by the new leader").await;
    assert_eq!(stack.status().await.unwrap().observer, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_observer_reconciles_what_it_missed() {
    let mut stack = Stack::start(2).await;
    // Written while no observer runs.
    stack.define(stack.topology(0, &[1])).await;
    let (observer, _) = stack.observer("o1");
    stack.wait_applied(0, "reconciled at start").await;
    drop(observer);

    stack.define(stack.topology(1, &[0])).await;
    stack.etcd.kill();
    stack.etcd.restart();
    let (_observer, _) = stack.observer("o2");
    stack.wait_applied(1, "reconciled after restart").await;
    // And it keeps watching across an etcd restart.
    stack.etcd.kill();
    stack.etcd.restart();
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "applied after etcd restarted under it").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_dying_in_the_middle_of_an_apply_ends_in_convergence() {
    let mut stack = Stack::start(2).await;
    let (observer, port) = stack.observer("o1");
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "first topology").await;

    // A frozen dictator holds the apply in flight: it cannot have answered.
    stack.dictator.process().signal(libc::SIGSTOP);
    let revision = stack.define(stack.topology(1, &[0])).await;
    harness::wait_until("the observer to start applying", Duration::from_secs(10), || {
        logged(&observer, "round: applying the topology").iter().any(|l| l["topology_revision"] == revision)
    });
    stack.etcd.kill();
    stack.dictator.process().signal(libc::SIGCONT);
    // Without etcd the observer cannot keep its lease: it says it no longer leads.
    harness::wait_until_async("the observer to step down", Duration::from_secs(10), || async {
        leader_flag(port).await == Some(false)
    })
    .await;

    stack.etcd.restart();
    stack.wait_applied(1, "the topology applied and published after etcd returned").await;
    let status = stack.status().await.unwrap();
    assert_eq!((status.topology_revision, status.observer.as_str()), (revision, "o1"), "{status:?}");
    assert_eq!(stack.nodes[0].role(), "slave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_cancelled_by_a_compaction_list_again_and_converge() {
    let stack = Stack::start(2).await;
    // Its only way to learn of a new topology is its watch of /config/.
    let (_observer, _) = stack.observer("o1");
    // A second dnsd replica, which learns every publication through its watch only.
    let (replica_http, replica_dns) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let mut replica = start_dnsd(&stack.etcd, replica_http, &replica_dns);
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "first topology").await;
    let first = Some(stack.nodes[0].port());
    harness::wait_until("the replica serves the first master", Duration::from_secs(10), || {
        dns_master_port(&replica_dns, CLUSTER) == first
    });

    // A stalled replica falls behind its watch: etcd stops sending to it (the
    // HTTP/2 window and etcd's buffer fill), and compacting past what it has
    // received leaves its watch no history to resume from, so etcd cancels it.
    replica.process().signal(libc::SIGSTOP);
    let mut client = stack.etcd.client().await;
    let big = "x".repeat(8 * 1024);
    for batch in 0..8 {
        let puts = (0..100).map(|i| TxnOp::put(format!("/dns/_filler/{batch}-{i}"), big.as_str(), None));
        client.txn(Txn::new().and_then(puts.collect::<Vec<_>>())).await.unwrap();
    }
    for i in 0..300 {
        client.put(format!("/dns/_filler/small-{i}"), "x", None).await.unwrap();
    }
    // Gone again before the replica lists: a list over 4 MiB exceeds gRPC's limit.
    let deleted = client.delete("/dns/_filler/", Some(DeleteOptions::new().with_prefix())).await.unwrap();
    let revision = deleted.header().unwrap().revision();
    client.compact(revision, Some(CompactionOptions::new().with_physical())).await.unwrap();
    replica.process().signal(libc::SIGCONT);
    harness::wait_until("the replica's watch to be cancelled by the compaction", Duration::from_secs(20), || {
        logged(&replica, "etcd watch broken; listing again")
            .iter()
            .any(|l| l["error"].as_str().is_some_and(|e| e.contains("compacted at")))
    });

    // The observer's own watch ran through the compaction; both converge on what
    // comes after it.
    let moved = stack.define(stack.topology(1, &[0])).await;
    assert!(moved > revision);
    stack.wait_applied(1, "a topology written after the compaction").await;
    let second = Some(stack.nodes[1].port());
    harness::wait_until("the replica serves the new master", Duration::from_secs(10), || {
        dns_master_port(&replica_dns, CLUSTER) == second
    });
    assert_eq!(stack.status().await.unwrap().topology_revision, moved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_write_during_a_failover_wins() {
    let mut stack = Stack::start(4).await;
    let (mut observer, port) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2, 3])).await;
    stack.wait_applied(0, "first topology").await;
    // Every slave holds all the master has (the apply's marker and its removal
    // included): the dictator must have nothing to refuse when the operator picks
    // a slave that was frozen first.
    harness::wait_until("the slaves to hold all the master has", Duration::from_secs(20), || {
        let master = stack.nodes[0].info_field("master_repl_offset");
        stack.nodes[1..].iter().all(|n| {
            n.info_field("master_link_status").as_deref() == Some("up") && n.info_field("slave_repl_offset") == master
        })
    });

    // Frozen slaves keep the failover busy (each inspection waits for its timeout)
    // after it read the topology and before it writes the new one.
    stack.nodes[2].freeze(true);
    stack.nodes[3].freeze(true);
    let mut etcd = stack.etcd.client().await;
    stack.nodes[0].kill();
    etcd.put(stack.keys.node(CLUSTER, "node-1"), registration(stack.nodes[0].port(), false), None).await.unwrap();

    // Caught asking a frozen slave, the observer is frozen too: its failover is
    // decided on the topology it read, and cannot move until the operator wrote.
    let pid = observer.process().pid().unwrap();
    let frozen = [stack.nodes[2].port(), stack.nodes[3].port()];
    let asking = || frozen.iter().any(|p| holds_connection_to(pid, *p));
    harness::wait_until("the failover to inspect a frozen slave", Duration::from_secs(10), asking);
    observer.process().signal(libc::SIGSTOP);
    assert!(asking(), "the observer got past the frozen slaves before it was stopped; cannot test the race");
    let (read, read_revision) = stack.stored_topology().await;
    assert_eq!(read, stack.topology(0, &[1, 2, 3]), "the failover has not written yet");
    let operator = stack.topology(2, &[1, 3]);
    let written = stack.define(operator.clone()).await;
    observer.process().signal(libc::SIGCONT);
    stack.nodes[2].freeze(false);
    stack.nodes[3].freeze(false);

    harness::wait_until("the failover to give way", Duration::from_secs(10), || {
        logged(&observer, "automatic failover did not happen")
            .iter()
            .any(|l| l["error"].as_str().is_some_and(|e| e.contains("changed meanwhile")))
    });
    stack.wait_applied(2, "the operator's topology applied").await;
    assert!(written > read_revision);
    assert_eq!(stack.stored_topology().await, (operator, written), "the failover overwrote the operator");
    let status = stack.status().await.unwrap();
    assert_eq!((status.topology_revision, status.failover), (written, None), "recorded as a failover");
    assert_eq!(failover_counts(port), json!({}), "counted as a failover");
    assert_eq!(stack.nodes[1].role(), "slave", "the failover's choice was promoted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_the_dictator_refuses_moves_on_to_the_next_candidate() {
    // The dictator waits for a frozen slave (here, for as long as the test needs);
    // the observer's probe gives up after 300 ms.
    let mut stack = Stack::start_with(3, &["--redis-connect-timeout-ms", "60000"]).await;
    let (observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology").await;
    wait_in_sync(&stack, 0, &[1, 2]);

    // node-2 applies nothing more, so an acknowledged write reaches node-3 only.
    let _: String = stack.nodes[1].cmd(&["CLIENT", "PAUSE", "600000", "WRITE"]);
    // WAIT counts the replicas holding this connection's writes.
    let (_, acked): (String, i64) =
        redis::pipe().cmd("SET").arg("k").arg("v").cmd("WAIT").arg(1).arg(4000).query(&mut stack.nodes[0].conn()).unwrap();
    assert_eq!(acked, 1, "the write must be acknowledged by node-3 alone");
    let master_offset = stack.nodes[0].info_field("master_repl_offset");
    harness::wait_until("node-3 to hold the write", Duration::from_secs(10), || {
        stack.nodes[2].info_field("slave_repl_offset") == master_offset
    });
    // Frozen, node-3 is no candidate for the observer: it chooses node-2.
    stack.nodes[2].freeze(true);
    stack.nodes[0].kill();
    let mut etcd = stack.etcd.client().await;
    etcd.put(stack.keys.node(CLUSTER, "node-1"), registration(stack.nodes[0].port(), false), None).await.unwrap();
    // Losing its master's link drops what node-2 read but did not apply.
    harness::wait_until("node-2 to lose its master", Duration::from_secs(10), || {
        stack.nodes[1].info_field("master_link_status").as_deref() == Some("down")
    });
    let _: String = stack.nodes[1].cmd(&["CLIENT", "UNPAUSE"]);
    let behind: u64 = stack.nodes[1].info_field("slave_repl_offset").unwrap().parse().unwrap();
    let ahead: u64 = master_offset.unwrap().parse().unwrap();
    assert!(behind < ahead, "node-2 holds the write ({behind} >= {ahead}): nothing for the dictator to refuse");
    assert_eq!(stack.nodes[1].cmd::<Option<String>>(&["GET", "k"]), None);

    let as_json = |t: &str| serde_json::from_str::<Value>(t).unwrap();
    let first = as_json(&stack.topology(1, &[2, 0]));
    harness::wait_until_async("the observer to fail over to node-2", Duration::from_secs(20), || async {
        as_json(&stack.stored_topology().await.0) == first
    })
    .await;
    // Thawed while the dictator waits for it, node-3 is further along than node-2.
    stack.nodes[2].freeze(false);

    let node2 = format!("127.0.0.1:{}", stack.nodes[1].port());
    let node3 = format!("127.0.0.1:{}", stack.nodes[2].port());
    stack.wait_applied(2, "the next candidate promoted").await;
    assert_eq!(as_json(&stack.stored_topology().await.0), as_json(&stack.topology(2, &[1, 0])));
    harness::wait_until("node-2 to follow node-3", Duration::from_secs(20), || {
        stack.nodes[1].info_field("master_port") == Some(stack.nodes[2].port().to_string())
            && stack.nodes[1].info_field("master_link_status").as_deref() == Some("up")
    });
    assert_eq!(stack.nodes[1].role(), "slave", "two masters");
    for node in &stack.nodes[1..] {
        assert_eq!(node.cmd::<Option<String>>(&["GET", "k"]).as_deref(), Some("v"), "the acknowledged write was lost");
    }
    let status = stack.status().await.unwrap();
    let note = status.failover.unwrap_or_default();
    assert!(note.contains(&format!("promoting {node3}")), "{note}");
    assert!(note.contains(&format!("the dictator refused {node2}: 409")) && note.contains("would lose acknowledged writes"), "{note}");
    let refused = logged(&observer, "automatic failover refused by the dictator");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["refused"], node2.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_are_applied_independently_and_a_stuck_or_failing_one_holds_up_no_other() {
    const OTHER: &str = "redis-2";
    let mut stack = Stack::start(2).await;
    stack.add_nodes(OTHER, 2).await;
    let (observer, _) = stack.observer("o1");
    stack.define_in(CLUSTER, stack.topology(0, &[1])).await;
    stack.define_in(OTHER, stack.topology(2, &[3])).await;
    stack.wait_applied_in(CLUSTER, 0, "the first cluster applied").await;
    stack.wait_applied_in(OTHER, 2, "the second cluster applied").await;

    // The first cluster's apply is stuck: its new master is frozen, so the
    // dictator cannot answer (its redis timeout is a minute).
    stack.nodes[1].freeze(true);
    let stuck = stack.define_in(CLUSTER, stack.topology(1, &[0])).await;
    harness::wait_until("the first cluster's apply to start", Duration::from_secs(10), || {
        logged(&observer, "round: applying the topology").iter().any(|l| l["cluster"] == CLUSTER && l["topology_revision"] == stuck)
    });
    let moved = stack.define_in(OTHER, stack.topology(3, &[2])).await;
    stack.wait_applied_in(OTHER, 3, "the second cluster applied while the first is stuck").await;
    assert_eq!(stack.status_of(OTHER).await.unwrap().topology_revision, moved);
    let first: Vec<Value> = log_lines(&observer).into_iter().filter(|l| l["cluster"] == CLUSTER).collect();
    let started = first.iter().rposition(|l| l["topology_revision"] == stuck).unwrap();
    assert!(
        first[started..].iter().all(|l| l["message"] != "round failed" && l["message"] != "round: applied and published"),
        "the first cluster's apply ended: {first:?}"
    );
    assert_eq!(stack.published_master_port(CLUSTER).await, Some(stack.nodes[0].port() as u64), "DNS must not move");

    // Thawed, its master is killed instead: the apply fails and is retried...
    stack.nodes[1].freeze(false);
    stack.nodes[1].kill();
    let failing = stack.define_in(CLUSTER, stack.topology(1, &[0])).await;
    harness::wait_until_async("the first cluster failing and retried", Duration::from_secs(30), || async {
        stack.status_of(CLUSTER).await.is_some_and(|s| s.topology_revision == failing && s.failures >= 2)
    })
    .await;
    // ... and the second cluster still moves.
    let back = stack.define_in(OTHER, stack.topology(2, &[3])).await;
    stack.wait_applied_in(OTHER, 2, "the second cluster applied while the first fails").await;
    assert_eq!(stack.status_of(OTHER).await.unwrap().topology_revision, back);
    let first = stack.status_of(CLUSTER).await.unwrap();
    assert_eq!((first.result.as_str(), first.topology_revision), ("dictator", failing), "{first:?}");
    assert_eq!(stack.published_master_port(CLUSTER).await, Some(stack.nodes[0].port() as u64), "DNS must not move");
}

/// Waits until every slave in `slaves` has applied all the master has: the
/// dictator's marker and its removal included, so none holds a key the master lacks.
fn wait_in_sync(stack: &Stack, master: usize, slaves: &[usize]) {
    harness::wait_until("the slaves to hold all the master has", Duration::from_secs(20), || {
        let offset = stack.nodes[master].info_field("master_repl_offset");
        slaves.iter().all(|s| {
            let n = &stack.nodes[*s];
            n.info_field("master_link_status").as_deref() == Some("up") && n.info_field("slave_repl_offset") == offset
        })
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_that_diverge_from_the_topology_are_put_back_without_a_trigger() {
    let mut stack = Stack::start(3).await;
    stack.start_agents();
    let (observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology").await;
    let master = stack.nodes[0].host_port();
    harness::wait_until_async("the agents to register each slave's upstream", Duration::from_secs(20), || async {
        let mut slaves = Vec::new();
        for node in ["node-2", "node-3"] {
            slaves.push(stack.registration_of(node).await.and_then(|(r, _)| r.upstream));
        }
        slaves.iter().all(|u| u.as_deref() == Some(master.as_str()))
    })
    .await;
    wait_in_sync(&stack, 0, &[1, 2]);
    let trigger = stack.trigger_revision().await;
    let master_port = Some(stack.nodes[0].port().to_string());

    // A slave promoted by hand keeps its run_id: its agent writes no trigger, only
    // its registration says it is a master now.
    let _: String = stack.nodes[1].cmd(&["REPLICAOF", "NO", "ONE"]);
    assert_eq!(stack.nodes[1].role(), "master");
    harness::wait_until("the promoted slave to follow the master again", Duration::from_secs(20), || {
        stack.nodes[1].role() == "slave" && stack.nodes[1].info_field("master_port") == master_port
    });
    // The dictator re-pointed it before the observer records the apply.
    harness::wait_until_async("the re-apply recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.diverged.as_deref().is_some_and(|d| d.contains("registers as a master")))
    })
    .await;
    assert_eq!(stack.status().await.unwrap().result, "ok");

    // A slave re-pointed by hand at another slave: only its upstream differs.
    wait_in_sync(&stack, 0, &[1, 2]);
    let _: String = stack.nodes[2].cmd(&["REPLICAOF", "127.0.0.1", &stack.nodes[1].port().to_string()]);
    assert_eq!(stack.nodes[2].info_field("master_port"), Some(stack.nodes[1].port().to_string()));
    harness::wait_until("the re-pointed slave to follow the master again", Duration::from_secs(20), || {
        stack.nodes[2].info_field("master_port") == master_port
    });
    harness::wait_until_async("the re-apply recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.diverged.as_deref().is_some_and(|d| d.contains("replicates from")))
    })
    .await;

    assert_eq!(stack.trigger_revision().await, trigger, "a trigger was written: this test proves nothing");
    let roles: Vec<String> = stack.nodes.iter().map(Redis::role).collect();
    assert_eq!(roles, ["master", "slave", "slave"]);
    assert!(!logged(&observer, "members diverged from the applied topology: applying it again").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_timeout_waits_for_a_change_instead_of_fencing_the_master_again_and_again() {
    let stack = Stack::start_with(2, &["--catch-up-timeout-ms", "300"]).await;
    let (observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "first topology").await;
    wait_in_sync(&stack, 0, &[1]);

    // A replica under CLIENT PAUSE WRITE applies nothing its master sends, so it
    // cannot catch up with the write that follows.
    let _: String = stack.nodes[1].cmd(&["CLIENT", "PAUSE", "600000", "WRITE"]);
    let _: String = stack.nodes[0].cmd(&["SET", "k", "v"]);
    let moved = stack.define(stack.topology(1, &[0])).await;
    harness::wait_until_async("the catch-up timeout recorded", Duration::from_secs(20), || async {
        stack.status().await.is_some_and(|s| s.topology_revision == moved && s.result == "dictator")
    })
    .await;
    let status = stack.status().await.unwrap();
    assert!(status.error.as_deref().unwrap_or("").contains("504"), "{status:?}");
    assert_eq!(status.retry.as_deref(), Some("on_change"), "{status:?}");

    // A wake-up that changes neither the topology, the trigger nor a registration:
    // the worker looks, and says it waits.
    let mut etcd = stack.etcd.client().await;
    etcd.put(stack.keys.maintenance(CLUSTER), "wake the worker", None).await.unwrap();
    harness::wait_until("the worker to look and decide to wait", Duration::from_secs(10), || {
        logged(&observer, "not applying: the last apply failed in a way only a change can heal, and nothing changed")
            .iter()
            .any(|l| l["topology_revision"] == moved)
    });
    let applies = logged(&observer, "round: applying the topology").into_iter().filter(|l| l["topology_revision"] == moved).count();
    assert_eq!(applies, 1, "the catch-up timeout was retried: the master was fenced again");
    assert_eq!(stack.nodes[0].role(), "master");
    let fence: Vec<String> = stack.nodes[0].cmd(&["CONFIG", "GET", "min-replicas-to-write"]);
    assert_eq!(fence[1], "0", "the master was left fenced");

    // A change (a trigger) is tried again; the replica can catch up now.
    let _: String = stack.nodes[1].cmd(&["CLIENT", "UNPAUSE"]);
    etcd.delete(stack.keys.maintenance(CLUSTER), None).await.unwrap();
    let trigger = stack.trigger().await;
    stack.wait_applied(1, "the topology applied after a trigger").await;
    let status = stack.status().await.unwrap();
    assert_eq!((status.trigger.as_deref(), status.retry.as_deref()), (Some(trigger.as_str()), None), "{status:?}");
    assert_eq!(stack.nodes[1].cmd::<Option<String>>(&["GET", "k"]).as_deref(), Some("v"), "the write was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_before_its_lease_can_expire() {
    let stack = Stack::start(1).await;
    let partition = Partition::start(stack.etcd.client_port()).await;
    // TTL 6 s: renewals every 2 s, each given 2 s to be answered, so the observer
    // must stop with etcd still counting at least 2 s on the lease.
    let (observer, port) = stack.observer_at("o1", &partition.endpoint(), 6, &[]);
    harness::wait_until_async("o1 leads", Duration::from_secs(10), || async { leader_flag(port).await == Some(true) }).await;
    let mut etcd = stack.etcd.client().await;
    let election = etcd.get(format!("{}/", stack.keys.election()), Some(GetOptions::new().with_prefix())).await.unwrap();
    let kv = election.kvs().iter().find(|kv| kv.value_str().ok() == Some("o1")).unwrap();
    let (key, lease) = (kv.key().to_vec(), kv.lease());
    assert_ne!(lease, 0, "the election key is not under a lease");

    // etcd runs on and keeps counting the lease down; the observer reaches it no more.
    partition.cut();
    harness::wait_until_async("o1 to stop leading", Duration::from_secs(30), || async { leader_flag(port).await == Some(false) })
        .await;
    // Ordering by etcd's own clock: asked only after o1 said it stopped, etcd
    // still counts at least a whole second on its lease (it reports whole seconds,
    // rounded down, and 0 also for a lease expired but not yet revoked), so o1
    // stopped before the lease could expire, with a second to spare.
    let ttl = etcd.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl >= 1, "etcd counted {ttl} s left on the lease when the observer said it stopped leading");
    assert_eq!(etcd.get(key.clone(), None).await.unwrap().kvs().len(), 1, "the election key is gone already");
    assert!(!logged(&observer, "no longer leading: workers stopped").is_empty());

    // Nothing renews it through the partition (nor revokes it): etcd expires it,
    // and the election key goes with it.
    harness::wait_until_async("etcd to expire the lease", Duration::from_secs(20), || async {
        etcd.clone().get(key.clone(), None).await.is_ok_and(|r| r.kvs().is_empty())
    })
    .await;
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    harness::assert_documents_flags(
        "observer",
        &[
            ("--dictator", "REDIS_TOPOLOGY_DICTATOR"),
            ("--dnsd", "REDIS_TOPOLOGY_DNSD"),
            ("--nameserver", "REDIS_TOPOLOGY_NAMESERVER"),
            ("--listen", "REDIS_TOPOLOGY_LISTEN"),
            ("--id", "REDIS_TOPOLOGY_OBSERVER_ID"),
            ("--election-ttl-secs", "REDIS_TOPOLOGY_ELECTION_TTL_SECS"),
            ("--retry-min-ms", "REDIS_TOPOLOGY_RETRY_MIN_MS"),
            ("--retry-max-ms", "REDIS_TOPOLOGY_RETRY_MAX_MS"),
            ("--request-timeout-ms", "REDIS_TOPOLOGY_REQUEST_TIMEOUT_MS"),
            ("--failover-after-ms", "REDIS_TOPOLOGY_FAILOVER_AFTER_MS"),
            ("--failover-after-refused-ms", "REDIS_TOPOLOGY_FAILOVER_AFTER_REFUSED_MS"),
            ("--failover-cooldown-secs", "REDIS_TOPOLOGY_FAILOVER_COOLDOWN_SECS"),
            ("--master-probe-ms", "REDIS_TOPOLOGY_MASTER_PROBE_MS"),
            ("--domain", "REDIS_TOPOLOGY_DOMAIN"),
            ("--etcd-endpoints", "ETCDCTL_ENDPOINTS"),
            ("--etcd-prefix", "REDIS_TOPOLOGY_ETCD_PREFIX"),
            ("--log-format", "REDIS_TOPOLOGY_LOG_FORMAT"),
            ("--redis-user", "REDIS_TOPOLOGY_REDIS_USER"),
            ("--redis-password-file", "REDIS_TOPOLOGY_REDIS_PASSWORD_FILE"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_master_back_from_its_aof_is_quarantined_and_holds_up_no_later_failover() {
    let mut stack = Stack::start_persistent(3, Persistence::Aof, &[]).await;
    stack.start_agents();
    let (_observer, _) = stack.observer_with("o1", &["--failover-cooldown-secs", "0"]);
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology").await;
    let before: Vec<String> = (0..20).map(|i| format!("before:{i}")).collect();
    for key in &before {
        stack.nodes[0].cmd::<()>(&["SET", key, "acked"]);
    }
    wait_in_sync(&stack, 0, &[1, 2]);

    // node-1 dies; the observer fails over to a slave, and DNS follows.
    stack.nodes[0].kill();
    let ports: Vec<u16> = stack.nodes.iter().map(Redis::port).collect();
    let port = |i: usize| ports[i];
    let promoted = |published: Option<u64>| {
        [1, 2].into_iter().find(|i| published == Some(u64::from(port(*i))) && stack.nodes[*i].role() == "master")
    };
    harness::wait_until_async("the first failover", Duration::from_secs(30), || async {
        promoted(stack.published_master_port(CLUSTER).await).is_some()
    })
    .await;
    let first = promoted(stack.published_master_port(CLUSTER).await).unwrap();
    let last = 3 - first;
    stack.nodes[first].cmd::<()>(&["SET", "after", "acked"]);

    // node-1 comes back from its AOF: a master (its config file says so) with
    // its keys and no replication history, so nothing shows the group has them.
    stack.nodes[0].restart();
    assert_eq!(stack.nodes[0].role(), "master");
    assert_eq!(stack.nodes[0].info_field("master_repl_offset").as_deref(), Some("0"), "an AOF keeps no history");
    let node1 = format!("127.0.0.1:{}", port(0));
    harness::wait_until_async("node-1 quarantined", Duration::from_secs(30), || async {
        stack.status().await.is_some_and(|s| {
            s.result == "partial" && s.error.as_deref().is_some_and(|e| e.contains("quarantined") && e.contains(&node1))
        })
    })
    .await;
    let status = stack.status().await.unwrap();
    assert!(status.error.as_deref().unwrap().contains("no replication history"), "{status:?}");
    // It keeps its keys for an operator, takes no writes, and readers are not sent to it.
    assert_eq!(stack.nodes[0].role(), "master");
    for key in &before {
        assert_eq!(stack.nodes[0].cmd::<Option<String>>(&["GET", key]).as_deref(), Some("acked"));
    }
    let refused: redis::RedisResult<()> = redis::cmd("SET").arg("x").arg("1").query(&mut stack.nodes[0].conn());
    assert!(refused.expect_err("a quarantined master took a write").to_string().contains("NOREPLICAS"));
    assert_eq!(stack.published_master_port(CLUSTER).await, Some(u64::from(port(first))));
    harness::wait_until("the read pool without node-1", Duration::from_secs(10), || {
        dns_slave_ports(&stack.nameserver, CLUSTER) == [port(last)]
    });

    // The group is not stuck: its next failover goes through, node-1 still left out.
    stack.nodes[first].kill();
    harness::wait_until_async("the second failover", Duration::from_secs(30), || async {
        stack.published_master_port(CLUSTER).await == Some(u64::from(port(last))) && stack.nodes[last].role() == "master"
    })
    .await;
    assert_eq!(stack.nodes[last].cmd::<Option<String>>(&["GET", "after"]).as_deref(), Some("acked"));
    assert_eq!(stack.nodes[0].role(), "master", "the quarantined member was demoted without an operator");

    // The operator decides: node-1's keys are all on the master, so resync it.
    let topology = stack.stored_topology().await.0;
    let forced = reqwest::Client::new()
        .put(format!("{}/clusters/{CLUSTER}/master?force=true", stack.dictator_url))
        .body(topology)
        .send()
        .await
        .unwrap();
    assert!(forced.status().is_success(), "{:?}", forced.text().await);
    harness::wait_until("node-1 to follow the master", Duration::from_secs(20), || {
        stack.nodes[0].info_field("master_port") == Some(port(last).to_string())
            && stack.nodes[0].info_field("master_link_status").as_deref() == Some("up")
    });
    assert_eq!(stack.nodes[0].cmd::<Option<String>>(&["GET", "after"]).as_deref(), Some("acked"));
}

/// Whether a write to `redis` is refused by the write fence.
fn refuses_writes(redis: &Redis) -> bool {
    let result: redis::RedisResult<()> = redis::cmd("SET").arg("fence-check").arg("1").query(&mut redis.conn());
    result.is_err_and(|e| e.to_string().contains("NOREPLICAS"))
}

/// Writes `writes:<i>` to `redis` directly, as a client that stays connected to
/// the old master does, until `stop`; returns the keys it acknowledged.
fn direct_writer(redis: &Redis, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    let mut conn = redis.conn();
    std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0.. {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let key = format!("writes:{i}");
            if redis::cmd("SET").arg(&key).arg("acked").query::<()>(&mut conn).is_ok() {
                acked.push(key);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        acked
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_cut_off_from_etcd_fences_itself_before_its_lease_can_expire_and_loses_nothing() {
    let mut stack = Stack::start(3).await;
    let partition = Partition::start(stack.etcd.client_port()).await;
    // Lease TTL 6 s: the agent fences after 3 s without an answered renewal, with
    // at least 2 s left on the lease by etcd's count.
    stack.start_agent(0, &partition.endpoint(), &["--lease-ttl", "6", "--self-fence-after-ms", "3000"]);
    let endpoint = stack.etcd.endpoint();
    stack.start_agent(1, &endpoint, &[]);
    stack.start_agent(2, &endpoint, &[]);
    let (_observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology").await;
    let mut etcd = stack.etcd.client().await;
    let lease = etcd.get(stack.keys.node(CLUSTER, "node-1"), None).await.unwrap().kvs()[0].lease();

    // A client stays connected to node-1 (HAProxy keeps sessions) and writes on.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = direct_writer(&stack.nodes[0], stop.clone());
    partition.cut();
    harness::wait_until("node-1 to fence itself", Duration::from_secs(10), || refuses_writes(&stack.nodes[0]));
    // By etcd's own clock its lease still runs (whole seconds, rounded down): no
    // failover can have started, and none can promote a slave that lacks a write.
    let ttl = etcd.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl >= 1, "etcd counted {ttl} s left on node-1's lease when it fenced itself");
    assert_eq!(stack.nodes[0].role(), "master");

    // The lease expires; the observer fails over to a slave, which has every write.
    let ports: Vec<u16> = stack.nodes.iter().map(Redis::port).collect();
    let promoted = |published: Option<u64>| {
        [1, 2].into_iter().find(|i| published == Some(u64::from(ports[*i])) && stack.nodes[*i].role() == "master")
    };
    harness::wait_until_async("the failover", Duration::from_secs(30), || async {
        promoted(stack.published_master_port(CLUSTER).await).is_some()
    })
    .await;
    let new = promoted(stack.published_master_port(CLUSTER).await).unwrap();
    stop.store(true, Ordering::SeqCst);
    let acked = writer.join().unwrap();
    assert!(acked.len() > 10, "the writer got only {} writes through before the cut", acked.len());
    let mut conn = stack.nodes[new].conn();
    let missing: Vec<&String> = acked.iter().filter(|k| redis::cmd("EXISTS").arg(*k).query::<i64>(&mut conn).unwrap() == 0).collect();
    assert!(missing.is_empty(), "{} acknowledged writes lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);

    // Healed, node-1 follows the new master: one writable master.
    partition.heal();
    harness::wait_until("node-1 to follow the new master", Duration::from_secs(30), || {
        stack.nodes[0].role() == "slave" && stack.nodes[0].info_field("master_port") == Some(ports[new].to_string())
    });
    let masters = stack.nodes.iter().filter(|n| n.role() == "master").count();
    assert_eq!(masters, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_fenced_by_a_short_partition_takes_writes_again_after_the_next_apply() {
    let mut stack = Stack::start(2).await;
    let partition = Partition::start(stack.etcd.client_port()).await;
    // A 6 s lease outlives the partition: no failover, only the fence.
    stack.start_agent(0, &partition.endpoint(), &["--lease-ttl", "6", "--self-fence-after-ms", "3000"]);
    let endpoint = stack.etcd.endpoint();
    stack.start_agent(1, &endpoint, &[]);
    let (observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "first topology").await;
    let lease = stack.etcd.client().await.get(stack.keys.node(CLUSTER, "node-1"), None).await.unwrap().kvs()[0].lease();

    partition.cut();
    harness::wait_until("node-1 to fence itself", Duration::from_secs(10), || refuses_writes(&stack.nodes[0]));
    partition.heal();
    // Its agent registers the fence; the observer applies the topology again,
    // and the dictator lifts it.
    harness::wait_until("node-1 to take writes again", Duration::from_secs(30), || !refuses_writes(&stack.nodes[0]));
    harness::wait_until_async("the re-apply recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.diverged.as_deref().is_some_and(|d| d.contains("is fenced")))
    })
    .await;
    assert_eq!(stack.nodes[0].role(), "master");
    assert_eq!(stack.published_master_port(CLUSTER).await, Some(u64::from(stack.nodes[0].port())));
    assert!(logged(&observer, "automatic failover").is_empty());
    let still = stack.etcd.client().await.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(still != 0 || stack.registration_of("node-1").await.is_some(), "node-1's registration vanished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_silent_to_the_observer_and_its_replicas_is_failed_over_though_etcd_lists_it_healthy() {
    let mut stack = Stack::start(3).await;
    // node-1's agent holds a 30 s lease and will be frozen with its redis, so etcd
    // keeps listing node-1 healthy; the slaves' agents PING their master.
    let endpoint = stack.etcd.endpoint();
    stack.start_agent(0, &endpoint, &["--lease-ttl", "30"]);
    stack.start_agent(1, &endpoint, &[]);
    stack.start_agent(2, &endpoint, &[]);
    let (observer, _) = stack.observer_with("o1", &["--failover-after-ms", "60000"]);
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology").await;
    wait_in_sync(&stack, 0, &[1, 2]);
    stack.agents[0].process().signal(libc::SIGSTOP);
    stack.nodes[0].freeze(true);
    // Neither the observer nor the slaves' hosts reach it: a dead machine, seen
    // from two sides, failed over without the 60 s blip delay or the lease.
    let ports: Vec<u64> = stack.nodes.iter().map(|n| u64::from(n.port())).collect();
    harness::wait_until_async("the failover", Duration::from_secs(20), || async {
        let published = stack.published_master_port(CLUSTER).await;
        published == Some(ports[1]) || published == Some(ports[2])
    })
    .await;
    assert!(!logged(&observer, "the master answers neither the observer nor its replicas, though etcd still lists it healthy").is_empty());
    assert!(stack.registration_of("node-1").await.is_some_and(|(r, _)| r.healthy), "etcd said down: this test proves nothing");
    stack.nodes[0].freeze(false);
    stack.agents[0].process().signal(libc::SIGCONT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_the_observer_cannot_reach_but_its_replicas_hear_is_not_failed_over() {
    let mut stack = Stack::start(3).await;
    // Everyone reaches node-1 through a proxy; its agent probes node-1 directly
    // and advertises the proxy. The slaves' agents PING their master (the proxy).
    let proxy = Partition::start(stack.nodes[0].port()).await;
    let mut client = stack.etcd.client().await;
    client.delete(stack.keys.node(CLUSTER, "node-1"), None).await.unwrap();
    let endpoint = stack.etcd.endpoint();
    let advertised = proxy.port.to_string();
    stack.start_agent(0, &endpoint, &["--advertise-port", &advertised]);
    let (observer, _) = stack.observer_with("o1", &["--failover-after-ms", "60000"]);
    let member = |port: u16| json!({"address": "127.0.0.1", "port": port});
    let topology = json!({"master": member(proxy.port), "slaves": [member(stack.nodes[1].port()), member(stack.nodes[2].port())]});
    stack.define(topology.to_string()).await;
    harness::wait_until_async("the topology applied through the proxy", Duration::from_secs(20), || async {
        stack.published_master_port(CLUSTER).await == Some(u64::from(proxy.port))
            && stack.status().await.is_some_and(|s| s.result == "ok")
    })
    .await;
    harness::wait_until("the replicas linked through the proxy", Duration::from_secs(20), || {
        stack.nodes[1..].iter().all(|n| n.info_field("master_link_status").as_deref() == Some("up"))
    });

    // The observer cannot open a connection to node-1 any more; the connections
    // already open (replication, the slaves' agents' PINGs) still go through.
    let endpoint = stack.etcd.endpoint();
    stack.start_agent(1, &endpoint, &[]);
    stack.start_agent(2, &endpoint, &[]);
    harness::wait_until_async("the slaves' agents registered their upstream", Duration::from_secs(20), || async {
        let mut ok = true;
        for node in ["node-2", "node-3"] {
            ok &= stack.registration_of(node).await.is_some_and(|(r, _)| r.upstream.as_deref() == Some(&format!("127.0.0.1:{}", proxy.port)[..]));
        }
        ok
    })
    .await;
    proxy.block_new();
    let said = "the master does not answer the observer, but its replicas still hear from it: no failover";
    harness::wait_until("the observer to look three times", Duration::from_secs(20), || logged(&observer, said).len() >= 3);
    assert!(logged(&observer, "automatic failover").is_empty());
    assert_eq!(stack.published_master_port(CLUSTER).await, Some(u64::from(proxy.port)));
    assert_eq!(stack.nodes[0].role(), "master");
    for node in ["node-2", "node-3"] {
        assert!(stack.registration_of(node).await.is_some_and(|(r, _)| !r.upstream_down), "{node} lost its master too");
    }
}
