//! The revision gate in front of every apply that carries `?revision=N` (the etcd
//! `mod_revision` of the topology the observer read): older than the newest revision
//! accepted for the cluster is refused with 409, so a late request from a slow or
//! deposed observer cannot roll roles back (the rule is `topology::revision`).
//!
//! The newest accepted revision lives in etcd at `/applied/<cluster>` (decimal), so
//! every dictator agrees; it is raised with a compare-and-set transaction. It is
//! raised *before* the apply runs: once a newer topology was admitted, an older one
//! is refused even if the newer apply then failed (the observer retries the newer).
//! The check runs during the dictator's turn for the cluster
//! ([`crate::apply::Dictator::wait_turn`]), held to the end of the apply, so an
//! older request admitted first cannot run after a newer one.
//! Requests without a revision (an operator's) pass untouched: no etcd.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use service::etcd::LazyClient;
use topology::revision::{order, Order, Stale};
use topology::Keys;

/// Why a request with a revision was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(transparent)]
    Stale(#[from] Stale),
    #[error("etcd ({endpoints}) unreachable: {error}")]
    Etcd { endpoints: String, error: etcd_client::Error },
    #[error("etcd holds {value:?} at {key}, not a revision")]
    Invalid { key: String, value: String },
}

pub struct Revisions {
    etcd: Arc<LazyClient>,
    keys: Keys,
}

impl Revisions {
    pub fn new(etcd: Arc<LazyClient>) -> Revisions {
        let keys = etcd.args().keys();
        Revisions { etcd, keys }
    }

    /// Admits an apply of `revision` to `cluster`, recording it unless `dry_run` (a dry
    /// run is checked, never recorded). Call it during the cluster's turn, and keep
    /// the turn until the apply is done.
    pub async fn admit(&self, cluster: &str, revision: Option<i64>, dry_run: bool) -> Result<(), RevisionError> {
        let Some(revision) = revision else { return Ok(()) };
        let result = self.raise(cluster, revision, dry_run).await;
        if let Err(RevisionError::Etcd { .. }) = &result {
            self.etcd.reset().await;
        }
        result
    }

    /// Compares with `/applied/<cluster>` and raises it to `revision` when newer.
    async fn raise(&self, cluster: &str, revision: i64, dry_run: bool) -> Result<(), RevisionError> {
        let key = self.keys.applied(cluster);
        let mut client = self.etcd.client().await.map_err(|e| self.unreachable(e))?;
        loop {
            let got = client.get(key.as_str(), None).await.map_err(|e| self.unreachable(e))?;
            let (applied, mod_revision) = match got.kvs().first() {
                Some(kv) => {
                    let value = String::from_utf8_lossy(kv.value()).into_owned();
                    let applied = value.trim().parse::<i64>().map_err(|_| RevisionError::Invalid { key: key.clone(), value })?;
                    (Some(applied), kv.mod_revision())
                }
                None => (None, 0),
            };
            match order(revision, applied) {
                Order::Older { applied } => {
                    return Err(Stale { cluster: cluster.to_string(), revision, applied }.into());
                }
                Order::Same => return Ok(()),
                Order::Newer if dry_run => return Ok(()),
                Order::Newer => {}
            }
            // Absent keys compare with mod_revision 0.
            let txn = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, mod_revision)])
                .and_then([TxnOp::put(key.as_str(), revision.to_string(), None)]);
            let done = client.txn(txn).await.map_err(|e| self.unreachable(e))?;
            if done.succeeded() {
                tracing::info!(cluster, revision, previous = ?applied, "accepted a newer topology revision");
                return Ok(());
            }
            // Another dictator raised it meanwhile: compare with what it wrote.
        }
    }

    fn unreachable(&self, error: etcd_client::Error) -> RevisionError {
        RevisionError::Etcd { endpoints: self.etcd.endpoints(), error }
    }
}
