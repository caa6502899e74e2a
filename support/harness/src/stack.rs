//! The whole system on loopback, as an operator would run it: etcd (one member or
//! a cluster), one redis-server plus node-agent per node, dnsd, the dictator, the
//! observer and (optionally) HAProxy with the repository's own `deploy/haproxy/haproxy.cfg`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Process;
use crate::redis::RedisOptions;
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
    /// With `haproxy`: HAProxy opens its runtime API and dnsd pushes to it
    /// (`--haproxy-runtime`); otherwise HAProxy follows through DNS alone.
    pub haproxy_push: bool,
    /// etcd with client TLS and auth ([`Etcd::start_secure`]): every service
    /// connects with the CA, a client certificate and the service user, under
    /// [`SECURE_PREFIX`], the only prefix that user's role may touch.
    pub secure_etcd: bool,
    /// Redis with `requirepass`, ACL users and `masterauth` (`RedisOptions::auth`):
    /// the services connect as `redis::SERVICE_USER`, HAProxy's check as
    /// `redis::CHECK_USER`, clients as the `default` user. The default follows
    /// `HARNESS_REDIS_AUTH=1` (`redis::auth_from_env`).
    pub redis_auth: bool,
    /// Every service gets `--api-token-file` with two tokens ([`Stack::api_tokens`]:
    /// `observer`, the one the observers send, and `operator`).
    pub api_tokens: bool,
    /// dnsd replicas on the one etcd (at least one, at most three). The observer
    /// publishes to the last (`dnsd_url`), so a test can kill the first: the one
    /// the dictator, the observers and HAProxy, which name them all as nameservers,
    /// list first. With `haproxy_push` each pushes to HAProxy.
    pub dnsds: usize,
    /// Members of the etcd cluster every service is given all the endpoints of
    /// (`Etcd::start_cluster`); 1 by default. Not with `secure_etcd`.
    pub etcd_members: usize,
    /// The node-agents' `--lease-ttl` in seconds (2 by default: a dead agent's
    /// registration goes quickly; the agents' own default is 5).
    pub agent_lease_ttl_secs: u64,
}

/// The key prefix of a stack with `secure_etcd`.
pub const SECURE_PREFIX: &str = "/redis-topology";

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions { nodes: 3, haproxy: false, observers: 1, observer_args: &[], haproxy_push: false, secure_etcd: false,
            redis_auth: crate::redis::auth_from_env(), api_tokens: false, dnsds: 1,
            etcd_members: 1, agent_lease_ttl_secs: 2 }
    }
}

/// A token file of two fresh tokens, `observer` then `operator`; the tokens and
/// the file's path.
pub fn token_file(dir: &Path) -> (Vec<String>, String) {
    let tokens: Vec<String> = (0..2).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let path = dir.join("api-tokens");
    let text = format!("# the observer sends the first\nobserver:{}\n\noperator:{}\n", tokens[0], tokens[1]);
    std::fs::write(&path, text).expect("write the token file");
    (tokens, path.display().to_string())
}

/// One node: a redis-server and its node-agent.
pub struct Node {
    pub name: String,
    /// The cluster its agent registers it in ([`CLUSTER`] unless added by [`Stack::add_node`]).
    pub cluster: String,
    /// The machine its agent says it runs on (`--host`): `host-<name>` unless
    /// added by [`Stack::add_node`].
    pub host: String,
    pub redis: Redis,
    pub agent: Option<Service>,
    pub agent_port: u16,
    /// Its agent's `--lease-ttl`, in seconds.
    pub lease_ttl_secs: u64,
}

pub struct Stack {
    pub etcd: Etcd,
    pub nodes: Vec<Node>,
    /// The first dnsd's DNS address.
    pub dns: SocketAddr,
    /// Every dnsd replica's DNS address, in order (`dns` first).
    pub nameservers: Vec<SocketAddr>,
    /// dnsd's Sentinel listener (`--sentinel-listen`).
    pub sentinel: SocketAddr,
    /// The HTTP API of the dnsd the observer publishes to (the last replica).
    pub dnsd_url: String,
    pub dictator_url: String,
    pub write: Option<SocketAddr>,
    pub read: Option<SocketAddr>,
    /// The observers with their HTTP ports (`GET /status` says who leads).
    pub observers: Vec<(Service, u16)>,
    /// HAProxy's runtime API socket, with `haproxy_push`.
    pub runtime: Option<PathBuf>,
    /// HAProxy's stats page (`/;csv` lists the servers with their addresses).
    pub haproxy_stats: Option<SocketAddr>,
    /// With `api_tokens`: the `observer` and the `operator` token, which every
    /// service accepts; empty otherwise.
    pub api_tokens: Vec<String>,
    _tokens_dir: tempfile::TempDir,
    dnsds: Vec<Service>,
    _dictator: Service,
    _haproxy: Option<Haproxy>,
    _secrets: tempfile::TempDir,
    /// What every node-agent is started with (etcd, redis AUTH, API tokens), and
    /// how every redis is, for [`Stack::add_node`].
    agent_args: Vec<String>,
    redis_options: RedisOptions,
    agent_lease_ttl_secs: u64,
}

