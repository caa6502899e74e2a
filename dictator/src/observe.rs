//! What each member is, as observed before planning: up with its replication facts,
//! or unreachable with the reason.
//!
//! The `INFO` parsing and the reads themselves live in `service::redis_info`, shared
//! with node-agent and the observer.

use serde::Serialize;

// The observer still imports these from here; they move to `service` at its next change.
pub use service::redis_auth::{connect, Timeouts};
pub use service::redis_info::{read_offset, read_replication, Replication, ReplicationRole};
pub use topology::FENCE_MIN_REPLICAS;

/// Why a member could not be observed.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    #[error(transparent)]
    Connect(#[from] service::redis_auth::ConnectError),
    #[error(transparent)]
    Info(#[from] service::redis_info::InfoError),
}

/// One member as observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Observed {
    Up(Replication),
    Unreachable { error: String },
}
