//! What a redis-server says about itself in `INFO`: role and upstream, replication
//! history and offset, key count, run_id, whether it is loading, whether it runs
//! with a config file.
//!
//! [`Info`] is pure (tested on captured `INFO` text) and reads each fact on demand,
//! so every caller requires only the fields it uses. [`read_replication`] and
//! [`read_offset`] are the thin I/O around it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use topology::history::History;

/// Why `INFO` (or reading it) gave no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InfoError {
    #[error("INFO lacks {0}")]
    Missing(&'static str),
    #[error("INFO {field} is not a number: {value:?}")]
    NotANumber { field: &'static str, value: String },
    #[error("INFO {0} out of range")]
    OutOfRange(&'static str),
    #[error("INFO {0} is empty")]
    Empty(&'static str),
    /// Neither master nor slave (a sentinel, say).
    #[error("unexpected role {0:?}")]
    UnexpectedRole(String),
    /// Redis is still loading its dataset and cannot serve yet.
    #[error("redis is loading its dataset")]
    Loading,
    #[error("{command} failed: {error}")]
    Redis { command: &'static str, error: redis::RedisError },
}

/// A replica's or a master's place in replication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "lowercase")]
pub enum ReplicationRole {
    Master,
    Slave {
        /// `master_host:master_port`; `None` if the host is not an IP literal.
        upstream: Option<SocketAddr>,
        link_up: bool,
    },
}

/// `INFO` text split into its `field:value` lines (section headers and blank lines
/// carry no colon and drop out).
#[derive(Debug, Clone)]
pub struct Info<'a> {
    fields: HashMap<&'a str, &'a str>,
}

impl<'a> Info<'a> {
    pub fn parse(text: &'a str) -> Info<'a> {
        Info { fields: text.lines().filter_map(|line| line.trim_end().split_once(':')).collect() }
    }

    pub fn field(&self, name: &'static str) -> Result<&'a str, InfoError> {
        self.fields.get(name).copied().ok_or(InfoError::Missing(name))
    }

    fn number(&self, name: &'static str) -> Result<i64, InfoError> {
        let value = self.field(name)?;
        value.parse().map_err(|_| InfoError::NotANumber { field: name, value: value.to_string() })
    }

    /// `role`: `false` for a master, `true` for a slave, an error for anything else.
    pub fn is_replica(&self) -> Result<bool, InfoError> {
        match self.field("role")? {
            "master" => Ok(false),
            "slave" => Ok(true),
            other => Err(InfoError::UnexpectedRole(other.to_string())),
        }
    }

    /// The role with, for a slave, its upstream and whether the link is up.
    pub fn role(&self) -> Result<ReplicationRole, InfoError> {
        if !self.is_replica()? {
            return Ok(ReplicationRole::Master);
        }
        let host = self.field("master_host")?;
        let port = u16::try_from(self.number("master_port")?).map_err(|_| InfoError::OutOfRange("master_port"))?;
        Ok(ReplicationRole::Slave {
            upstream: host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)),
            link_up: self.field("master_link_status")? == "up",
        })
    }

    /// Bytes of replication history applied: `slave_repl_offset` on a replica (or
    /// `master_repl_offset` where that is missing), else `master_repl_offset`.
    pub fn applied_offset(&self) -> Result<u64, InfoError> {
        let offset = if self.is_replica()? {
            self.number("slave_repl_offset").or_else(|_| self.number("master_repl_offset"))?
        } else {
            self.number("master_repl_offset")?
        };
        // A replica that has not synced yet may report -1: it has applied nothing.
        Ok(u64::try_from(offset).unwrap_or(0))
    }

    /// The first of `slave_repl_offset`, `master_repl_offset` that reads as an
    /// offset, whatever the role: all [`read_offset`] needs.
    fn any_offset(&self) -> Result<u64, InfoError> {
        let offset = |name| self.fields.get(name).and_then(|v| v.parse::<u64>().ok());
        offset("slave_repl_offset")
            .or_else(|| offset("master_repl_offset"))
            .ok_or(InfoError::Missing("a replication offset"))
    }

    /// Current replication history id (`master_replid`).
    pub fn replid(&self) -> Result<&'a str, InfoError> {
        self.field("master_replid")
    }

    /// The history this one continues after a promotion (`master_replid2`).
    pub fn replid2(&self) -> Result<&'a str, InfoError> {
        self.field("master_replid2")
    }

    /// Up to where `replid2` is valid (`second_repl_offset`, -1 when none).
    pub fn second_offset(&self) -> Result<i64, InfoError> {
        self.number("second_repl_offset")
    }

    /// Keys over all databases (0 without a keyspace section).
    pub fn keys(&self) -> u64 {
        // Keyspace lines look like `db0:keys=3,expires=0,avg_ttl=0`.
        self.fields
            .iter()
            .filter(|(k, _)| k.starts_with("db") && k[2..].bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|(_, v)| v.split(',').find_map(|kv| kv.strip_prefix("keys=")))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum()
    }

    /// `run_id`, which changes whenever redis restarts.
    pub fn run_id(&self) -> Result<&'a str, InfoError> {
        match self.field("run_id")? {
            "" => Err(InfoError::Empty("run_id")),
            id => Ok(id),
        }
    }

    /// Redis is still loading its dataset (`loading:1`).
    pub fn loading(&self) -> bool {
        self.fields.get("loading").is_some_and(|v| *v == "1")
    }

    /// Redis was started with a config file, so `CONFIG REWRITE` can persist roles.
    pub fn has_config_file(&self) -> bool {
        self.fields.get("config_file").is_some_and(|f| !f.is_empty())
    }
}