impl Stack {
    pub fn start(options: StackOptions) -> Stack {
        assert!(!options.secure_etcd || options.etcd_members <= 1, "a secured etcd has one member");
        let etcd = if options.secure_etcd { Etcd::start_secure(SECURE_PREFIX) } else { Etcd::start_cluster(options.etcd_members.max(1)) };
        let etcd_args = etcd.service_args();
        let secrets = tempfile::tempdir().expect("secrets temp dir");
        let password_file = secrets.path().join("redis-password");
        std::fs::write(&password_file, format!("{}\n", crate::redis::SERVICE_PASSWORD)).expect("write redis password");
        let redis_args = match options.redis_auth || crate::redis::auth_from_env() {
            true => vec!["--redis-user".to_string(), crate::redis::SERVICE_USER.into(), "--redis-password-file".into(), password_file.display().to_string()],
            false => vec![],
        };
        // The services' flags for etcd and for redis AUTH.
        let mut service_args = etcd_args.clone();
        service_args.extend(redis_args);
        let etcd_args: Vec<&str> = etcd_args.iter().map(String::as_str).collect();
        let service_args: Vec<&str> = service_args.iter().map(String::as_str).collect();
        let redis_auth = options.redis_auth || crate::redis::auth_from_env();
        let redis_options = RedisOptions { auth: redis_auth, ..RedisOptions::default() };
        let tokens_dir = tempfile::tempdir().expect("token temp dir");
        let (api_tokens, token_path) = if options.api_tokens { token_file(tokens_dir.path()) } else { (Vec::new(), String::new()) };
        let auth: Vec<&str> = if options.api_tokens { vec!["--api-token-file", &token_path] } else { Vec::new() };
        let nodes: Vec<Node> =
            (1..=options.nodes).map(|i| start_node(&redis_options, &service_args, &format!("node-{i}"), &auth, options.agent_lease_ttl_secs)).collect();
        let agent_args: Vec<String> = service_args.iter().chain(&auth).map(|a| a.to_string()).collect();

        let nameservers: Vec<SocketAddr> = (0..options.dnsds.max(1)).map(|_| ([127, 0, 0, 1], free_port()).into()).collect();
        let dns = nameservers[0];
        let sentinel: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let dictator_port = free_port();
        let haproxy_dir = tempfile::tempdir().expect("haproxy temp dir");
        let runtime = (options.haproxy && options.haproxy_push).then(|| haproxy_dir.path().join("admin.sock"));
        let runtime_arg = runtime.as_ref().map(|p| p.display().to_string());
        let mut dnsd_ports = Vec::new();
        let dnsds: Vec<Service> = nameservers
            .iter()
            .enumerate()
            .map(|(i, dns)| {
                let dnsd_port = free_port();
                dnsd_ports.push(dnsd_port);
                let (listen, dns_listen) = (format!("127.0.0.1:{dnsd_port}"), dns.to_string());
                let sentinel_listen = if i == 0 { sentinel } else { ([127, 0, 0, 1], free_port()).into() }.to_string();
                let mut dnsd_args = vec!["--listen", &listen, "--dns-listen", &dns_listen,
                      "--sentinel-listen", &sentinel_listen,
                      "--domain", DOMAIN, "--cluster", CLUSTER];
                dnsd_args.extend_from_slice(&etcd_args);
                if let Some(socket) = &runtime_arg {
                    dnsd_args.extend(["--haproxy-runtime", socket]);
                }
                dnsd_args.extend(&auth);
                let mut dnsd = Service::start("dnsd", &dnsd_args, &[]);
                dnsd.wait_http(dnsd_port);
                dnsd
            })
            .collect();
        let dnsd_port = dnsd_ports[dnsd_ports.len() - 1];
        let nameserver_list = nameservers.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
        let dictator_listen = format!("127.0.0.1:{dictator_port}");
        let mut dictator_args = vec!["--listen", &dictator_listen, "--nameserver", &nameserver_list, "--cluster", CLUSTER];
        dictator_args.extend_from_slice(&service_args);
        dictator_args.extend(&auth);
        let mut dictator = Service::start("dictator", &dictator_args, &[]);
        dictator.wait_http(dictator_port);
        let dictator_url = format!("http://127.0.0.1:{dictator_port}");
        let dnsd_url = format!("http://127.0.0.1:{dnsd_port}");
        let observers = (1..=options.observers.max(1))
            .map(|i| {
                let port = free_port();
                let (listen, id, nameserver) = (format!("127.0.0.1:{port}"), format!("observer-{i}"), nameserver_list.clone());
                let mut args = vec!["--listen", &listen,
                    "--dictator", &dictator_url, "--dnsd", &dnsd_url, "--id", &id,
                    "--nameserver", &nameserver, "--election-ttl-secs", "2",
                    "--retry-min-ms", "100", "--retry-max-ms", "1000"];
                args.extend_from_slice(&service_args);
                args.extend_from_slice(options.observer_args);
                args.extend(&auth);
                let mut observer = Service::start("observer", &args, &[]);
                observer.wait_http(port);
                (observer, port)
            })
            .collect();

        let haproxy = options.haproxy.then(|| Haproxy::start_in(haproxy_dir, &nameservers, runtime.is_some(), redis_auth));
        let (write, read, haproxy_stats) = match &haproxy {
            Some(h) => (Some(h.write), Some(h.read), Some(h.stats)),
            None => (None, None, None),
        };
        Stack {
            etcd, nodes, dns, nameservers, sentinel, dnsd_url, dictator_url, write, read, observers, runtime, haproxy_stats,
            api_tokens, _tokens_dir: tokens_dir, dnsds, _dictator: dictator, _haproxy: haproxy, _secrets: secrets,
            agent_args, redis_options, agent_lease_ttl_secs: options.agent_lease_ttl_secs,
        }
    }

