//! Asking redis how it is: `PING`, `INFO server`, `INFO persistence`,
//! `INFO replication` and `CONFIG GET min-replicas-to-write` (is it fenced?) in one
//! round trip, within a timeout. And fencing it, when the agent loses etcd.
//!
//! On a replica, each probe also PINGs its master (from `INFO`'s `master_host` and
//! `master_port`), on a connection kept between probes, within the same timeout:
//! can this host still reach it? That is the observer's second view of a master
//! it cannot reach itself ([`RedisState::upstream_down`]). A PING is not
//! replicated: asking adds nothing to any replication history.
//!
//! [`redis_state`] is pure (tested on captured `INFO` text, parsed by
//! `service::redis_info`); [`Prober`] is the thin I/O around it. The whole probe
//! (connect, AUTH, commands) is bounded by one timeout, so a frozen redis (SIGSTOP,
//! swapping, a stuck disk) is seen as down within about one timeout, not after the
//! kernel gives up on TCP.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use service::redis_auth::{connect_host, Timeouts};
use service::redis_info::{Info, InfoError};
use topology::records::Role;

use crate::config::{Credentials, RedisTarget};
use crate::tracker::{Probe, RedisState};

/// Why a probe found redis unusable; its text is what the registration reports.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The target and credentials make no client (at start, not per probe).
    #[error("redis client for {target}: {error}")]
    Client { target: RedisTarget, error: redis::RedisError },
    #[error("no answer from {target} within {} ms", .timeout.as_millis())]
    Timeout { target: RedisTarget, timeout: Duration },
    #[error("cannot connect to {target}: {error}")]
    Connect { target: RedisTarget, error: redis::RedisError },
    #[error("PING/INFO on {target} failed: {error}")]
    Query { target: RedisTarget, error: redis::RedisError },
    #[error(transparent)]
    Info(#[from] InfoError),
    #[error("no connection to {target}: the last probe failed")]
    NotConnected { target: RedisTarget },
}

/// Reads role, offset and run_id from `INFO server`, `INFO persistence` and
/// `INFO replication` text, and the fence from `min-replicas-to-write`. An
/// instance still loading its dataset is not usable yet, so it is an error too.
pub fn redis_state(text: &str, min_replicas_to_write: u32) -> Result<RedisState, InfoError> {
    let info = Info::parse(text);
    if info.loading() {
        return Err(InfoError::Loading);
    }
    let run_id = info.run_id()?;
    let (role, upstream) = if info.is_replica()? { (Role::Slave, Some(upstream(&info)?)) } else { (Role::Master, None) };
    let fenced = service::fence::is_fence(min_replicas_to_write);
    Ok(RedisState { run_id: run_id.to_string(), role, offset: info.applied_offset()?, upstream, fenced, upstream_down: false })
}

/// A replica's `master_host:master_port`, written the way `SocketAddr` prints
/// when the host is an IP (brackets around IPv6), so the observer can compare.
fn upstream(info: &Info<'_>) -> Result<String, InfoError> {
    let (host, port) = (info.field("master_host")?, info.field("master_port")?);
    Ok(match (host.parse::<std::net::IpAddr>(), port.parse::<u16>()) {
        (Ok(ip), Ok(port)) => std::net::SocketAddr::new(ip, port).to_string(),
        _ => format!("{host}:{port}"),
    })
}

/// Probes one redis-server, keeping a connection between probes and dropping it
/// on any error.
pub struct Prober {
    target: RedisTarget,
    client: redis::Client,
    credentials: Credentials,
    timeout: Duration,
    conn: Option<MultiplexedConnection>,
    /// The replica's master (`host:port` as in the registration) and a
    /// connection to it, kept while it answers.
    upstream: Option<(String, MultiplexedConnection)>,
}

impl Prober {
    pub fn new(target: &RedisTarget, credentials: &Credentials, timeout: Duration) -> Result<Prober, ProbeError> {
        let client = credentials
            .client(&target.host, target.port)
            .map_err(|error| ProbeError::Client { target: target.clone(), error })?;
        Ok(Prober { target: target.clone(), client, credentials: credentials.clone(), timeout, conn: None, upstream: None })
    }