/// The replication facts that decide a topology change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Replication {
    pub role: ReplicationRole,
    /// Current replication history id (`master_replid`).
    pub replid: String,
    /// The history this one continues, after a promotion (`master_replid2`).
    pub replid2: String,
    /// Bytes of history applied ([`Info::applied_offset`]).
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
    /// `replica-read-only`: a replica without it acknowledges writes it then loses.
    pub replica_read_only: bool,
}

impl Replication {
    /// From `INFO replication keyspace server` and the two `min-replicas-*` settings
    /// (`replica_read_only` is taken to be the default, yes).
    pub fn from_info(info: &Info<'_>, min_replicas_to_write: u32, min_replicas_max_lag: u32) -> Result<Replication, InfoError> {
        Ok(Replication {
            role: info.role()?,
            offset: info.applied_offset()?,
            keys: info.keys(),
            replid: info.replid()?.to_string(),
            replid2: info.replid2()?.to_string(),
            second_offset: info.second_offset()?,
            min_replicas_to_write,
            min_replicas_max_lag,
            has_config_file: info.has_config_file(),
            replica_read_only: true,
        })
    }

    pub fn is_master(&self) -> bool {
        matches!(self.role, ReplicationRole::Master)
    }

    /// Carries the write fence (`min-replicas-to-write` no group can meet).
    pub fn is_fenced(&self) -> bool {
        crate::fence::is_fence(self.min_replicas_to_write)
    }

    /// Its place in replication, for [`topology::history`].
    pub fn history(&self) -> History<'_> {
        History { replid: &self.replid, replid2: &self.replid2, offset: self.offset, second_offset: self.second_offset }
    }

    /// The history that holds its writes: on a master fenced at a recorded point,
    /// only up to that point (what it added since is pings, not writes).
    pub fn written_history(&self) -> History<'_> {
        let history = self.history();
        match self.fence_point() {
            Some(point) if self.is_master() => history.until(point),
            _ => history,
        }
    }

    /// Where the fence it carries was set, when that was recorded.
    pub fn fence_point(&self) -> Option<u64> {
        topology::history::fence_point(self.min_replicas_to_write, self.offset)
    }

    pub fn upstream(&self) -> Option<SocketAddr> {
        match self.role {
            ReplicationRole::Slave { upstream, .. } => upstream,
            ReplicationRole::Master => None,
        }
    }
}

