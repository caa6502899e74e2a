//! The whole system on loopback, as an operator would run it: etcd, one
//! redis-server plus node-agent per node, dnsd, the dictator, the observer and
//! (optionally) HAProxy with the repository's own `deploy/haproxy/haproxy.cfg`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::process::Process;
use crate::{free_port, Etcd, Redis, Service};

pub const CLUSTER: &str = "redis-1";
pub const DOMAIN: &str = "cluster.local";

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct StackOptions {
    pub nodes: usize,
    pub haproxy: bool,
    /// Observers to run (they elect one leader); at least one.
    pub observers: usize,
    /// Extra flags for every observer (e.g. `--failover-cooldown-secs 0`).
    pub observer_args: &'static [&'static str],
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions { nodes: 3, haproxy: false, observers: 1, observer_args: &[] }
    }
}

/// One node: a redis-server and its node-agent.
pub struct Node {
    pub name: String,
    pub redis: Redis,
    pub agent: Option<Service>,
    pub agent_port: u16,
}

pub struct Stack {
    pub etcd: Etcd,
    pub nodes: Vec<Node>,
    pub dns: SocketAddr,
    /// dnsd's Sentinel listener (`--sentinel-listen`).
    pub sentinel: SocketAddr,
    pub dnsd_url: String,
    pub dictator_url: String,
    pub write: Option<SocketAddr>,
    pub read: Option<SocketAddr>,
    /// The observers with their HTTP ports (`GET /status` says who leads).
    pub observers: Vec<(Service, u16)>,
    _dnsd: Service,
    _dictator: Service,
    _haproxy: Option<(Process, tempfile::TempDir)>,
}

impl Stack {
    pub fn start(options: StackOptions) -> Stack {
        let etcd = Etcd::start();
        let endpoint = etcd.endpoint();
        let nodes: Vec<Node> = (1..=options.nodes).map(|i| start_node(&endpoint, &format!("node-{i}"))).collect();

        let dns: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let sentinel: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let (dnsd_port, dictator_port) = (free_port(), free_port());
        let mut dnsd = Service::start(
            "dnsd",
            &["--listen", &format!("127.0.0.1:{dnsd_port}"), "--dns-listen", &dns.to_string(),
              "--sentinel-listen", &sentinel.to_string(),
              "--etcd-endpoints", &endpoint, "--domain", DOMAIN, "--cluster", CLUSTER],
            &[],
        );
        dnsd.wait_http(dnsd_port);
        let mut dictator = Service::start(
            "dictator",
            &["--listen", &format!("127.0.0.1:{dictator_port}"), "--nameserver", &dns.to_string(), "--cluster", CLUSTER,
              "--etcd-endpoints", &endpoint],
            &[],
        );
        dictator.wait_http(dictator_port);
        let dictator_url = format!("http://127.0.0.1:{dictator_port}");
        let dnsd_url = format!("http://127.0.0.1:{dnsd_port}");
        let observers = (1..=options.observers.max(1))
            .map(|i| {
                let port = free_port();
                let (listen, id, nameserver) = (format!("127.0.0.1:{port}"), format!("observer-{i}"), dns.to_string());
                let mut args = vec!["--listen", &listen, "--etcd-endpoints", &endpoint,
                    "--dictator", &dictator_url, "--dnsd", &dnsd_url, "--id", &id,
                    "--nameserver", &nameserver, "--election-ttl-secs", "2",
                    "--retry-min-ms", "100", "--retry-max-ms", "1000"];
                args.extend_from_slice(options.observer_args);
                let mut observer = Service::start("observer", &args, &[]);
                observer.wait_http(port);
                (observer, port)
            })
            .collect();

        let haproxy = options.haproxy.then(|| start_haproxy(dns));
        let (write, read, haproxy) = match haproxy {
            Some((w, r, p)) => (Some(w), Some(r), Some(p)),
            None => (None, None, None),
        };
        Stack {
            etcd, nodes, dns, sentinel, dnsd_url, dictator_url, write, read,
            observers, _dnsd: dnsd, _dictator: dictator, _haproxy: haproxy,
        }
    }