    /// Starts one more redis-server and its node-agent, registered as `name` of
    /// `cluster` on `host`: several groups on one control plane, their members
    /// spread over hosts as placement sees them. Returns its index in `nodes`.
    pub fn add_node(&mut self, cluster: &str, name: &str, host: &str) -> usize {
        let redis = Redis::with_options(self.redis_options.clone());
        let mut node = Node {
            name: name.to_string(),
            cluster: cluster.to_string(),
            host: host.to_string(),
            redis,
            agent: None,
            agent_port: free_port(),
            lease_ttl_secs: self.agent_lease_ttl_secs,
        };
        let args: Vec<&str> = self.agent_args.iter().map(String::as_str).collect();
        start_agent_with(&mut node, &args);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// (Re)starts node `i`'s agent with the flags the stack started it with.
    pub fn restart_agent(&mut self, i: usize) {
        let args: Vec<String> = self.agent_args.clone();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        start_agent_with(&mut self.nodes[i], &args);
    }

    /// The port in the SRV record `_redis._tcp.master.<cluster>` that dnsd
    /// answers (asked with `dig`), if it answers one.
    pub fn dns_master_port(&self) -> Option<u16> {
        let out = std::process::Command::new("dig")
            .args(["+short", "+time=1", "+tries=1", "-p", &self.dns.port().to_string(), &format!("@{}", self.dns.ip())])
            .args(["SRV", &format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}")])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).split_whitespace().nth(2)?.parse().ok()
    }

    /// Every key of etcd and its value, a registration only by what a request
    /// could change (address, port, role, health, fence): what a test compares
    /// before and after to prove that nothing changed.
    pub async fn etcd_state(&self) -> std::collections::BTreeMap<String, String> {
        let mut client = self.etcd.client().await;
        let got = client.get("", Some(etcd_client::GetOptions::new().with_all_keys())).await.expect("etcd dump");
        got.kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let value = String::from_utf8_lossy(kv.value()).into_owned();
                let value = if key.contains("/nodes/") {
                    let v: serde_json::Value = serde_json::from_str(&value).unwrap_or_default();
                    format!("{} {} {} {} {}", v["address"], v["port"], v["role"], v["healthy"], v["fenced"])
                } else {
                    value
                };
                (key, value)
            })
            .collect()
    }