/// Reads the replication facts of one connected instance.
pub async fn read_replication(conn: &mut MultiplexedConnection) -> Result<Replication, InfoError> {
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .arg("keyspace")
        .arg("server")
        .query_async(conn)
        .await
        .map_err(|error| InfoError::Redis { command: "INFO", error })?;
    let settings: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("min-replicas-*")
        .arg("replica-read-only")
        .query_async(conn)
        .await
        .map_err(|error| InfoError::Redis { command: "CONFIG GET", error })?;
    let setting = |name: &str| settings.get(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut replication =
        Replication::from_info(&Info::parse(&text), setting("min-replicas-to-write"), setting("min-replicas-max-lag"))?;
    replication.replica_read_only = settings.get("replica-read-only").is_none_or(|v| v == "yes");
    Ok(replication)
}

/// The replication offset an instance has applied (cheap: `INFO replication` only),
/// polled while a new master catches up.
pub async fn read_offset(conn: &mut MultiplexedConnection) -> Result<u64, InfoError> {
    let text: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(conn)
        .await
        .map_err(|error| InfoError::Redis { command: "INFO", error })?;
    Info::parse(&text).any_offset()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=560,lag=0\r\nmaster_failover_state:no-failover\r\nmaster_replid:aaaa\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:560\r\nsecond_repl_offset:-1\r\n\r\n# Keyspace\r\ndb0:keys=3,expires=0,avg_ttl=0\r\ndb2:keys=4,expires=1,avg_ttl=9\r\n\r\n# Server\r\nredis_version:7.0.15\r\nconfig_file:/etc/redis/redis.conf\r\n";
    const SLAVE: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:up\r\nslave_read_repl_offset:560\r\nslave_repl_offset:550\r\nmaster_replid:aaaa\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:560\r\nsecond_repl_offset:-1\r\n# Server\r\nconfig_file:\r\n";

    fn parse_info(info: &str, min_replicas_to_write: u32, min_replicas_max_lag: u32) -> Result<Replication, InfoError> {
        Replication::from_info(&Info::parse(info), min_replicas_to_write, min_replicas_max_lag)
    }

    #[test]
    fn parses_a_master() {
        let r = parse_info(MASTER, 0, 10).unwrap();
        assert_eq!(r.role, ReplicationRole::Master);
        assert_eq!(r.offset, 560);
        assert_eq!(r.keys, 7);
        assert!(r.has_config_file);
        assert!(!r.is_fenced());
        assert_eq!(r.second_offset, -1);
    }

    #[test]
    fn parses_a_slave_with_its_applied_offset() {
        let r = parse_info(SLAVE, topology::FENCE_MIN_REPLICAS, 10).unwrap();
        assert_eq!(
            r.role,
            ReplicationRole::Slave { upstream: Some("127.0.0.1:7000".parse().unwrap()), link_up: true }
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
        assert_eq!(r.role, ReplicationRole::Slave { upstream: None, link_up: false });
    }

    #[test]
    fn a_replica_without_slave_offset_falls_back_and_negative_is_zero() {
        let slave = SLAVE.replace("slave_repl_offset:550\r\n", "").replace("master_repl_offset:560", "master_repl_offset:-1");
        assert_eq!(Info::parse(&slave).applied_offset().unwrap(), 0);
        let slave = SLAVE.replace("slave_repl_offset:550\r\n", "");
        assert_eq!(Info::parse(&slave).applied_offset().unwrap(), 560);
    }

    #[test]
    fn the_cheap_offset_read_takes_the_first_offset_present() {
        assert_eq!(Info::parse(SLAVE).any_offset().unwrap(), 550);
        assert_eq!(Info::parse(MASTER).any_offset().unwrap(), 560);
        assert!(matches!(Info::parse("role:master").any_offset(), Err(InfoError::Missing(_))));
    }

    #[test]
    fn run_id_loading_and_config_file() {
        let info = Info::parse("run_id:4e2f\r\nloading:1\r\nconfig_file:\r\n");
        assert_eq!(info.run_id().unwrap(), "4e2f");
        assert!(info.loading());
        assert!(!info.has_config_file());
        assert!(matches!(Info::parse("run_id:\r\n").run_id(), Err(InfoError::Empty("run_id"))));
        assert!(matches!(Info::parse("").run_id(), Err(InfoError::Missing("run_id"))));
    }

    #[test]
    fn incomplete_info_is_an_error_not_a_panic() {
        assert!(matches!(parse_info("", 0, 0), Err(InfoError::Missing("role"))));
        assert!(matches!(parse_info("role:sentinel", 0, 0), Err(InfoError::UnexpectedRole(r)) if r == "sentinel"));
        assert!(parse_info("role:slave\nmaster_host:x\n", 0, 0).is_err());
        let err = parse_info(&MASTER.replace("master_repl_offset:560", "master_repl_offset:x"), 0, 0).unwrap_err();
        assert_eq!(err.to_string(), "INFO master_repl_offset is not a number: \"x\"");
    }
}
