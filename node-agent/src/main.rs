//! `node-agent`: parse flags, then run the agent until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use node_agent::config::Instance;
use node_agent::{Config, RedisTarget};
use service::cli::{EtcdArgs, LogArgs};

/// Registers a redis-server (or several on this host, each in its own cluster) in
/// etcd under a lease, reports its health, role and replication offset, and writes
/// the cluster's topology trigger when redis (re)starts. The registrations are
/// revoked on SIGTERM and expire with the lease if the agent dies.
#[derive(Parser)]
#[command(
    version,
    about,
    after_help = "Redis AUTH: the password is read once at start from --redis-password-file \
(first line; a trailing newline is dropped). When no file is given, the REDIS_PASSWORD \
environment variable is used if set (a file is preferred: it stays out of the process \
environment). With --redis-user the agent authenticates as that ACL user."
)]
struct Cli {
    /// Cluster (replication group) this redis belongs to, e.g. `redis-1`.
    #[arg(long, env = "REDIS_TOPOLOGY_CLUSTER", value_parser = parse_cluster,
          required_unless_present_any = ["instance", "instances_file"], conflicts_with_all = ["instance", "instances_file"])]
    cluster: Option<String>,

    /// Name of this node within the cluster, e.g. `node-1`.
    #[arg(long, env = "REDIS_TOPOLOGY_NODE", value_parser = parse_node,
          required_unless_present_any = ["instance", "instances_file"], conflicts_with_all = ["instance", "instances_file"])]
    node: Option<String>,

    /// Watch this redis too, instead of --cluster/--node/--redis: one agent for
    /// several instances on this host, each registered as its own node.
    /// `<cluster>/<node>=<host:port>[,advertise=<address[:port]>]`; repeatable. In
    /// the environment, separate instances with spaces.
    #[arg(long, env = "REDIS_TOPOLOGY_INSTANCES", value_delimiter = ' ', value_parser = Instance::parse)]
    instance: Vec<Instance>,

    /// Read instances to watch from this file, one `--instance` value a line
    /// (blank lines and `#` comments are ignored); adds to --instance.
    #[arg(long, env = "REDIS_TOPOLOGY_INSTANCES_FILE")]
    instances_file: Option<std::path::PathBuf>,

    /// The redis-server to watch, as host:port (`[ipv6]:port`; port defaults to 6379).
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS", default_value = "127.0.0.1:6379", value_parser = RedisTarget::parse)]
    redis: RedisTarget,

    /// Address clients must use to reach this redis (behind NAT, in a container);
    /// default: the host of --redis.
    #[arg(long, env = "REDIS_TOPOLOGY_ADVERTISE_ADDRESS", value_parser = parse_address, conflicts_with_all = ["instance", "instances_file"])]
    advertise_address: Option<String>,

    /// The machine this redis runs on, registered for placement (no two members of
    /// a group on one host; masters spread over hosts); default: this machine's
    /// hostname. Give one name per machine, the same for every agent on it.
    #[arg(long, env = "REDIS_TOPOLOGY_HOST", value_parser = parse_host)]
    host: Option<String>,

    /// Port clients must use; default: the port of --redis.
    #[arg(long, env = "REDIS_TOPOLOGY_ADVERTISE_PORT", value_parser = clap::value_parser!(u16).range(1..), conflicts_with_all = ["instance", "instances_file"])]
    advertise_port: Option<u16>,

    /// Probe and refresh period, in milliseconds.
    #[arg(long = "interval", visible_alias = "interval-ms", env = "REDIS_TOPOLOGY_INTERVAL_MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(10..))]
    interval_ms: u64,

    /// How long one probe (connect, PING, INFO) may take before redis counts as down,
    /// in milliseconds; default: the interval.
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS_TIMEOUT_MS", value_parser = clap::value_parser!(u64).range(1..))]
    redis_timeout_ms: Option<u64>,

    /// TTL of the etcd lease the registration lives under, in seconds: how long the
    /// registration outlives an agent that died.
    #[arg(long = "lease-ttl", visible_alias = "lease-ttl-secs", env = "REDIS_TOPOLOGY_LEASE_TTL_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    lease_ttl_secs: u64,

    /// Remove the registration when redis stays down longer than this, in seconds.
    #[arg(long, env = "REDIS_TOPOLOGY_DOWN_GRACE_SECS", default_value_t = 30)]
    down_grace_secs: u64,

    /// Fence redis, if it is a master, when etcd has not answered a lease renewal
    /// for this long, in milliseconds; it then takes no writes until the dictator
    /// lifts the fence in an apply. Between half the lease TTL and all of it;
    /// default: two thirds of it, when the agent counts its lease lost. 0 turns
    /// self-fencing off.
    #[arg(long, env = "REDIS_TOPOLOGY_SELF_FENCE_AFTER_MS")]
    self_fence_after_ms: Option<u64>,

    #[command(flatten)]
    redis_auth: service::redis_auth::RedisAuthArgs,

    /// Address of the HTTP API (`GET /status`, `GET /healthz`).
    #[arg(long, env = "REDIS_TOPOLOGY_LISTEN", default_value = "127.0.0.1:8003")]
    listen: SocketAddr,

    /// Tokens, TLS and limits of the HTTP API.
    #[command(flatten)]
    http: service::http::HttpArgs,

    #[command(flatten)]
    etcd: EtcdArgs,

    #[command(flatten)]
    log: LogArgs,
}

