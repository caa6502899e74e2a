//! The write fence, set the same way by whoever sets it: the dictator demoting a
//! master, or a node-agent cut off from etcd. It is `min-replicas-to-write` of
//! [`FENCE_MIN_REPLICAS`] or more, which redis checks before it runs a write, so
//! every write fails at once with `NOREPLICAS`. It is set before the offset is
//! read, then raised to the value that records that offset
//! ([`topology::history::fence_value`]): no write is accepted after the first step,
//! so that offset is where the master's writes end.

use redis::aio::MultiplexedConnection;
use topology::history::fence_value;
use topology::FENCE_MIN_REPLICAS;

use crate::redis_info::{Info, InfoError};

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Info(#[from] InfoError),
}

/// Fences the instance behind `conn` and returns the offset it records. `first`
/// runs in the same round trip, before the fence (the dictator's `CLIENT PAUSE`).
/// `max_lag` is set as `min-replicas-max-lag` first when given: redis ignores
/// `min-replicas-to-write` while that is 0.
pub async fn set(conn: &mut MultiplexedConnection, mut first: redis::Pipeline, max_lag: Option<u32>) -> Result<u64, FenceError> {
    first.cmd("CONFIG").arg("SET").arg("min-replicas-to-write").arg(FENCE_MIN_REPLICAS).ignore();
    if let Some(lag) = max_lag {
        first.cmd("CONFIG").arg("SET").arg("min-replicas-max-lag").arg(lag.max(1)).ignore();
    }
    first.cmd("INFO").arg("replication");
    let (info,): (String,) = first.query_async(conn).await?;
    let point = Info::parse(&info).applied_offset()?;
    redis::cmd("CONFIG").arg("SET").arg("min-replicas-to-write").arg(fence_value(point)).query_async::<()>(conn).await?;
    Ok(point)
}

/// `min-replicas-to-write` from the reply to `CONFIG GET min-replicas-to-write`
/// (`[name, value]`); 0, no fence, for any other reply.
pub fn setting(config_get_reply: &[String]) -> u32 {
    config_get_reply.get(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Whether `min-replicas-to-write` is a fence rather than a durability setting.
pub fn is_fence(min_replicas_to_write: u32) -> bool {
    min_replicas_to_write >= FENCE_MIN_REPLICAS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_is_the_value_of_a_name_value_reply() {
        let reply = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(setting(&reply(&["min-replicas-to-write", "1000017"])), 1_000_017);
        assert!(is_fence(setting(&reply(&["min-replicas-to-write", "1000017"]))));
        assert_eq!(setting(&reply(&["min-replicas-to-write", "1"])), 1);
        assert_eq!(setting(&reply(&[])), 0, "no such setting");
        assert_eq!(setting(&reply(&["min-replicas-to-write", "x"])), 0);
    }
}
