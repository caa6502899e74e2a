//! dnsd's zone, recorded in etcd at `/domain` so that nothing else needs its own copy
//! to agree with: the observer compares its `--domain` with it (and says so loudly
//! when they differ), and `scripts/define-topology.sh` checks node names against it.
//!
//! The first dnsd to start writes it (a create-only transaction); a replica serving
//! another domain logs an error and keeps serving its own: a zone that answers is
//! better than none, but its operator must hear of it.

use std::time::Duration;

use etcd_client::{Compare, CompareOp, Txn, TxnOp};
use service::cli::EtcdArgs;
use service::Shutdown;

/// What this replica learned about `/domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// It was absent and now holds ours, or already held ours.
    Ours,
    /// It holds another domain.
    Other(String),
}

/// Records `domain` at `/domain` unless something is there; retries until etcd answers
/// or `shutdown`.
pub async fn record(etcd: EtcdArgs, domain: String, shutdown: Shutdown) {
    let key = etcd.keys().domain();
    let mut backoff = service::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let attempt = async {
        loop {
            match try_record(&etcd, &key, &domain).await {
                Ok(Recorded::Ours) => {
                    tracing::info!(key, domain, "domain recorded in etcd");
                    return;
                }
                Ok(Recorded::Other(other)) => {
                    tracing::error!(key, stored = other, domain,
                        "etcd says the installation's domain is {other}, but this dnsd serves {domain}: fix --domain, or delete {key} and restart");
                    return;
                }
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::debug!(%error, retry_in_ms = wait.as_millis() as u64, "cannot record the domain yet");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    };
    tokio::select! {
        () = attempt => {}
        () = shutdown.requested() => {}
    }
}

async fn try_record(etcd: &EtcdArgs, key: &str, domain: &str) -> Result<Recorded, etcd_client::Error> {
    let mut client = etcd.connect().await?;
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key, domain, None)])
        .or_else([TxnOp::get(key, None)]);
    let done = client.txn(txn).await?;
    if done.succeeded() {
        return Ok(Recorded::Ours);
    }
    let stored = done.op_responses().into_iter().find_map(|op| match op {
        etcd_client::TxnOpResponse::Get(got) => got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    });
    Ok(match stored {
        Some(stored) if stored.trim() != domain => Recorded::Other(stored.trim().to_string()),
        _ => Recorded::Ours,
    })
}
