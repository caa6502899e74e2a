//! The system spread over simulated hosts ([`crate::netns`]), as in issue 16:
//!
//! | host | data 10.77.0.x | control 10.78.0.x | runs |
//! |---|---|---|---|
//! | `h1`..`h3` | .11-.13 | .11-.13 | redis-server (AOF, config file) and its node-agent |
//! | `ctl` | – | .1 | etcd, dnsd, the dictator, the observer (or three Sentinels) |
//! | `cli` | .2 | .2 | HAProxy (`deploy/haproxy/haproxy.cfg`) and the writer |
//!
//! The data network carries clients and replication. The control network carries
//! the agents' etcd traffic, the client host's DNS queries to dnsd, and the
//! control plane's own connections to redis: the control host has no data link
//! and reaches each redis at its data address over the control network. So cutting
//! a redis host's control link cuts it off from etcd, the observer and the dictator
//! while clients and its replicas still reach it; cutting both links loses the
//! machine. Every service uses its usual port: each host has its own addresses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::netns::{Host, Link, Net};
use crate::process::Process;

pub const CLUSTER: &str = "redis-1";
pub const DOMAIN: &str = "cluster.local";
pub const REDIS_PORT: u16 = 6379;
/// HAProxy's write frontend on the client host's loopback.
pub const WRITE_PORT: u16 = 6380;
const ETCD_PORT: u16 = 2379;
/// HAProxy's runtime API on the client host, which dnsd pushes moves to.
const RUNTIME_PORT: u16 = 9999;

/// What runs the control host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlPlane {
    /// etcd, dnsd, dictator, observer; a node-agent beside each redis; HAProxy.
    RedisTopology,
    /// Three Sentinels (quorum 2, `down-after-milliseconds 1000`), nothing else.
    Sentinel,
}

/// One redis host: redis-server, and its node-agent under [`ControlPlane::RedisTopology`].
pub struct RedisHost {
    pub host: Host,
    pub node: String,
    pub redis: Process,
    pub agent: Option<Process>,
    dir: PathBuf,
}

impl RedisHost {
    /// Its data address, which DNS publishes and clients and replicas use.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.data_ip(), REDIS_PORT))
    }

    pub fn data_ip(&self) -> Ipv4Addr {
        self.host.data.expect("a redis host is on the data network")
    }

    /// kill -9 of redis alone; [`RedisHost::start_redis`] starts it again on its AOF.
    pub fn kill_redis(&mut self) {
        self.redis.kill();
    }

    /// (Re)starts redis-server from its config file and its AOF directory.
    pub fn start_redis(&mut self) {
        self.redis = spawn_redis(&self.host, &self.dir);
        self.host.wait_tcp(SocketAddr::from(([127, 0, 0, 1], REDIS_PORT)), Duration::from_secs(20));
    }

    /// The answer to a real write command (`DEL` of a key that does not exist),
    /// sent from this host itself over loopback, so it can be asked while the host
    /// is cut off.
    pub fn probe(&self) -> Probe {
        self.host.run(|| probe_write(&self.node))
    }

    /// The list at `key` on this node (from the host itself), if redis answers.
    pub fn list(&self, key: &str) -> Option<Vec<String>> {
        self.host.run(|| redis::cmd("LRANGE").arg(key).arg(0).arg(-1).query(&mut local_conn().ok()?).ok())
    }

    /// A field of `INFO replication` (from the host itself), if redis answers.
    pub fn info_field(&self, field: &str) -> Option<String> {
        self.host.run(|| {
            let mut conn = local_conn().ok()?;
            let info: String = redis::cmd("INFO").arg("replication").query(&mut conn).ok()?;
            info.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')).map(|v| v.trim().to_string())
        })
    }
}

/// What a node answered to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// OK: a master that takes writes.
    Writable,
    /// `NOREPLICAS`: a fenced master.
    Fenced,
    /// `READONLY`: a replica.
    ReadOnly,
    /// No answer in time, or another error: not writable, and why.
    Other(String),
}