    /// Waits until every registration says the role its redis has (the agents
    /// report a move within an interval), so that [`Stack::etcd_state`] is that
    /// of a quiet system.
    pub async fn wait_registrations_follow_roles(&self) {
        crate::wait_until_async("registrations follow the roles", Duration::from_secs(10), || async {
            let state = self.etcd_state().await;
            self.nodes.iter().all(|n| {
                state
                    .iter()
                    .find(|(k, _)| k.ends_with(&format!("/nodes/{CLUSTER}/{}", n.name)))
                    .is_some_and(|(_, v)| v.contains(&format!("\"{}\"", n.redis.role())))
            })
        })
        .await;
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
        let put = client.put(format!("{}/config/{CLUSTER}/topology", self.etcd.prefix()), self.topology(master, slaves), None).await.expect("put topology");
        put.header().map_or(0, |h| h.revision())
    }

    /// The observer's last status, as JSON.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let mut client = self.etcd.client().await;
        let got = client.get(format!("{}/status/{CLUSTER}", self.etcd.prefix()), None).await.ok()?;
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

    /// HAProxy's log so far (the last `bytes`).
    pub fn haproxy_log(&self, bytes: u64) -> String {
        self._haproxy.as_ref().map_or(String::new(), |h| h.process.log_tail(bytes))
    }

    /// The dictator's log so far.
    pub fn dictator_log(&self) -> String {
        self._dictator.log()
    }

    /// The first dnsd's log so far.
    pub fn dnsd_log(&self) -> String {
        self.dnsds[0].log()
    }

    /// dnsd replica `i` (the last is the one the observer publishes to).
    pub fn dnsd(&mut self, i: usize) -> &mut Service {
        &mut self.dnsds[i]
    }

    /// The services that are no longer running (a crash), by name.
    pub fn exited(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for (i, dnsd) in self.dnsds.iter_mut().enumerate() {
            if !dnsd.process().is_running() {
                exited.push(format!("dnsd-{}", i + 1));
            }
        }
        if !self._dictator.process().is_running() {
            exited.push("dictator".to_string());
        }
        for (i, (observer, _)) in self.observers.iter_mut().enumerate() {
            if !observer.process().is_running() {
                exited.push(format!("observer-{}", i + 1));
            }
        }
        for node in &mut self.nodes {
            if node.agent.as_mut().is_some_and(|agent| !agent.process().is_running()) {
                exited.push(format!("node-agent {}", node.name));
            }
        }
        exited
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
                .get(format!("{}/nodes/{CLUSTER}/", self.etcd.prefix()), Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
                .await;
            got.is_ok_and(|g| g.kvs().len() >= self.nodes.iter().filter(|n| n.agent.is_some()).count())
        })
        .await;
    }
}

fn start_node(options: &RedisOptions, service_args: &[&str], name: &str, extra: &[&str], lease_ttl_secs: u64) -> Node {
    let redis = Redis::with_options(options.clone());
    let mut node =
        Node { name: name.to_string(), cluster: CLUSTER.to_string(), host: format!("host-{name}"), redis, agent: None, agent_port: free_port(), lease_ttl_secs };
    let mut args = service_args.to_vec();
    args.extend_from_slice(extra);
    start_agent_with(&mut node, &args);
    node
}

/// (Re)starts the node-agent of `node`, with a plain etcd at `etcd`.
pub fn start_agent(node: &mut Node, etcd: &str) {
    start_agent_with(node, &["--etcd-endpoints", etcd]);
}

/// (Re)starts the node-agent of `node` with these etcd (and redis AUTH) flags ([`Etcd::service_args`]).
pub fn start_agent_with(node: &mut Node, etcd_args: &[&str]) {
    let (redis, listen) = (node.redis.host_port(), format!("127.0.0.1:{}", node.agent_port));
    let lease_ttl = node.lease_ttl_secs.to_string();
    let mut args = vec!["--cluster", &node.cluster, "--node", &node.name, "--redis", &redis, "--listen", &listen, "--lease-ttl", &lease_ttl,
        "--host", &node.host];
    args.extend_from_slice(etcd_args);
    let mut agent = Service::start("node-agent", &args, &[]);
    agent.wait_http(node.agent_port);
    node.agent = Some(agent);
}

/// HAProxy running deploy/haproxy/haproxy.cfg, killed on drop.
pub struct Haproxy {
    pub write: SocketAddr,
    pub read: SocketAddr,
    pub stats: SocketAddr,
    /// The runtime API socket, when started with one.
    pub runtime: Option<PathBuf>,
    pub process: Process,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    /// An HAProxy following the dnsd replicas at `nameservers` (one to three, as
    /// `REDIS_TOPOLOGY_DNSD_DNS`, `REDIS_TOPOLOGY_DNSD_DNS_2`, `REDIS_TOPOLOGY_DNSD_DNS_3`); with `runtime`, it opens its runtime
    /// API (`<dir>/admin.sock`) and holds write connections while no master is usable.
    pub fn start(nameservers: &[SocketAddr], runtime: bool) -> Haproxy {
        Haproxy::start_in(tempfile::tempdir().expect("haproxy temp dir"), nameservers, runtime, crate::redis::auth_from_env())
    }

