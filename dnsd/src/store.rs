//! The etcd side: list `/dns/` and `/nodes/`, then watch both from the listed
//! revision, feeding every change into [`Live`].
//!
//! Any failure (etcd down or restarted, the watch cancelled or compacted away, a
//! broken stream) ends the current round; after a capped exponential back-off the
//! next round reconnects, lists again and watches again. The last zone keeps being
//! served all the while: a DNS answer never depends on etcd being up.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};
use service::backoff::Backoff;
use service::cli::EtcdArgs;
use topology::keys::Key;
use topology::records::{NodeRecord, PublishedTopology};
use topology::Keys;

use crate::live::Live;
use crate::state::{Change, State};
use crate::zone::{Published, Registrations};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Follows etcd until `shutdown` completes. `first_list` (if given) is told once the
/// first list was attempted: `true` when it succeeded, `false` when etcd did not
/// answer (dnsd then serves an empty zone until it does).
pub async fn follow(
    etcd: EtcdArgs,
    live: Arc<Live>,
    shutdown: impl std::future::Future<Output = ()>,
    first_list: Option<tokio::sync::oneshot::Sender<bool>>,
) {
    tokio::select! {
        () = follow_forever(&etcd, &live, first_list) => {}
        () = shutdown => tracing::debug!("etcd follower stopped"),
    }
}

async fn follow_forever(etcd: &EtcdArgs, live: &Live, mut first_list: Option<tokio::sync::oneshot::Sender<bool>>) {
    let keys = etcd.keys();
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    // Log the transitions (lost, still lost, back), not every retry.
    let mut reported = false;
    loop {
        let mut watching = false;
        let result = round(etcd, &keys, live, &mut watching, &mut first_list).await;
        if let Some(first) = first_list.take() {
            let _ = first.send(false);
        }
        if watching {
            backoff.reset();
            reported = false;
        }
        let delay = backoff.next_delay();
        match result {
            Ok(()) => tracing::info!("etcd watch ended; listing again"),
            Err(error) if !reported => {
                reported = true;
                tracing::warn!(
                    error = format!("{error:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "etcd unavailable; serving the last known records meanwhile"
                );
            }
            Err(error) => tracing::debug!(error = format!("{error:#}"), "etcd still unavailable"),
        }
        tokio::time::sleep(delay).await;
    }
}

/// One connect, list, watch cycle. Returns when the watch ends.
async fn round(
    etcd: &EtcdArgs,
    keys: &Keys,
    live: &Live,
    watching: &mut bool,
    first_list: &mut Option<tokio::sync::oneshot::Sender<bool>>,
) -> anyhow::Result<()> {
    let mut client = etcd.connect().await.context("connect to etcd")?;
    let listed = list(&mut client, keys).await?;
    let revision = listed.revision();
    let (registrations, published) = (listed.registrations().len(), listed.published().len());
    let changed = live.relist(listed);
    tracing::info!(revision, registrations, published, changed, "listed etcd; watching /dns/ and /nodes/");
    if let Some(first) = first_list.take() {
        let _ = first.send(true);
    }

    let options = || Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1));
    let mut stream = client.watch(keys.dns_prefix(), options()).await.context("watch /dns/")?;
    stream.watch(keys.nodes_prefix(), options()).await.context("watch /nodes/")?;
    *watching = true;
    loop {
        let Some(response) = stream.message().await.context("etcd watch stream")? else {
            return Ok(());
        };
        if response.canceled() {
            bail!(
                "watch cancelled by etcd (compacted at {}): {}",
                response.compact_revision(),
                response.cancel_reason()
            );
        }
        let changes: Vec<(Change, i64)> = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let change = parse_change(keys, kv, event.event_type() == EventType::Delete)?;
                Some((change, kv.mod_revision()))
            })
            .collect();
        if !changes.is_empty() {
            let count = changes.len();
            let changed = live.apply(changes);
            tracing::debug!(events = count, changed, serial = live.zone().serial(), "applied etcd events");
        }
    }
}

/// Lists both prefixes at one revision.
async fn list(client: &mut etcd_client::Client, keys: &Keys) -> anyhow::Result<State> {
    let dns = client
        .get(keys.dns_prefix(), Some(GetOptions::new().with_prefix()))
        .await
        .context("list /dns/")?;
    let revision = dns.header().map(|h| h.revision()).context("etcd response without a header")?;
    let nodes = client
        .get(keys.nodes_prefix(), Some(GetOptions::new().with_prefix().with_revision(revision)))
        .await
        .context("list /nodes/")?;
    let mut registrations = Registrations::new();
    let mut published = Published::new();
    for kv in dns.kvs().iter().chain(nodes.kvs()) {
        match parse_change(keys, kv, false) {
            Some(Change::Registration { cluster, node, record: Some(record) }) => {
                registrations.insert((cluster, node), record);
            }
            Some(Change::Published { cluster, topology: Some(topology) }) => {
                published.insert(cluster, (topology, kv.mod_revision()));
            }
            _ => {}
        }
    }
    Ok(State::listed(registrations, published, revision))
}

/// The change a key-value (or its deletion) makes. Keys dnsd does not follow are
/// `None`; so are values that are not valid JSON, with a warning: a broken value must
/// not take the other records down with it.
fn parse_change(keys: &Keys, kv: &KeyValue, deleted: bool) -> Option<Change> {
    let key = kv.key_str().ok()?;
    match keys.parse(key)? {
        Key::Node { cluster, node } => {
            let record = if deleted { None } else { Some(parse_value::<NodeRecord>(key, kv.value())?) };
            Some(Change::Registration { cluster, node, record })
        }
        Key::Dns { cluster } => {
            let topology = if deleted { None } else { Some(parse_value::<PublishedTopology>(key, kv.value())?) };
            Some(Change::Published { cluster, topology })
        }
        _ => None,
    }
}

fn parse_value<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(error) => {
            tracing::warn!(key, %error, "ignoring a value that is not the expected JSON");
            None
        }
    }
}
