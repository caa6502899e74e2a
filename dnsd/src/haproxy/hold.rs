//! The hold: the moment `/config/<cluster>/topology` names another master than the
//! published one, the write slot is taken out of service (`state maint`), before
//! the dictator fences the old master. A writer whose write the fence refuses then
//! reconnects into HAProxy's wait (`wait-for-server.lua`) instead of onto the fenced
//! master again, and is let through the moment the push readies the new one: one
//! error per move and connection instead of one per retry.
//!
//! Only a change of the desired topology starts a hold (not a listing: after a
//! failover the published master may differ from the configured one for good), and
//! a hold lapses after [`HOLD_MAX`] whatever happens: a move the dictator refuses
//! leaves the old master in service again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use etcd_client::{Event, EventType, KeyValue};
use service::cli::EtcdArgs;
use service::etcd::{FollowPolicy, Follower};
use service::Shutdown;
use topology::{Names, Topology};

use super::address_of;
use crate::publish;
use crate::state::Records;

/// Longest a hold keeps the write slot out of service without the move being
/// published. Below the Lua wait's limit, so a held writer is let through rather
/// than refused when a move does not happen.
pub const HOLD_MAX: Duration = Duration::from_millis(1500);

/// A desired topology, and when its change was seen.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub topology: Topology,
    pub seen: Instant,
}

/// The master to hold for at `now`: the desired one, while it is not the published
/// master and the hold has not lapsed.
pub fn holding(desired: Option<SocketAddr>, published: Option<SocketAddr>, seen: Instant, now: Instant) -> Option<SocketAddr> {
    let desired = desired?;
    (Some(desired) != published && now.saturating_duration_since(seen) < HOLD_MAX).then_some(desired)
}

/// The address the desired topology's master would be published at (as `PUT /dns`
/// would resolve it), or `None` when it cannot be resolved or has no IP address.
pub fn desired_master(records: &Records, names: &Names, cluster: &str, topology: &Topology) -> Option<SocketAddr> {
    let registrations: BTreeMap<String, _> = records
        .registrations()
        .iter()
        .filter(|((c, _), _)| c == cluster)
        .map(|((_, node), record)| (node.clone(), record.clone()))
        .collect();
    let previous = records.published().get(cluster).map(|(t, _)| t);
    let resolved = publish::resolve(names, cluster, topology, &registrations, previous).ok()?;
    address_of(records, cluster, &resolved.master)
}

/// Follows `/config/<cluster>/topology` until `shutdown`, sending each change.
pub async fn follow(
    etcd: EtcdArgs,
    cluster: String,
    desired: tokio::sync::watch::Sender<Option<Desired>>,
    shutdown: Shutdown,
) {
    let key = etcd.keys().topology(&cluster);
    let mut follower = DesiredFollower { key: key.clone(), desired };
    let policy = FollowPolicy::default();
    let keys = [key];
    tokio::select! {
        () = service::etcd::follow(|| etcd.connect(), &keys, &policy, &mut follower) => {}
        () = shutdown.requested() => {}
    }
}

struct DesiredFollower {
    key: String,
    desired: tokio::sync::watch::Sender<Option<Desired>>,
}

impl Follower for DesiredFollower {
    fn listed(&mut self, _revision: i64, _kvs: &[KeyValue]) {}

    fn changed(&mut self, events: &[Event]) {
        let latest = events
            .iter()
            .filter(|e| e.event_type() == EventType::Put)
            .filter_map(|e| e.kv())
            .rfind(|kv| kv.key() == self.key.as_bytes());
        if let Some(kv) = latest {
            match Topology::from_json(kv.value()) {
                Ok(topology) => {
                    self.desired.send_replace(Some(Desired { topology, seen: Instant::now() }));
                }
                Err(error) => tracing::debug!(key = self.key, %error, "desired topology not valid; no hold"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_lasts_while_the_move_is_not_published_and_not_lapsed() {
        let (a, b): (SocketAddr, SocketAddr) = (([10, 0, 0, 1], 6379).into(), ([10, 0, 0, 2], 6379).into());
        let seen = Instant::now();
        assert_eq!(holding(Some(b), Some(a), seen, seen), Some(b), "a move starts");
        assert_eq!(holding(Some(b), Some(a), seen, seen + HOLD_MAX / 2), Some(b));
        assert_eq!(holding(Some(b), Some(a), seen, seen + HOLD_MAX), None, "lapsed");
        assert_eq!(holding(Some(b), Some(b), seen, seen), None, "published");
        assert_eq!(holding(Some(a), Some(a), seen, seen), None, "only the slaves changed");
        assert_eq!(holding(None, Some(a), seen, seen), None, "no address for the desired master");
        assert_eq!(holding(Some(b), None, seen, seen), Some(b), "nothing published yet");
        assert_eq!(holding(Some(b), Some(a), seen + Duration::from_secs(1), seen), Some(b), "a clock read before the change");
    }
}
