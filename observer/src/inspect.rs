//! What the observer asks redis directly before failing over: does the master
//! answer, and where do its slaves stand. The only module that talks to redis,
//! through the shared `service::redis_auth` and `service::redis_info`.

use std::net::SocketAddr;
use std::time::Duration;

use service::redis_auth::{self, Credentials, Timeouts};
use service::redis_info;

use crate::failover::{MasterCheck, SlaveReplication};

/// Short: a live redis answers in microseconds, and the worker waits for this
/// while the master is down.
const TIMEOUT: Duration = Duration::from_millis(300);

/// Connects to the master, PINGs it and reads its write fence. Connects by hand,
/// not through `redis_auth::connect`, which does not say whether the port refused.
pub async fn master(addr: SocketAddr, credentials: &Credentials) -> MasterCheck {
    let Ok(client) = credentials.client_for(addr) else { return MasterCheck::NoAnswer };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(TIMEOUT))
        .set_response_timeout(Some(TIMEOUT));
    match client.get_multiplexed_async_connection_with_config(&config).await {
        Err(e) if e.is_connection_refusal() => MasterCheck::Refused,
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
                // `[name, value]`.
                Ok((_, setting)) if setting.get(1).and_then(|v| v.parse().ok()).is_some_and(service::fence::is_fence) => {
                    MasterCheck::Fenced
                }
                Ok(_) => MasterCheck::Answers,
            }
        }
    }
}

/// How much each replica at `addrs` had read from its master
/// (`slave_read_repl_offset`) now and `window` later, on one connection each, read
/// in parallel; a replica that cannot be reached or read either time, or is no
/// replica, is left out.
pub async fn replica_reads(addrs: &[SocketAddr], credentials: &Credentials, window: Duration) -> Vec<(u64, u64)> {
    let timeouts = Timeouts { connect: TIMEOUT, command: TIMEOUT };
    let read = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let text: String = redis::cmd("INFO").arg("replication").query_async(&mut conn).await.ok()?;
            redis_info::Info::parse(&text).field("slave_read_repl_offset").ok()?.parse::<u64>().ok()
        }
    };
    let reads = futures::future::join_all(addrs.iter().map(|addr| async move {
        let mut conn = redis_auth::connect(*addr, timeouts, credentials).await.ok()?;
        let before = read(&mut conn).await?;
        tokio::time::sleep(window).await;
        let after = read(&mut conn).await?;
        Some((before, after))
    }))
    .await;
    reads.into_iter().flatten().collect()
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
