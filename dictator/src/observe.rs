//! What each member is before planning: up, with its connection and replication
//! facts, or unreachable, with the reason. One map holds both, so the executor acts
//! through exactly the connections the plan was made from.
//!
//! The `INFO` parsing and the reads themselves live in `service::redis_info`, shared
//! with node-agent and the observer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use service::redis_auth::Credentials;

use crate::plan::Wanted;

use service::redis_auth::{connect, Timeouts};
use service::redis_info::{read_replication, Replication};

/// Why a member could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Connect(#[from] service::redis_auth::ConnectError),
    #[error(transparent)]
    Info(#[from] service::redis_info::InfoError),
}

/// One member as observed. `C` is the connection the executor acts through: the
/// planner never looks at it, so its tests use `()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Observed<C = ()> {
    Up {
        #[serde(skip)]
        conn: C,
        #[serde(flatten)]
        replication: Replication,
    },
    /// The reason is reported as it is, so it is kept as text.
    Unreachable { error: String },
}

impl<C> Observed<C> {
    pub fn replication(&self) -> Option<&Replication> {
        match self {
            Observed::Up { replication, .. } => Some(replication),
            Observed::Unreachable { .. } => None,
        }
    }

    pub fn conn(&self) -> Option<&C> {
        match self {
            Observed::Up { conn, .. } => Some(conn),
            Observed::Unreachable { .. } => None,
        }
    }

    /// The facts alone, for a report.
    pub fn facts(&self) -> Observed {
        match self {
            Observed::Up { replication, .. } => Observed::Up { conn: (), replication: replication.clone() },
            Observed::Unreachable { error } => Observed::Unreachable { error: error.clone() },
        }
    }
}

/// Every observed instance by address.
pub type Members = HashMap<SocketAddr, Observed<MultiplexedConnection>>;

/// How long a member the caller found down may take to accept a connection: a
/// live redis on a LAN accepts in well under a millisecond.
pub const DOWN_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);

/// Observes every member in parallel, plus the new master's upstream when that is
/// not a member (the planner must know whether it still takes writes). `down`, a
/// member the caller found down, gets [`DOWN_CONNECT_TIMEOUT`] to connect.
pub async fn observe(wanted: &Wanted, timeouts: Timeouts, credentials: &Credentials, down: Option<SocketAddr>) -> Members {
    let (quick, addrs): (Vec<SocketAddr>, Vec<SocketAddr>) = wanted.members().partition(|a| Some(*a) == down);
    let quick_timeouts = Timeouts { connect: timeouts.connect.min(DOWN_CONNECT_TIMEOUT), ..timeouts };
    let (mut members, quick) =
        futures::join!(observe_all(&addrs, timeouts, credentials), observe_all(&quick, quick_timeouts, credentials));
    members.extend(quick);
    let outside_upstream = members
        .get(&wanted.master)
        .and_then(Observed::replication)
        .and_then(Replication::upstream)
        .filter(|u| !members.contains_key(u));
    if let Some(u) = outside_upstream {
        members.extend(observe_all(&[u], timeouts, credentials).await);
    }
    members
}

async fn observe_all(addrs: &[SocketAddr], timeouts: Timeouts, credentials: &Credentials) -> Members {
    let observed = join_all(addrs.iter().map(|addr| async move {
        let result = async {
            let mut conn = connect(*addr, timeouts, credentials).await?;
            let replication = read_replication(&mut conn).await?;
            Ok::<_, ObserveError>(Observed::Up { conn, replication })
        }
        .await;
        let observed = result.unwrap_or_else(|error| {
            tracing::warn!(%addr, %error, "member unreachable");
            Observed::Unreachable { error: error.to_string() }
        });
        (*addr, observed)
    }))
    .await;
    observed.into_iter().collect()
}
