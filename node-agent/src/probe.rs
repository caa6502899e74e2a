//! Asking redis how it is: `PING`, then `INFO server`, `INFO persistence` and
//! `INFO replication` in one round trip, within a timeout.
//!
//! [`parse_info`] is pure (tested on captured `INFO` text); [`Prober`] is the thin
//! I/O around it. The whole probe (connect, AUTH, commands) is bounded by one
//! timeout, so a frozen redis (SIGSTOP, swapping, a stuck disk) is seen as down
//! within about one timeout, not after the kernel gives up on TCP.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use topology::records::Role;

use crate::config::{Credentials, RedisTarget};
use crate::tracker::{Probe, RedisState};

/// Reads role, offset and run_id from `INFO server`, `INFO persistence` and
/// `INFO replication` text. An instance still loading its dataset is not usable
/// yet, so it is an error too.
pub fn parse_info(info: &str) -> Result<RedisState, String> {
    let fields: HashMap<&str, &str> =
        info.lines().filter_map(|line| line.trim_end().split_once(':')).collect();
    let get = |name: &str| fields.get(name).copied().ok_or_else(|| format!("INFO lacks {name}"));
    let number = |name: &str| -> Result<u64, String> {
        let value = get(name)?;
        // A replica that has not synced yet may report -1; it has applied nothing.
        match value.parse::<i64>() {
            Ok(n) => Ok(u64::try_from(n).unwrap_or(0)),
            Err(_) => Err(format!("INFO {name} is not a number: {value:?}")),
        }
    };
    if fields.get("loading").is_some_and(|v| *v == "1") {
        return Err("redis is loading its dataset".to_string());
    }
    let run_id = get("run_id")?;
    if run_id.is_empty() {
        return Err("INFO run_id is empty".to_string());
    }
    let (role, offset) = match get("role")? {
        "master" => (Role::Master, number("master_repl_offset")?),
        "slave" => (Role::Slave, number("slave_repl_offset").or_else(|_| number("master_repl_offset"))?),
        other => return Err(format!("unexpected role {other:?}")),
    };
    Ok(RedisState { run_id: run_id.to_string(), role, offset })
}

/// Probes one redis-server, keeping a connection between probes and dropping it
/// on any error.
pub struct Prober {
    target: RedisTarget,
    client: redis::Client,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
}

impl Prober {
    pub fn new(target: &RedisTarget, credentials: &Credentials, timeout: Duration) -> anyhow::Result<Prober> {
        let client = credentials
            .client(&target.host, target.port)
            .map_err(|e| anyhow::anyhow!("redis client for {target}: {e}"))?;
        Ok(Prober { target: target.clone(), client, timeout, conn: None })
    }

    /// One probe, never longer than the timeout.
    pub async fn probe(&mut self) -> Probe {
        let result = match tokio::time::timeout(self.timeout, self.try_probe()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer from {} within {} ms", self.target, self.timeout.as_millis())),
        };
        match result {
            Ok(state) => Probe::Up(state),
            Err(error) => {
                self.conn = None;
                Probe::Down { error }
            }
        }
    }

    async fn try_probe(&mut self) -> Result<RedisState, String> {
        let reused = self.conn.is_some();
        match self.query().await {
            // A kept connection breaks when redis restarts; a fresh one tells
            // whether redis itself is down.
            Err(_) if reused => {
                self.conn = None;
                self.query().await
            }
            result => result,
        }
    }

    async fn query(&mut self) -> Result<RedisState, String> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout));
                let conn = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", self.target))?;
                self.conn.insert(conn)
            }
        };
        let (_pong, server, persistence, replication): (String, String, String, String) = redis::pipe()
            .cmd("PING")
            .cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("persistence")
            .cmd("INFO")
            .arg("replication")
            .query_async(conn)
            .await
            .map_err(|e| format!("PING/INFO on {} failed: {e}", self.target))?;
        parse_info(&format!("{server}\n{persistence}\n{replication}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:4e2fa1c0b0f6a3e1e1b5cf6f0d1b9a5d2c3e4f50\r\ntcp_port:6379\r\n";
    const PERSISTENCE: &str = "# Persistence\r\nloading:0\r\nasync_loading:0\r\nrdb_changes_since_last_save:0\r\n";
    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=560,lag=0\r\nmaster_replid:aaaa\r\nmaster_repl_offset:560\r\nsecond_repl_offset:-1\r\n";
    const SLAVE: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7000\r\nmaster_link_status:up\r\nslave_read_repl_offset:560\r\nslave_repl_offset:550\r\nmaster_replid:aaaa\r\nmaster_repl_offset:560\r\n";

    fn info(parts: &[&str]) -> String {
        parts.join("\n")
    }

    #[test]
    fn parses_a_master() {
        let s = parse_info(&info(&[SERVER, PERSISTENCE, MASTER])).unwrap();
        assert_eq!(
            s,
            RedisState { run_id: "4e2fa1c0b0f6a3e1e1b5cf6f0d1b9a5d2c3e4f50".into(), role: Role::Master, offset: 560 }
        );
    }

    #[test]
    fn a_replica_reports_the_offset_it_applied() {
        let s = parse_info(&info(&[SERVER, PERSISTENCE, SLAVE])).unwrap();
        assert_eq!((s.role, s.offset), (Role::Slave, 550));
    }

    #[test]
    fn a_replica_without_slave_offset_falls_back_and_negative_is_zero() {
        let slave = SLAVE.replace("slave_repl_offset:550\r\n", "").replace("master_repl_offset:560", "master_repl_offset:-1");
        let s = parse_info(&info(&[SERVER, &slave])).unwrap();
        assert_eq!((s.role, s.offset), (Role::Slave, 0));
    }

    #[test]
    fn loading_is_not_usable() {
        let loading = PERSISTENCE.replace("loading:0", "loading:1");
        assert_eq!(parse_info(&info(&[SERVER, &loading, MASTER])), Err("redis is loading its dataset".into()));
    }

    #[test]
    fn incomplete_or_odd_info_is_an_error_not_a_panic() {
        assert!(parse_info("").is_err());
        assert!(parse_info(MASTER).unwrap_err().contains("run_id"));
        assert!(parse_info(&info(&[SERVER, "role:sentinel"])).unwrap_err().contains("sentinel"));
        assert!(parse_info(&info(&[SERVER, "role:master\r\nmaster_repl_offset:x"])).unwrap_err().contains("not a number"));
        assert!(parse_info(&info(&["run_id:", MASTER])).is_err());
    }
}
