//! What each instance says about itself: role, upstream, replication history and
//! offset, key count, and whether it carries our write fence.
//!
//! [`parse_info`] is pure (tested on captured `INFO` text); [`observe`] is the thin
//! I/O around it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use service::redis_auth::Credentials;

pub use topology::FENCE_MIN_REPLICAS;

/// One member as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Observed {
    Up(Replication),
    Unreachable { error: String },
}

/// The replication facts the planner decides on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    pub role: Role,
    /// Current replication history id (`master_replid`).
    pub replid: String,
    /// The history this one continues, after a promotion (`master_replid2`).
    pub replid2: String,
    /// Bytes of history applied (`slave_repl_offset` on a replica, else `master_repl_offset`).
    pub offset: u64,
    /// Up to where `replid2` is valid (`second_repl_offset`, -1 when none).
    pub second_offset: i64,
    /// Keys over all databases.
    pub keys: u64,
    /// `min-replicas-to-write` as configured now.
    pub min_replicas_to_write: u32,
    /// `min-replicas-max-lag` (the fence needs it above 0 to act).
    pub min_replicas_max_lag: u32,
    /// Redis was started with a config file, so `CONFIG REWRITE` can persist roles.
    pub has_config_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum Role {
    Master,
    Slave {
        /// `master_host:master_port`; `None` if the host is not an IP literal.
        upstream: Option<SocketAddr>,
        link_up: bool,
    },
}

impl Replication {
    pub fn is_master(&self) -> bool {
        matches!(self.role, Role::Master)
    }

    pub fn is_fenced(&self) -> bool {
        self.min_replicas_to_write >= FENCE_MIN_REPLICAS
    }

    pub fn upstream(&self) -> Option<SocketAddr> {
        match self.role {
            Role::Slave { upstream, .. } => upstream,
            Role::Master => None,
        }
    }
}

/// Builds a [`Replication`] from `INFO replication keyspace server` output and the
/// two `min-replicas-*` settings.
pub fn parse_info(info: &str, min_replicas_to_write: u32, min_replicas_max_lag: u32) -> Result<Replication, String> {
    let fields: HashMap<&str, &str> = info
        .lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .collect();
    let get = |name: &str| fields.get(name).copied().ok_or_else(|| format!("INFO lacks {name}"));
    let number = |name: &str| -> Result<i64, String> {
        get(name)?.parse().map_err(|_| format!("INFO {name} is not a number"))
    };
    let role = match get("role")? {
        "master" => Role::Master,
        "slave" => {
            let host = get("master_host")?;
            let port = u16::try_from(number("master_port")?).map_err(|_| "INFO master_port out of range".to_string())?;
            Role::Slave {
                upstream: host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)),
                link_up: get("master_link_status")? == "up",
            }
        }
        other => return Err(format!("unexpected role {other:?}")),
    };
    let offset = match role {
        Role::Slave { .. } => number("slave_repl_offset").or_else(|_| number("master_repl_offset"))?,
        Role::Master => number("master_repl_offset")?,
    };
    // Keyspace lines look like `db0:keys=3,expires=0,avg_ttl=0`.
    let keys = fields
        .iter()
        .filter(|(k, _)| k.starts_with("db") && k[2..].bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|(_, v)| v.split(',').find_map(|kv| kv.strip_prefix("keys=")))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    Ok(Replication {
        role,
        replid: get("master_replid")?.to_string(),
        replid2: get("master_replid2")?.to_string(),
        offset: u64::try_from(offset).unwrap_or(0),
        second_offset: number("second_repl_offset")?,
        keys,
        min_replicas_to_write,
        min_replicas_max_lag,
        has_config_file: fields.get("config_file").is_some_and(|f| !f.is_empty()),
    })
}

/// Timeouts for talking to redis.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_millis(1000), command: Duration::from_millis(2000) }
    }
}

/// Connects to one instance (authenticating with `credentials`, if any).
pub async fn connect(
    addr: SocketAddr,
    timeouts: Timeouts,
    credentials: &Credentials,
) -> Result<MultiplexedConnection, String> {
    let client = credentials.client_for(addr).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.command));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

/// Reads the replication facts of one connected instance.
pub async fn read_replication(conn: &mut MultiplexedConnection) -> Result<Replication, String> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .arg("keyspace")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|e| format!("INFO failed: {e}"))?;
    let settings: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("min-replicas-*")
        .query_async(conn)
        .await
        .map_err(|e| format!("CONFIG GET failed: {e}"))?;
    let setting = |name: &str| settings.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    parse_info(&info, setting("min-replicas-to-write"), setting("min-replicas-max-lag"))
}

/// The replication offset an instance has applied (cheap: `INFO replication` only).
pub async fn read_offset(conn: &mut MultiplexedConnection) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await
        .map_err(|e| format!("INFO failed: {e}"))?;
    let field = |name: &str| {
        info.lines().find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':')?.parse::<u64>().ok())
    };
    field("slave_repl_offset")
        .or_else(|| field("master_repl_offset"))
        .ok_or_else(|| "INFO lacks a replication offset".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=560,lag=0\r\nmaster_failover_state:no-failover\r\nmaster_replid:aaaa\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:560\r\nsecond_repl_offset:-1\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb2:keys=4,expires=1,avg_ttl=9\r\n\r\n# Server\r\nredis_version:7.0.15\r\nconfig_file:/etc/redis/redis.conf\r\n";
    const SLAVE: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:up\r\nslave_read_repl_offset:560\r\nslave_repl_offset:550\r\nmaster_replid:aaaa\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:560\r\nsecond_repl_offset:-1\r\n# Server\r\nconfig_file:\r\n";

    #[test]
    fn parses_a_master() {
        let r = parse_info(MASTER, 0, 10).unwrap();
        assert_eq!(r.role, Role::Master);
        assert_eq!(r.offset, 560);
        assert_eq!(r.keys, 7);
        assert!(r.has_config_file);
        assert!(!r.is_fenced());
        assert_eq!(r.second_offset, -1);
    }

    #[test]
    fn parses_a_slave_with_its_applied_offset() {
        let r = parse_info(SLAVE, FENCE_MIN_REPLICAS, 10).unwrap();
        assert_eq!(
            r.role,
            Role::Slave { upstream: Some("127.0.0.1:7000".parse().unwrap()), link_up: true }
        );
        assert_eq!(r.offset, 550);
        assert_eq!(r.keys, 0);
        assert!(!r.has_config_file);
        assert!(r.is_fenced());
    }

    #[test]
    fn slave_of_a_hostname_has_no_upstream_address() {
        let info = SLAVE.replace("master_host:127.0.0.1", "master_host:redis-a").replace("link_status:up", "link_status:down");
        let r = parse_info(&info, 0, 10).unwrap();
        assert_eq!(r.role, Role::Slave { upstream: None, link_up: false });
    }

    #[test]
    fn incomplete_info_is_an_error_not_a_panic() {
        assert!(parse_info("", 0, 0).is_err());
        assert!(parse_info("role:sentinel", 0, 0).is_err());
        assert!(parse_info("role:slave\nmaster_host:x\n", 0, 0).is_err());
        assert!(parse_info(&MASTER.replace("master_repl_offset:560", "master_repl_offset:x"), 0, 0).is_err());
    }
}