fn local_conn() -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(crate::redis::client_url(format!("127.0.0.1:{REDIS_PORT}")))?;
    let conn = client.get_connection_with_timeout(Duration::from_millis(300))?;
    conn.set_read_timeout(Some(Duration::from_millis(300)))?;
    conn.set_write_timeout(Some(Duration::from_millis(300)))?;
    Ok(conn)
}

fn probe_write(node: &str) -> Probe {
    let mut conn = match local_conn() {
        Ok(conn) => conn,
        Err(e) => return Probe::Other(e.to_string()),
    };
    // A write command that changes nothing: redis refuses it as any write
    // (NOREPLICAS, READONLY), but deleting a missing key is not replicated, so
    // probing a master adds nothing to its history for the dictator to weigh.
    let reply: redis::RedisResult<i64> = redis::cmd("DEL").arg(format!("fault-probe:{node}")).query(&mut conn);
    match reply {
        Ok(_) => Probe::Writable,
        Err(e) if e.code() == Some("NOREPLICAS") => Probe::Fenced,
        Err(e) if e.code() == Some("READONLY") => Probe::ReadOnly,
        Err(e) => Probe::Other(e.to_string()),
    }
}

/// The whole thing. Dropped: every process killed, every namespace removed.
pub struct MultiHost {
    pub redis: Vec<RedisHost>,
    pub control: Host,
    pub client: Host,
    pub plane: ControlPlane,
    /// Control-host services (etcd, dnsd, dictator, observer, or the Sentinels)
    /// and HAProxy, by name.
    pub services: Vec<(String, Process)>,
    // Dropped after the processes above: the namespaces go last.
    net: Net,
    dir: tempfile::TempDir,
}

