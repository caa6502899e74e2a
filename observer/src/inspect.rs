//! What the observer asks redis directly before failing over: does the master
//! answer, and where do its slaves stand. The only module that talks to redis,
//! through the shared `service::redis_auth` and `service::redis_info`.

use std::net::SocketAddr;
use std::time::Duration;

use service::redis_auth::{self, ConnectError, Credentials, Timeouts};
use service::redis_info;

use crate::failover::{MasterCheck, SlaveReplication};

/// Short: a live redis answers in microseconds, and the worker waits for this
/// while the master is down.
const TIMEOUT: Duration = Duration::from_millis(300);

/// Connects to the master, PINGs it and reads its write fence; a refused port is
/// told apart from silence.
pub async fn master(addr: SocketAddr, credentials: &Credentials) -> MasterCheck {
    let timeouts = Timeouts { connect: TIMEOUT, command: TIMEOUT };
    match redis_auth::connect(addr, timeouts, credentials).await {
        Err(ConnectError::Connect(e)) if e.is_connection_refusal() => MasterCheck::Refused,
        Err(_) => MasterCheck::NoAnswer,
        Ok(mut conn) => {
            let answers: redis::RedisResult<(String, Vec<String>)> = redis::pipe()
                .cmd("PING")
                .cmd("CONFIG")
                .arg("GET")
                .arg("min-replicas-to-write")
                .query_async(&mut conn)
                .await;
            match answers {
                Err(_) => MasterCheck::NoAnswer,
                Ok((_, setting)) if service::fence::is_fence(service::fence::setting(&setting)) => MasterCheck::Fenced,
                Ok(_) => MasterCheck::Answers,
            }
        }
    }
}

/// A slave's replication state, with the history the dictator judges it by;
/// `None` when it cannot be reached or read.
pub async fn slave(addr: SocketAddr, credentials: &Credentials) -> Option<SlaveReplication> {
    let timeouts = Timeouts { connect: TIMEOUT, command: TIMEOUT };
    let mut conn = redis_auth::connect(addr, timeouts, credentials).await.ok()?;
    let replication = redis_info::read_replication(&mut conn).await.ok()?;
    Some(SlaveReplication {
        is_master: replication.is_master(),
        upstream: replication.upstream(),
        replid: replication.replid,
        replid2: replication.replid2,
        offset: replication.offset,
        second_offset: replication.second_offset,
    })
}
