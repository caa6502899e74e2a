//! The agent's settings, as `main.rs` builds them from flags: which redis, what to
//! advertise, how often, and how to authenticate.

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

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: String,
    pub node: String,
    pub redis: RedisTarget,
    pub credentials: Credentials,
    /// Published in the registration (`address`, `port`).
    pub advertise_address: String,
    pub advertise_port: u16,
    /// The machine redis runs on (placement).
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
}
