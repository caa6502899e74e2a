//! The agent's settings, as `main.rs` builds them from flags: which redis-servers
//! ([`Instance`]: one, or several on one host), what to advertise, how often, and
//! how to authenticate.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use service::redis_auth::Credentials;

/// Why `--redis` is not a usable `host:port`; each names the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{0:?}: missing ']'")]
    UnclosedBracket(String),
    #[error("{0:?}: expected ':' after ']'")]
    AfterBracket(String),
    #[error("{0:?}: write IPv6 addresses as [addr]:port")]
    BareIpv6(String),
    #[error("{0:?}: expected host:port")]
    BadHost(String),
    #[error("{0:?}: port must be 1 to 65535")]
    BadPort(String),
}

/// `host:port` of the redis-server to watch (`--redis`). The host may be an IPv4
/// literal, `[ipv6]`, or a name; without a port, 6379.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
}

impl RedisTarget {
    pub fn parse(s: &str) -> Result<RedisTarget, TargetError> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| TargetError::UnclosedBracket(s.to_string()))?;
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(|| TargetError::AfterBracket(s.to_string()))?)),
            }
        } else {
            match s.rsplit_once(':') {
                Some((host, _)) if host.contains(':') => {
                    return Err(TargetError::BareIpv6(s.to_string()));
                }
                Some((host, port)) => (host, Some(port)),
                None => (s, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(TargetError::BadHost(s.to_string()));
        }
        let port = match port {
            None => topology::DEFAULT_REDIS_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(TargetError::BadPort(s.to_string())),
            },
        };
        Ok(RedisTarget { host: host.to_string(), port })
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// One redis-server the agent watches, registered at `/nodes/<cluster>/<node>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub cluster: String,
    pub node: String,
    pub redis: RedisTarget,
    /// Published in the registration (`address`, `port`).
    pub advertise_address: String,
    pub advertise_port: u16,
}

/// Why an `--instance` (or a line of `--instances-file`) is unusable; each names the text given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstanceError {
    #[error("{0:?}: expected <cluster>/<node>=<host:port>[,advertise=<address[:port]>]")]
    Shape(String),
    #[error("{text:?}: {error}")]
    Name { text: String, error: topology::NameError },
    #[error("{text:?}: {error}")]
    Target { text: String, error: TargetError },
    #[error("{text:?}: unknown option {option:?} (only advertise=<address[:port]>)")]
    Option { text: String, option: String },
    #[error("{0}/{1} is given twice: each instance needs its own cluster/node")]
    Duplicate(String, String),
    #[error("no redis instance to watch: give --cluster/--node/--redis, --instance or --instances-file")]
    None,
}

impl Instance {
    /// Parses `<cluster>/<node>=<host:port>[,advertise=<address[:port]>]`; the
    /// advertised address defaults to the redis host, its port to the redis port.
    pub fn parse(text: &str) -> Result<Instance, InstanceError> {
        let text = text.trim();
        let shape = || InstanceError::Shape(text.to_string());
        let (name, rest) = text.split_once('=').ok_or_else(shape)?;
        let (cluster, node) = name.split_once('/').ok_or_else(shape)?;
        let named = |error| InstanceError::Name { text: text.to_string(), error };
        topology::validate_label("cluster", cluster).map_err(named)?;
        topology::keys::validate_node_name(node).map_err(named)?;
        let mut parts = rest.split(',');
        let target = |error| InstanceError::Target { text: text.to_string(), error };
        let redis = RedisTarget::parse(parts.next().unwrap_or_default()).map_err(target)?;
        let mut instance = Instance {
            cluster: cluster.to_string(),
            node: node.to_string(),
            advertise_address: redis.host.clone(),
            advertise_port: redis.port,
            redis,
        };
        for option in parts {
            match option.trim().split_once('=') {
                Some(("advertise", value)) => {
                    let advertised = RedisTarget::parse(value).map_err(target)?;
                    instance.advertise_address = advertised.host;
                    if has_port(value) {
                        instance.advertise_port = advertised.port;
                    }
                }
                _ => return Err(InstanceError::Option { text: text.to_string(), option: option.to_string() }),
            }
        }
        Ok(instance)
    }

    /// Parses an instances file: one instance a line, blank lines and `#` comments ignored.
    pub fn parse_file(text: &str) -> Result<Vec<Instance>, InstanceError> {
        text.lines()
            .map(|line| line.split_once('#').map_or(line, |(before, _)| before).trim())
            .filter(|line| !line.is_empty())
            .map(Instance::parse)
            .collect()
    }
}

/// Whether `host:port` text names a port (`[v6]:port` or `host:port`).
fn has_port(text: &str) -> bool {
    let text = text.trim();
    match text.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => text.contains(':'),
    }
}

