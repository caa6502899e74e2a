//! Automatic rebalance (`--rebalance-after-secs`, off by default): when a host
//! that had lost its masters (every registration on it gone or unhealthy) has
//! been back and healthy for that long, the leader runs the planner of
//! `redis-topology rebalance` ([`topology::placement::plan`]) and carries out its
//! moves one group at a time, each a switchover written to etcd like the
//! operator's (only over the topology it read) and applied by that group's worker;
//! the next move waits until the previous one is applied.
//!
//! The pure part is [`Returns`]: which hosts came back and since when, and what
//! to do next ([`Step`]). [`run`] is the leader's loop around it; it ends with
//! the term (the leader drops it), so only the leader moves masters.
//!
//! Hosts back for less than the delay are left out of the plan (neither targets
//! nor counted), so a host that flaps gets nothing. Groups in maintenance are not
//! moved. A move that fails, is applied partially or is not applied within
//! [`APPLY_TIMEOUT`] stops the rebalance until a host comes back again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use service::clusters::Store;
use topology::cluster::{self as model, Outcome};
use topology::placement::{self, Group, Move, Unreachable};
use topology::records::now_ms;

use crate::worker::Context;

/// How often the leader looks.
const TICK: Duration = Duration::from_secs(1);
/// How long one move may take to be applied before the rebalance stops.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The hosts seen, lost and back, between looks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Returns {
    /// Every host ever seen live.
    known: BTreeSet<String>,
    /// Live now, since when (ms since the epoch).
    live_since: BTreeMap<String, u64>,
    /// Seen lost (known, not live) and not back yet.
    lost: BTreeSet<String>,
    /// Came back after being lost; not rebalanced for yet.
    back: BTreeSet<String>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No host came back, or not for long enough.
    Idle,
    /// Move this group's master; run again once it is applied.
    Move(Move),
    /// Every host back has its share: nothing (more) to move.
    Balanced,
    /// No plan reaches the fair share.
    Stuck(Unreachable),
}

impl Returns {
    /// Records the hosts live now (those with a healthy registration).
    pub fn observe(&mut self, live: &BTreeSet<String>, now_ms: u64) {
        for host in self.known.difference(live) {
            self.live_since.remove(host);
            self.back.remove(host);
            self.lost.insert(host.clone());
        }
        for host in live {
            self.live_since.entry(host.clone()).or_insert(now_ms);
            if self.lost.remove(host) {
                self.back.insert(host.clone());
            }
            self.known.insert(host.clone());
        }
    }

    /// Hosts live for at least `after`.
    fn settled(&self, after: Duration, now_ms: u64) -> BTreeSet<String> {
        let after = after.as_millis() as u64;
        self.live_since.iter().filter(|(_, since)| now_ms.saturating_sub(**since) >= after).map(|(h, _)| h.clone()).collect()
    }

    /// What to do about `groups`: nothing until a host that came back has been
    /// live for `after`; then the plan over the hosts live that long, one move
    /// at a time. Once balanced (or stuck), the hosts back are forgotten.
    pub fn step(&mut self, groups: &[Group], after: Duration, now_ms: u64) -> Step {
        let settled = self.settled(after, now_ms);
        if !self.back.iter().any(|h| settled.contains(h)) {
            return Step::Idle;
        }
        match placement::plan(groups, &settled) {
            Ok(plan) => match plan.moves.into_iter().next() {
                Some(first) => Step::Move(first),
                None => {
                    self.back.retain(|h| !settled.contains(h));
                    Step::Balanced
                }
            },
            Err(why) => {
                self.back.retain(|h| !settled.contains(h));
                Step::Stuck(why)
            }
        }
    }

    /// A move failed: give up on the hosts back until one comes back again.
    pub fn give_up(&mut self) {
        self.back.clear();
    }
}

/// A move written and not applied yet.
struct Pending {
    group: String,
    revision: i64,
    since_ms: u64,
}