impl MultiHost {
    /// Builds the network and starts everything; `None` (after printing
    /// `SKIPPED: ...`) where namespaces cannot be used. The redis on `h1` is the
    /// first master (Sentinel: made so here; ours: once the caller defines it).
    pub fn start(plane: ControlPlane, observer_args: &[&str]) -> Option<MultiHost> {
        let mut net = Net::create()?;
        let dir = tempfile::tempdir().expect("multihost temp dir");
        let control = net.host("ctl", 1, &[Link::Control]);
        net.route_data_over_control(&control);
        let client = net.host("cli", 2, &[Link::Data, Link::Control]);
        let hosts: Vec<Host> = (1..=3).map(|i| net.host(&format!("h{i}"), 10 + i, &[Link::Data, Link::Control])).collect();
        let mut me = MultiHost { redis: Vec::new(), control, client, plane, services: Vec::new(), net, dir };
        for (i, host) in hosts.into_iter().enumerate() {
            let dir = me.dir.path().join(&host.name);
            std::fs::create_dir_all(&dir).expect("redis host dir");
            let mut config = "# redis-topology fault suite\nappendonly yes\nsave \"\"\n".to_string();
            if crate::redis::auth_from_env() {
                config += &crate::redis::auth_config();
            }
            std::fs::write(dir.join("redis.conf"), config).expect("write redis.conf");
            let redis = spawn_redis(&host, &dir);
            let node = format!("node-{}", i + 1);
            me.redis.push(RedisHost { host, node, redis, agent: None, dir });
        }
        for r in &me.redis {
            r.host.wait_tcp(SocketAddr::from(([127, 0, 0, 1], REDIS_PORT)), Duration::from_secs(20));
        }
        match plane {
            ControlPlane::RedisTopology => me.start_ours(observer_args),
            ControlPlane::Sentinel => me.start_sentinels(),
        }
        Some(me)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    fn control_ip(&self) -> Ipv4Addr {
        self.control.control.expect("the control host is on the control network")
    }

    fn start_ours(&mut self, observer_args: &[&str]) {
        let ctl = self.control.clone();
        let data_dir = self.dir.path().join("etcd");
        let client_url = format!("http://{}:{ETCD_PORT}", self.control_ip());
        let etcd = ctl.spawn(
            "etcd",
            Path::new("etcd"),
            &["--name", "ctl", "--data-dir", &data_dir.to_string_lossy(),
              "--listen-client-urls", &format!("http://0.0.0.0:{ETCD_PORT}"), "--advertise-client-urls", &client_url,
              "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
              "--initial-cluster", "ctl=http://127.0.0.1:2380", "--log-level", "warn"],
            &[],
            &self.log("etcd"),
        );
        self.services.push(("etcd".into(), etcd));
        ctl.wait_tcp(SocketAddr::from(([127, 0, 0, 1], ETCD_PORT)), Duration::from_secs(30));
        let local_etcd = format!("http://127.0.0.1:{ETCD_PORT}");
        // HARNESS_REDIS_AUTH=1: the services authenticate as the ACL user.
        let password_file = self.dir.path().join("redis-password");
        std::fs::write(&password_file, crate::redis::SERVICE_PASSWORD).expect("write redis password");
        let password_file = password_file.to_string_lossy().into_owned();
        let redis_auth: Vec<&str> = match crate::redis::auth_from_env() {
            true => vec!["--redis-user", crate::redis::SERVICE_USER, "--redis-password-file", &password_file],
            false => vec![],
        };
        // dnsd pushes each move to HAProxy's runtime API on the client host, over
        // the control network, as the shipped env files set it up on one host.
        let runtime = format!("{}:{RUNTIME_PORT}", self.client.control.expect("the client host is on the control network"));
        let services: [(&str, u16, Vec<&str>); 3] = [
            ("dnsd", 8001, vec!["--listen", "0.0.0.0:8001", "--dns-listen", "0.0.0.0:53", "--etcd-endpoints", &local_etcd,
                "--domain", DOMAIN, "--cluster", CLUSTER, "--haproxy-runtime", &runtime]),
            ("dictator", 8000, [vec!["--listen", "0.0.0.0:8000", "--nameserver", "127.0.0.1:53", "--cluster", CLUSTER,
                "--etcd-endpoints", &local_etcd], redis_auth.clone()].concat()),
            ("observer", 8002, [vec!["--listen", "0.0.0.0:8002", "--etcd-endpoints", &local_etcd,
                "--dictator", "http://127.0.0.1:8000", "--dnsd", "http://127.0.0.1:8001", "--id", "observer-1",
                "--nameserver", "127.0.0.1:53", "--election-ttl-secs", "2", "--retry-min-ms", "100",
                "--retry-max-ms", "1000", "--log-format", "json"], redis_auth.clone(), observer_args.to_vec()].concat()),
        ];
        for (name, port, args) in services {
            let process = ctl.spawn(name, &crate::binary(name), &args, &[("RUST_LOG", "info")], &self.log(name));
            self.services.push((name.into(), process));
            ctl.wait_tcp(SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(20));
        }
        for r in &mut self.redis {
            let (redis, advertise, port) = (format!("127.0.0.1:{REDIS_PORT}"), r.data_ip().to_string(), REDIS_PORT.to_string());
            let args = [vec!["--cluster", CLUSTER, "--node", &r.node, "--redis", &redis,
                "--advertise-address", &advertise, "--advertise-port", &port,
                "--listen", "0.0.0.0:8003", "--etcd-endpoints", &client_url, "--log-format", "json"], redis_auth.clone()].concat();
            let log = self.dir.path().join(format!("node-agent-{}.log", r.node));
            r.agent = Some(r.host.spawn("node-agent", &crate::binary("node-agent"), &args, &[("RUST_LOG", "info")], &log));
        }
        for r in &self.redis {
            r.host.wait_tcp(SocketAddr::from(([127, 0, 0, 1], 8003)), Duration::from_secs(20));
        }
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy/haproxy.cfg");
        let lua = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy/wait-for-server.lua");
        let dns = format!("{}:53", self.control_ip());
        let write = format!("127.0.0.1:{WRITE_PORT}");
        let runtime_socket = format!("ipv4@{runtime}");
        let mut env = vec![("REDIS_TOPOLOGY_DNSD_DNS", dns.as_str()), ("REDIS_TOPOLOGY_CLUSTER", CLUSTER), ("REDIS_TOPOLOGY_DOMAIN", DOMAIN), ("REDIS_TOPOLOGY_WRITE_BIND", &write),
              ("REDIS_TOPOLOGY_READ_BIND", "127.0.0.1:6381"), ("REDIS_TOPOLOGY_STATS_BIND", "127.0.0.1:8404"),
              ("REDIS_TOPOLOGY_RUNTIME_SOCKET", &runtime_socket), ("REDIS_TOPOLOGY_HAPROXY_LUA", lua)];
        if crate::redis::auth_from_env() {
            env.extend([("REDIS_TOPOLOGY_REDIS_CHECK_USER", crate::redis::CHECK_USER), ("REDIS_TOPOLOGY_REDIS_CHECK_PASSWORD", crate::redis::CHECK_PASSWORD)]);
        }
        let haproxy = self.client.spawn("haproxy", Path::new("haproxy"), &["-db", "-f", config], &env, &self.log("haproxy"));
        self.services.push(("haproxy".into(), haproxy));
        self.client.wait_tcp(SocketAddr::from(([127, 0, 0, 1], WRITE_PORT)), Duration::from_secs(10));
    }

    fn start_sentinels(&mut self) {
        let master = self.redis[0].addr();
        for r in &self.redis[1..] {
            r.host.run(|| {
                let mut conn = local_conn().expect("connect to the local redis");
                redis::cmd("REPLICAOF").arg(master.ip().to_string()).arg(master.port()).query::<()>(&mut conn).expect("REPLICAOF");
            });
        }
        crate::wait_until("the replicas to link to h1", Duration::from_secs(20), || {
            self.redis[1..].iter().all(|r| r.info_field("master_link_status").as_deref() == Some("up"))
        });
        // On the control host, where our control plane runs: they see redis the
        // way the observer and the dictator do, over the control network.
        for i in 0..3u16 {
            let port = 26379 + i;
            let dir = self.dir.path().join(format!("sentinel-{i}"));
            std::fs::create_dir_all(&dir).expect("sentinel dir");
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 0.0.0.0\nprotected-mode no\ndir {}\nsentinel announce-ip {}\n\
                     sentinel monitor {CLUSTER} {} {} 2\nsentinel down-after-milliseconds {CLUSTER} 1000\n\
                     sentinel failover-timeout {CLUSTER} 10000\nsentinel parallel-syncs {CLUSTER} 2\n",
                    dir.display(), self.control_ip(), master.ip(), master.port()
                ),
            )
            .expect("write sentinel.conf");
            let process = self.control.spawn(
                "sentinel",
                Path::new("redis-server"),
                &[&conf.to_string_lossy(), "--sentinel"],
                &[],
                &self.log(&format!("sentinel-{i}")),
            );
            self.services.push((format!("sentinel-{i}"), process));
        }
        // Sentinels discover each other through the master's hello channel.
        crate::wait_until("the sentinels to know each other", Duration::from_secs(20), || {
            self.control.run(|| {
                let Ok(client) = redis::Client::open("redis://127.0.0.1:26379/") else { return false };
                let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(300)) else { return false };
                let others: redis::RedisResult<Vec<redis::Value>> =
                    redis::cmd("SENTINEL").arg("SENTINELS").arg(CLUSTER).query(&mut conn);
                others.is_ok_and(|o| o.len() == 2)
            })
        });
    }

    /// The probe of every redis host, in order.
    pub fn probes(&self) -> Vec<Probe> {
        self.redis.iter().map(RedisHost::probe).collect()
    }

    /// The only writable master, if exactly one node takes writes.
    pub fn sole_writable(&self) -> Option<usize> {
        let probes = self.probes();
        let writable: Vec<usize> = (0..probes.len()).filter(|i| probes[*i] == Probe::Writable).collect();
        (writable.len() == 1).then(|| writable[0])
    }

    /// The master DNS publishes (`_redis._tcp.master.<cluster>` SRV, asked from
    /// the client host as HAProxy does): its node name, e.g. `node-2`.
    pub fn dns_master(&self) -> Option<String> {
        let text = self.dig(&format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}"), "SRV")?;
        let mut fields = text.split_whitespace();
        let port: u16 = fields.nth(2)?.parse().ok()?;
        let target = fields.next()?;
        (port == REDIS_PORT).then(|| target.split('.').next().map(str::to_string)).flatten()
    }

    /// `dig +short` of `name` from the client host at dnsd; `None` when empty.
    fn dig(&self, name: &str, kind: &str) -> Option<String> {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &self.client.ns, "dig", "+short", "+time=1", "+tries=1"])
            .arg(format!("@{}", self.control_ip()))
            .args([kind, name])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    }

    /// Runs `f`'s future on a runtime inside the control host (e.g. etcd calls).
    pub fn on_control<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future,
        Fut::Output: Send,
    {
        self.control.block_on(f)
    }

    /// An etcd client on the control host's etcd; use inside [`MultiHost::on_control`].
    pub async fn etcd() -> etcd_client::Client {
        etcd_client::Client::connect([format!("http://127.0.0.1:{ETCD_PORT}")], None).await.expect("connect to etcd")
    }

    /// Writes the topology with `master` as master and the others as slaves.
    pub fn define(&self, master: usize) -> i64 {
        let member = |i: usize| serde_json::json!({ "address": format!("{}.{CLUSTER}.{DOMAIN}", self.redis[i].node) });
        let slaves: Vec<_> = (0..self.redis.len()).filter(|i| *i != master).map(member).collect();
        let topology = serde_json::json!({ "master": member(master), "slaves": slaves }).to_string();
        self.on_control(|| async {
            let put = Self::etcd().await.put(format!("/config/{CLUSTER}/topology"), topology, None).await.expect("put topology");
            put.header().map_or(0, |h| h.revision())
        })
    }

    /// The observer's `/status/<cluster>` record.
    pub fn status(&self) -> Option<serde_json::Value> {
        self.on_control(|| async {
            let got = Self::etcd().await.get(format!("/status/{CLUSTER}"), None).await.ok()?;
            got.kvs().first().and_then(|kv| serde_json::from_slice(kv.value()).ok())
        })
    }

    /// Every node registered, the topology defined with h1 as master and applied.
    pub fn bootstrap(&self) {
        crate::wait_until("every node registered", Duration::from_secs(30), || {
            self.on_control(|| async {
                let opts = etcd_client::GetOptions::new().with_prefix().with_keys_only();
                Self::etcd().await.get(format!("/nodes/{CLUSTER}/"), Some(opts)).await.is_ok_and(|g| g.kvs().len() == 3)
            })
        });
        // The dictator resolves node names through dnsd, whose watch may lag
        // behind etcd: a topology naming a node dnsd does not serve yet is a 422,
        // which the observer does not retry until something changes.
        crate::wait_until("dnsd to serve every node", Duration::from_secs(30), || {
            self.redis.iter().all(|r| self.dig(&format!("{}.{CLUSTER}.{DOMAIN}", r.node), "A").is_some())
        });
        let revision = self.define(0);
        crate::wait_until("the first topology applied", Duration::from_secs(30), || {
            self.status().is_some_and(|s| s["result"] == "ok" && s["topology_revision"].as_i64().is_some_and(|r| r >= revision))
        });
        crate::wait_until("DNS to name node-1 and HAProxy to reach it", Duration::from_secs(30), || {
            self.dns_master().as_deref() == Some("node-1")
        });
    }

    /// The last bytes of a service's log (`etcd`, `observer`, `node-agent-node-1`, ...).
    pub fn log_tail(&self, name: &str, bytes: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log(name)) {
            use std::io::{Read, Seek, SeekFrom};
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn net(&self) -> &Net {
        &self.net
    }
}

fn spawn_redis(host: &Host, dir: &Path) -> Process {
    host.spawn(
        "redis",
        Path::new("redis-server"),
        &[&dir.join("redis.conf").to_string_lossy(), "--port", &REDIS_PORT.to_string(), "--bind", "0.0.0.0",
          "--protected-mode", "no", "--dir", &dir.to_string_lossy(), "--daemonize", "no",
          "--repl-diskless-sync-delay", "0"],
        &[],
        &dir.join("redis.log"),
    )
}