    /// `<node>.<cluster>.<domain>`.
    pub fn node_name(&self, i: usize) -> String {
        format!("{}.{CLUSTER}.{DOMAIN}", self.nodes[i].name)
    }

    /// The topology JSON with node `master` as master and `slaves` as slaves, by name.
    pub fn topology(&self, master: usize, slaves: &[usize]) -> String {
        let member = |i: usize| serde_json::json!({ "address": self.node_name(i) });
        serde_json::json!({ "master": member(master), "slaves": slaves.iter().map(|i| member(*i)).collect::<Vec<_>>() })
            .to_string()
    }

    /// Writes the topology to etcd, as `scripts/define-topology.sh` does; returns its revision.
    pub async fn define(&self, master: usize, slaves: &[usize]) -> i64 {
        let mut client = self.etcd.client().await;
        let put = client.put(format!("/config/{CLUSTER}/topology"), self.topology(master, slaves), None).await.expect("put topology");
        put.header().map_or(0, |h| h.revision())
    }

    /// The observer's last status, as JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let mut client = self.etcd.client().await;
        let got = client.get(format!("/status/{CLUSTER}"), None).await.ok()?;
        got.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok())
    }

    /// Waits until the observer reports the topology of `revision` (or a later one) applied.
    pub async fn wait_applied(&self, revision: i64) {
        crate::wait_until_async(&format!("topology revision {revision} applied"), Duration::from_secs(30), || async {
            self.status().await.is_some_and(|s| {
                s["result"] == "ok" && s["topology_revision"].as_i64().is_some_and(|r| r >= revision)
            })
        })
        .await;
    }

    /// The observer that leads now, if any.
    pub fn leader(&self) -> Option<usize> {
        self.observers.iter().position(|(_, port)| {
            crate::etcd::http_get(*port, "/status").is_some_and(|body| body.contains("\"leader\":true"))
        })
    }

    /// Waits until every node is registered by its agent.
    pub async fn wait_registered(&self) {
        crate::wait_until_async("every node registered", Duration::from_secs(20), || async {
            let mut client = self.etcd.client().await;
            let got = client
                .get(format!("/nodes/{CLUSTER}/"), Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
                .await;
            got.is_ok_and(|g| g.kvs().len() >= self.nodes.iter().filter(|n| n.agent.is_some()).count())
        })
        .await;
    }
}

fn start_node(etcd: &str, name: &str) -> Node {
    let redis = Redis::start();
    let mut node = Node { name: name.to_string(), redis, agent: None, agent_port: free_port() };
    start_agent(&mut node, etcd);
    node
}

/// (Re)starts the node-agent of `node`.
pub fn start_agent(node: &mut Node, etcd: &str) {
    let mut agent = Service::start(
        "node-agent",
        &["--cluster", CLUSTER, "--node", &node.name, "--redis", &node.redis.host_port(),
          "--listen", &format!("127.0.0.1:{}", node.agent_port), "--etcd-endpoints", etcd,
          "--lease-ttl", "2"],
        &[],
    );
    agent.wait_http(node.agent_port);
    node.agent = Some(agent);
}

/// HAProxy with deploy/haproxy/haproxy.cfg; returns the write and read addresses.
fn start_haproxy(dns: SocketAddr) -> (SocketAddr, SocketAddr, (Process, tempfile::TempDir)) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy/haproxy.cfg");
    let dir = tempfile::tempdir().expect("haproxy temp dir");
    let (write, read): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], free_port()).into(), ([127, 0, 0, 1], free_port()).into());
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f", config])
        .env("DNSD_DNS", dns.to_string())
        .env("CLUSTER", CLUSTER)
        .env("DOMAIN", DOMAIN)
        .env("WRITE_BIND", write.to_string())
        .env("READ_BIND", read.to_string())
        .env("STATS_BIND", format!("127.0.0.1:{}", free_port()));
    let process = Process::spawn("haproxy", cmd, &dir.path().join("haproxy.log"));
    crate::wait_until("haproxy to listen", Duration::from_secs(10), || std::net::TcpStream::connect(write).is_ok());
    (write, read, (process, dir))
}