fn parse_cluster(s: &str) -> Result<String, topology::NameError> {
    topology::validate_label("cluster", s).map(|()| s.to_string())
}

fn parse_node(s: &str) -> Result<String, topology::NameError> {
    topology::keys::validate_node_name(s).map(|()| s.to_string())
}

fn parse_address(s: &str) -> Result<String, String> {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!("{s:?} is not an address or host name"));
    }
    Ok(s.to_string())
}

impl Cli {
    fn config(self) -> anyhow::Result<Config> {
        let credentials = self.redis_auth.credentials()?;
        let http = self.http.settings()?;
        let interval = Duration::from_millis(self.interval_ms);
        let lease_ttl = Duration::from_secs(self.lease_ttl_secs);
        let self_fence_after = node_agent::self_fence::delay(self.self_fence_after_ms.map(Duration::from_millis), lease_ttl)?;
        let mut instances = self.instance;
        if let Some(path) = &self.instances_file {
            let text = std::fs::read_to_string(path).with_context(|| format!("--instances-file {}", path.display()))?;
            instances.extend(Instance::parse_file(&text).with_context(|| format!("--instances-file {}", path.display()))?);
        }
        if let (Some(cluster), Some(node)) = (self.cluster, self.node) {
            instances.push(Instance {
                advertise_address: self.advertise_address.unwrap_or_else(|| self.redis.host.clone()),
                advertise_port: self.advertise_port.unwrap_or(self.redis.port),
                cluster,
                node,
                redis: self.redis,
            });
        }
        node_agent::config::check_instances(&instances)?;
        Ok(Config {
            instances,
            host: match self.host {
                Some(host) => host,
                None => this_hostname()?,
            },
            credentials,
            interval,
            redis_timeout: self.redis_timeout_ms.map_or(interval, Duration::from_millis),
            lease_ttl,
            down_grace: Duration::from_secs(self.down_grace_secs),
            self_fence_after,
            etcd: self.etcd,
            listen: self.listen,
            http,
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, legacy_env) = service::env::parse::<Cli>();
    cli.log.init();
    service::env::warn(&legacy_env);
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    service::systemd::spawn_watchdog();
    match node_agent::run(config, service::Shutdown::on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "node-agent failed");
            ExitCode::FAILURE
        }
    }
}

fn parse_host(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 253 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not a host name"));
    }
    Ok(s.to_ascii_lowercase())
}

/// This machine's hostname, as `uname -n` gives it.
fn this_hostname() -> anyhow::Result<String> {
    let name = rustix::system::uname().nodename().to_string_lossy().into_owned();
    parse_host(&name).map_err(|e| anyhow::anyhow!("--host not given and this machine's hostname is unusable: {e}"))
}