    /// With `auth`, the health check authenticates as `redis::CHECK_USER`
    /// (`REDIS_TOPOLOGY_REDIS_CHECK_USER`, `REDIS_TOPOLOGY_REDIS_CHECK_PASSWORD`).
    fn start_in(dir: tempfile::TempDir, nameservers: &[SocketAddr], runtime: bool, auth: bool) -> Haproxy {
        assert!((1..=3).contains(&nameservers.len()), "haproxy.cfg names one to three dnsd replicas");
        let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy");
        let local = |port| -> SocketAddr { ([127, 0, 0, 1], port).into() };
        let (write, read, stats) = (local(free_port()), local(free_port()), local(free_port()));
        let socket = runtime.then(|| dir.path().join("admin.sock"));
        let mut cmd = Command::new("haproxy");
        cmd.args(["-db", "-f", &format!("{deploy}/haproxy.cfg")])
            .env("REDIS_TOPOLOGY_CLUSTER", CLUSTER)
            .env("REDIS_TOPOLOGY_DOMAIN", DOMAIN)
            .env("REDIS_TOPOLOGY_WRITE_BIND", write.to_string())
            .env("REDIS_TOPOLOGY_READ_BIND", read.to_string())
            .env("REDIS_TOPOLOGY_STATS_BIND", stats.to_string());
        if auth {
            cmd.env("REDIS_TOPOLOGY_REDIS_CHECK_USER", crate::redis::CHECK_USER).env("REDIS_TOPOLOGY_REDIS_CHECK_PASSWORD", crate::redis::CHECK_PASSWORD);
        }
        for (variable, dns) in ["REDIS_TOPOLOGY_DNSD_DNS", "REDIS_TOPOLOGY_DNSD_DNS_2", "REDIS_TOPOLOGY_DNSD_DNS_3"].into_iter().zip(nameservers) {
            cmd.env(variable, dns.to_string());
        }
        if let Some(socket) = &socket {
            cmd.env("REDIS_TOPOLOGY_RUNTIME_SOCKET", socket).env("REDIS_TOPOLOGY_HAPROXY_LUA", format!("{deploy}/wait-for-server.lua"));
        }
        let process = Process::spawn("haproxy", cmd, &dir.path().join("haproxy.log"));
        crate::wait_until("haproxy to listen", Duration::from_secs(10), || std::net::TcpStream::connect(write).is_ok());
        if let Some(socket) = &socket {
            crate::wait_until("haproxy's runtime API", Duration::from_secs(10), || socket_exists(socket));
        }
        Haproxy { write, read, stats, runtime: socket, process, _dir: dir }
    }
}

fn socket_exists(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// One runtime-API command on `socket`, its whole answer (for tests and benches).
/// HAProxy sometimes resets a stats connection while it is busy (a connection
/// reset before any answer): that is tried again, twice, other errors are not.
pub fn runtime_command(socket: &Path, line: &str) -> std::io::Result<String> {
    let mut tries = 0;
    loop {
        match runtime_command_once(socket, line) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && tries < 2 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

fn runtime_command_once(socket: &Path, line: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The `(address, ready)` of each slot of `backend` in HAProxy's `show servers state`
/// (ready: no maintenance bit (forced, inherited, configuration, resolution), not down).
pub fn slots(socket: &Path, backend: &str) -> Vec<(Option<SocketAddr>, bool)> {
    let answer = runtime_command(socket, &format!("show servers state {backend}")).expect("show servers state");
    answer
        .lines()
        .skip(1)
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let address = f[4].parse().ok().and_then(|ip| Some(SocketAddr::new(ip, f[18].parse().ok()?)));
            let (op, admin): (u32, u32) = (f[5].parse().expect("op state"), f[6].parse().expect("admin state"));
            (address, op != 0 && admin & 0x27 == 0)
        })
        .collect()
}

/// The addresses of the ready slots of `backend`, sorted.
pub fn ready_addresses(socket: &Path, backend: &str) -> Vec<SocketAddr> {
    let mut ready: Vec<SocketAddr> = slots(socket, backend).into_iter().filter(|(_, r)| *r).filter_map(|(a, _)| a).collect();
    ready.sort();
    ready.dedup();
    ready
}