/// The leader's loop: look every [`TICK`], move one master at a time.
pub async fn run(cx: Arc<Context>, after: Duration) {
    let mut returns = Returns::default();
    let mut pending: Option<Pending> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let mut store = Store { etcd: cx.etcd.clone(), keys: cx.keys.clone() };
        // Topologies and registrations only: every second, the publications and
        // the rounds' histories of every cluster would be read for nothing.
        let states = match store.placement().await {
            Ok(states) => states,
            Err(error) => {
                tracing::warn!(%error, "rebalance: cannot read the clusters");
                continue;
            }
        };
        let now = now_ms();
        returns.observe(&placement::live_hosts(&states), now);
        if let Some(p) = &pending {
            let outcome = match store.status(&p.group).await {
                Ok(status) => status.map(|s| model::outcome(&s, p.revision)),
                Err(error) => {
                    tracing::warn!(cluster = p.group.as_str(), %error, "rebalance: cannot read the move's round");
                    continue;
                }
            };
            match outcome {
                Some(Outcome::Done) => pending = None,
                Some(Outcome::Partial | Outcome::Failed) => {
                    tracing::warn!(cluster = p.group.as_str(), revision = p.revision, ?outcome, "rebalance: the move was not applied cleanly; stopping");
                    returns.give_up();
                    pending = None;
                    continue;
                }
                _ if now.saturating_sub(p.since_ms) > APPLY_TIMEOUT.as_millis() as u64 => {
                    tracing::warn!(cluster = p.group.as_str(), revision = p.revision, "rebalance: the move was not applied in time; stopping");
                    returns.give_up();
                    pending = None;
                    continue;
                }
                _ => continue,
            }
        }
        // A group in maintenance stays where it is (`Group::paused`).
        let groups = placement::groups(&states, &cx.names);
        match returns.step(&groups, after, now) {
            Step::Idle => {}
            Step::Balanced => tracing::info!("rebalance: every live host holds at most its share of masters"),
            Step::Stuck(why) => tracing::warn!(%why, "rebalance: cannot reach the fair share"),
            Step::Move(planned) => {
                let Some(state) = states.iter().find(|s| s.name == planned.group) else { continue };
                match store.switch_over(state, &cx.names, &planned.to).await {
                    Ok((_, revision)) => {
                        tracing::warn!(cluster = planned.group.as_str(), %planned, revision, "rebalance: moving the master");
                        pending = Some(Pending { group: planned.group.clone(), revision, since_ms: now });
                    }
                    Err(error) => {
                        tracing::warn!(cluster = planned.group.as_str(), %planned, %error, "rebalance: cannot write the move; stopping");
                        returns.give_up();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use topology::placement::Seat;

    fn hosts(h: &[&str]) -> BTreeSet<String> {
        h.iter().map(|h| h.to_string()).collect()
    }

    fn group(name: &str, on: &[&str]) -> Group {
        let seat = |h: &str| Seat { node: format!("{name}-{h}"), host: Some(h.into()), eligible: true };
        Group { name: name.into(), master: seat(on[0]), slaves: on[1..].iter().map(|h| seat(h)).collect(), paused: false }
    }

    const AFTER: Duration = Duration::from_secs(10);

    #[test]
    fn nothing_moves_until_a_lost_host_has_been_back_for_the_delay() {
        // h1 lost its master to h2; h2 holds both.
        let groups = [group("g1", &["h2", "h1"]), group("g2", &["h2", "h1"])];
        let mut r = Returns::default();
        r.observe(&hosts(&["h1", "h2"]), 0);
        assert_eq!(r.step(&groups, AFTER, 60_000), Step::Idle, "never lost: an imbalance alone moves nothing");
        r.observe(&hosts(&["h2"]), 61_000);
        assert_eq!(r.step(&groups, AFTER, 61_000), Step::Idle);
        r.observe(&hosts(&["h1", "h2"]), 70_000);
        assert_eq!(r.step(&groups, AFTER, 79_999), Step::Idle, "back, not for long enough");
        let Step::Move(m) = r.step(&groups, AFTER, 80_000) else { panic!("no move") };
        assert_eq!((m.from_host.as_str(), m.to_host.as_str()), ("h2", "h1"));
        // Applied: the next look finds the balance and forgets h1.
        let moved = [group("g1", &["h1", "h2"]), group("g2", &["h2", "h1"])];
        assert_eq!(r.step(&moved, AFTER, 81_000), Step::Balanced);
        assert_eq!(r.step(&groups, AFTER, 82_000), Step::Idle, "rebalanced once per return");
    }

    #[test]
    fn a_host_that_flaps_starts_its_delay_again() {
        let groups = [group("g1", &["h2", "h1"]), group("g2", &["h2", "h1"])];
        let mut r = Returns::default();
        r.observe(&hosts(&["h1", "h2"]), 0);
        r.observe(&hosts(&["h2"]), 1_000);
        r.observe(&hosts(&["h1", "h2"]), 2_000);
        r.observe(&hosts(&["h2"]), 9_000);
        r.observe(&hosts(&["h1", "h2"]), 10_000);
        assert_eq!(r.step(&groups, AFTER, 15_000), Step::Idle);
        assert!(matches!(r.step(&groups, AFTER, 20_000), Step::Move(_)));
    }

    #[test]
    fn hosts_back_too_recently_are_left_out_of_the_plan() {
        // h1 has been back long enough, h3 not: the move goes to h1 only.
        let groups = [group("g1", &["h2", "h3", "h1"]), group("g2", &["h2", "h3", "h1"]), group("g3", &["h2", "h1"])];
        let mut r = Returns::default();
        r.observe(&hosts(&["h1", "h2", "h3"]), 0);
        r.observe(&hosts(&["h2"]), 1_000);
        r.observe(&hosts(&["h1", "h2"]), 2_000);
        r.observe(&hosts(&["h1", "h2", "h3"]), 11_000);
        let Step::Move(m) = r.step(&groups, AFTER, 12_000) else { panic!("no move") };
        assert_eq!(m.to_host, "h1", "{m}");
    }

    #[test]
    fn a_stuck_plan_is_reported_once_and_a_failed_move_gives_up() {
        // Both groups' slaves are on h2, which died: h1 came back, nothing can move to it.
        let groups = [group("g1", &["h3", "h2"]), group("g2", &["h3", "h2"])];
        let mut r = Returns::default();
        r.observe(&hosts(&["h1", "h2", "h3"]), 0);
        r.observe(&hosts(&["h3"]), 1_000);
        r.observe(&hosts(&["h1", "h3"]), 2_000);
        assert!(matches!(r.step(&groups, AFTER, 12_000), Step::Stuck(_)));
        assert_eq!(r.step(&groups, AFTER, 13_000), Step::Idle);
        let groups = [group("g1", &["h3", "h1"]), group("g2", &["h3", "h1"])];
        r.observe(&hosts(&["h3"]), 14_000);
        r.observe(&hosts(&["h1", "h3"]), 15_000);
        assert!(matches!(r.step(&groups, AFTER, 25_000), Step::Move(_)));
        r.give_up();
        assert_eq!(r.step(&groups, AFTER, 26_000), Step::Idle);
    }
}