    /// One probe, never longer than the timeout (and, on a replica, the PING of
    /// its master, never longer than another).
    pub async fn probe(&mut self) -> Probe {
        let result = match tokio::time::timeout(self.timeout, self.try_probe()).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout { target: self.target.clone(), timeout: self.timeout }),
        };
        match result {
            Ok(mut state) => {
                if let Some(upstream) = state.upstream.clone() {
                    state.upstream_down = !self.upstream_answers(&upstream).await;
                } else {
                    self.upstream = None;
                }
                Probe::Up(state)
            }
            Err(error) => {
                self.conn = None;
                Probe::Down { error: error.to_string() }
            }
        }
    }

    /// Whether the replica's master answers a PING from this host within the
    /// timeout, on the kept connection or a new one.
    async fn upstream_answers(&mut self, upstream: &str) -> bool {
        if self.upstream.as_ref().is_some_and(|(addr, _)| addr != upstream) {
            self.upstream = None;
        }
        let timeout = self.timeout;
        let ping = async {
            if self.upstream.is_none() {
                let master = RedisTarget::parse(upstream).ok()?;
                let timeouts = Timeouts { connect: timeout, command: timeout };
                let conn = connect_host(&master.host, master.port, timeouts, &self.credentials).await.ok()?;
                self.upstream = Some((upstream.to_string(), conn));
            }
            let (_, conn) = self.upstream.as_mut()?;
            redis::cmd("PING").query_async::<String>(conn).await.ok()
        };
        let answered = matches!(tokio::time::timeout(timeout, ping).await, Ok(Some(_)));
        if !answered {
            self.upstream = None;
        }
        answered
    }

    async fn try_probe(&mut self) -> Result<RedisState, ProbeError> {
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

    async fn query(&mut self) -> Result<RedisState, ProbeError> {
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
                    .map_err(|error| ProbeError::Connect { target: self.target.clone(), error })?;
                self.conn.insert(conn)
            }
        };
        type Answers = (String, String, String, String, Vec<String>);
        let (_pong, server, persistence, replication, setting): Answers = redis::pipe()
            .cmd("PING")
            .cmd("INFO")
            .arg("server")
            .cmd("INFO")
            .arg("persistence")
            .cmd("INFO")
            .arg("replication")
            .cmd("CONFIG")
            .arg("GET")
            .arg("min-replicas-to-write")
            .query_async(conn)
            .await
            .map_err(|error| ProbeError::Query { target: self.target.clone(), error })?;
        let min_replicas_to_write = service::fence::setting(&setting);
        Ok(redis_state(&format!("{server}\n{persistence}\n{replication}"), min_replicas_to_write)?)
    }

    /// Sets the write fence (`service::fence`) and drops every client connection
    /// but this one, so writers get an error and reconnect (through a proxy that
    /// may send them elsewhere by then). Returns the offset the fence records.
    pub async fn fence(&mut self) -> Result<u64, ProbeError> {
        let target = self.target.clone();
        let timeout = self.timeout;
        let Some(conn) = self.conn.as_mut() else {
            return Err(ProbeError::NotConnected { target });
        };
        let fence = async {
            // A max lag of 0 would make redis ignore the fence.
            let point = service::fence::set(conn, redis::pipe(), Some(10)).await.map_err(|error| match error {
                service::fence::FenceError::Redis(error) => ProbeError::Query { target: target.clone(), error },
                service::fence::FenceError::Info(error) => ProbeError::Info(error),
            })?;
            redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .arg("SKIPME")
                .arg("yes")
                .query_async::<i64>(conn)
                .await
                .map_err(|error| ProbeError::Query { target: target.clone(), error })?;
            Ok(point)
        };
        match tokio::time::timeout(timeout, fence).await {
            Ok(result) => result,
            Err(_) => Err(ProbeError::Timeout { target, timeout }),
        }
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
        let s = redis_state(&info(&[SERVER, PERSISTENCE, MASTER]), 0).unwrap();
        assert_eq!(
            s,
            RedisState {
                run_id: "4e2fa1c0b0f6a3e1e1b5cf6f0d1b9a5d2c3e4f50".into(),
                role: Role::Master,
                offset: 560,
                upstream: None,
                fenced: false,
                upstream_down: false
            }
        );
    }

    #[test]
    fn only_a_fence_sized_min_replicas_to_write_is_a_fence() {
        let state = |setting| redis_state(&info(&[SERVER, PERSISTENCE, MASTER]), setting).unwrap().fenced;
        assert!(!state(0));
        assert!(!state(1), "a durability setting");
        assert!(state(topology::FENCE_MIN_REPLICAS));
        assert!(state(topology::history::fence_value(560)));
    }

    #[test]
    fn a_replica_reports_its_upstream() {
        let s = redis_state(&info(&[SERVER, PERSISTENCE, SLAVE]), 0).unwrap();
        assert_eq!(s.upstream.as_deref(), Some("127.0.0.1:7000"));
        let v6 = SLAVE.replace("master_host:127.0.0.1", "master_host:::1");
        assert_eq!(redis_state(&info(&[SERVER, &v6]), 0).unwrap().upstream.as_deref(), Some("[::1]:7000"));
        let named = SLAVE.replace("master_host:127.0.0.1", "master_host:node-1.redis-1.cluster.local");
        assert_eq!(redis_state(&info(&[SERVER, &named]), 0).unwrap().upstream.as_deref(), Some("node-1.redis-1.cluster.local:7000"));
    }

    #[test]
    fn a_replica_reports_the_offset_it_applied() {
        let s = redis_state(&info(&[SERVER, PERSISTENCE, SLAVE]), 0).unwrap();
        assert_eq!((s.role, s.offset), (Role::Slave, 550));
    }

    #[test]
    fn a_replica_without_slave_offset_falls_back_and_negative_is_zero() {
        let slave = SLAVE.replace("slave_repl_offset:550\r\n", "").replace("master_repl_offset:560", "master_repl_offset:-1");
        let s = redis_state(&info(&[SERVER, &slave]), 0).unwrap();
        assert_eq!((s.role, s.offset), (Role::Slave, 0));
    }

    #[test]
    fn loading_is_not_usable() {
        let loading = PERSISTENCE.replace("loading:0", "loading:1");
        let err = redis_state(&info(&[SERVER, &loading, MASTER]), 0).unwrap_err();
        assert!(matches!(err, InfoError::Loading));
        assert_eq!(err.to_string(), "redis is loading its dataset");
    }

    #[test]
    fn incomplete_or_odd_info_is_an_error_not_a_panic() {
        assert!(redis_state("", 0).is_err());
        assert!(redis_state(MASTER, 0).unwrap_err().to_string().contains("run_id"));
        assert!(redis_state(&info(&[SERVER, "role:sentinel"]), 0).unwrap_err().to_string().contains("sentinel"));
        assert!(redis_state(&info(&[SERVER, "role:master\r\nmaster_repl_offset:x"]), 0).unwrap_err().to_string().contains("not a number"));
        assert!(redis_state(&info(&["run_id:", MASTER]), 0).is_err());
    }
}