/// Checks that some instance is given and no cluster/node twice.
pub fn check_instances(instances: &[Instance]) -> Result<(), InstanceError> {
    if instances.is_empty() {
        return Err(InstanceError::None);
    }
    let mut seen = std::collections::HashSet::new();
    for i in instances {
        if !seen.insert((i.cluster.as_str(), i.node.as_str())) {
            return Err(InstanceError::Duplicate(i.cluster.clone(), i.node.clone()));
        }
    }
    Ok(())
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The redis-servers to watch, each its own registration; one in the classic
    /// one-agent-per-instance mode.
    pub instances: Vec<Instance>,
    pub credentials: Credentials,
    /// The machine the instances run on (placement).
    pub host: String,
    /// Probe and refresh period.
    pub interval: Duration,
    /// How long one probe may take before redis counts as down.
    pub redis_timeout: Duration,
    /// TTL of the etcd lease the registration lives under.
    pub lease_ttl: Duration,
    /// How long redis may stay down before the registration is removed.
    pub down_grace: Duration,
    /// Fence redis, if it is a master, once etcd has not answered a lease renewal
    /// sent this long ago (`self_fence`); zero: never.
    pub self_fence_after: Duration,
    pub etcd: service::cli::EtcdArgs,
    /// Address of the HTTP status API.
    pub listen: SocketAddr,
    /// Its tokens, TLS and limits.
    pub http: service::http::HttpSettings,
}

impl Config {
    pub fn keys(&self) -> topology::Keys {
        self.etcd.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> RedisTarget {
        RedisTarget { host: host.into(), port }
    }

    #[test]
    fn parses_redis_targets() {
        assert_eq!(RedisTarget::parse("127.0.0.1:6380"), Ok(target("127.0.0.1", 6380)));
        assert_eq!(RedisTarget::parse("redis-a"), Ok(target("redis-a", 6379)));
        assert_eq!(RedisTarget::parse("redis-a.svc:7000"), Ok(target("redis-a.svc", 7000)));
        assert_eq!(RedisTarget::parse("[::1]:7000"), Ok(target("::1", 7000)));
        assert_eq!(RedisTarget::parse("[::1]"), Ok(target("::1", 6379)));
        assert_eq!(RedisTarget::parse("[::1]:7000").unwrap().to_string(), "[::1]:7000");
        assert_eq!(RedisTarget::parse("127.0.0.1:6380").unwrap().to_string(), "127.0.0.1:6380");
        for bad in ["", ":6379", "host:0", "host:70000", "host:x", "::1", "[::1", "[::1]7000", "a b:1", "redis://x:1"] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    fn instance(cluster: &str, node: &str, redis: RedisTarget, address: &str, port: u16) -> Instance {
        Instance { cluster: cluster.into(), node: node.into(), redis, advertise_address: address.into(), advertise_port: port }
    }

    #[test]
    fn parses_instances() {
        assert_eq!(
            Instance::parse("redis-1/node-1=127.0.0.1:7001"),
            Ok(instance("redis-1", "node-1", target("127.0.0.1", 7001), "127.0.0.1", 7001))
        );
        assert_eq!(
            Instance::parse(" r2/n2=10.0.0.5:7002,advertise=r2-n2.example.org "),
            Ok(instance("r2", "n2", target("10.0.0.5", 7002), "r2-n2.example.org", 7002)),
            "an advertised address without a port keeps the redis port"
        );
        assert_eq!(
            Instance::parse("r2/n2=[::1]:7002,advertise=[fd00::1]:6379"),
            Ok(instance("r2", "n2", target("::1", 7002), "fd00::1", 6379))
        );
        assert_eq!(Instance::parse("r3/n3=redis-host"), Ok(instance("r3", "n3", target("redis-host", 6379), "redis-host", 6379)));
        for bad in ["", "r1/n1", "r1=h:1", "R1/n1=h:1", "r1/n_1=h:1", "r1/n1=h:0", "r1/n1=h:1,advertise=", "r1/n1=h:1,weight=3", "r1/n1=:1"] {
            assert!(Instance::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(Instance::parse("r1/n1=h:1,weight=3").unwrap_err().to_string().contains("unknown option \"weight=3\""));
    }

    #[test]
    fn parses_an_instances_file_and_rejects_duplicates() {
        let file = "# host a\nr1/n1=127.0.0.1:7001\n\n  r2/n1=127.0.0.1:7002   # second\n";
        let instances = Instance::parse_file(file).unwrap();
        assert_eq!(instances.iter().map(|i| i.redis.port).collect::<Vec<_>>(), vec![7001, 7002]);
        assert_eq!(check_instances(&instances), Ok(()));
        let twice = Instance::parse_file("r1/n1=h:1\nr1/n1=h:2\n").unwrap();
        assert_eq!(check_instances(&twice), Err(InstanceError::Duplicate("r1".into(), "n1".into())));
        assert_eq!(check_instances(&[]), Err(InstanceError::None));
        assert!(Instance::parse_file("r1/n1=h:1\nnonsense\n").is_err());
    }
}
