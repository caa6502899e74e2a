//! The agent's decisions, without I/O: from the previous state, one probe result and
//! the time, what the registration in etcd must say and whether the cluster's
//! topology must be re-applied.
//!
//! Rules:
//! - every probe yields a registration to write (`updated_ms` is refreshed even while
//!   redis is down: the agent itself is alive), until redis has been down for longer
//!   than the grace period; then the registration is removed;
//! - a failed probe marks the registration unhealthy at once (role `unknown`, the
//!   last known run_id and offset kept for the reader's information);
//! - a trigger is asked for when redis (re)starts: the first contact after the agent
//!   started, a new `run_id` (redis cannot restart and keep its run_id), or a return
//!   after the registration was removed (the cluster may have failed over meanwhile,
//!   so the returning instance must be told its place). A short outage that ends with
//!   the same run_id is a network blip or a pause, and asks for nothing.

use std::fmt;
use std::time::{Duration, Instant};

use topology::records::{NodeRecord, Role};

/// What the probe saw of a reachable redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisState {
    pub run_id: String,
    pub role: Role,
    /// `master_repl_offset` on a master, `slave_repl_offset` on a replica.
    pub offset: u64,
    /// A replica's `master_host:master_port`: the observer compares it with the
    /// topology, so a replica following the wrong master is seen too.
    pub upstream: Option<String>,
    /// The write fence is set: it takes no writes.
    pub fenced: bool,
    /// A replica whose master did not answer a PING from this host.
    pub upstream_down: bool,
}

/// One probe's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Up(RedisState),
    /// Unreachable, not answering within the timeout, or refusing us (AUTH).
    Down { error: String },
}

/// What `/nodes/<cluster>/<node>` must hold after this probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    Put(NodeRecord),
    /// Redis has been down longer than the grace period: no registration.
    Absent,
}

/// Why a trigger is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerReason {
    /// The first successful probe since the agent started.
    FirstContact,
    /// Redis answers with a different run_id: it restarted or was replaced.
    Restarted { previous_run_id: String },
    /// Redis is back after its registration had been removed.
    Rejoined,
}

impl fmt::Display for TriggerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TriggerReason::FirstContact => write!(f, "first contact with redis since the agent started"),
            TriggerReason::Restarted { previous_run_id } => {
                write!(f, "redis restarted (run_id was {previous_run_id})")
            }
            TriggerReason::Rejoined => write!(f, "redis is back after its registration was removed"),
        }
    }
}

/// A change worth a log line; steady ticks have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// First successful probe.
    Contacted { run_id: String, role: Role },
    /// Answering again after failed probes.
    Recovered { run_id: String, down_for: Duration },
    /// The first failed probe after success (or at start).
    Unhealthy { error: String },
    /// Down for longer than the grace period.
    Removed { down_for: Duration },
    /// The replication role changed (e.g. promoted or demoted by the dictator).
    RoleChanged { from: Role, to: Role },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Contacted { run_id, role } => write!(f, "redis answers as {} (run_id {run_id})", role_name(*role)),
            Event::Recovered { run_id, down_for } => {
                write!(f, "redis answers again after {} ms (run_id {run_id})", down_for.as_millis())
            }
            Event::Unhealthy { error } => write!(f, "redis unhealthy: {error}"),
            Event::Removed { down_for } => write!(
                f,
                "redis down for {} ms, longer than the grace period: removing the registration",
                down_for.as_millis()
            ),
            Event::RoleChanged { from, to } => write!(f, "role changed from {} to {}", role_name(*from), role_name(*to)),
        }
    }
}

/// The lowercase name used in INFO and in the registration.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Master => "master",
        Role::Slave => "slave",
        Role::Unknown => "unknown",
    }
}

/// What the agent must do after one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub registration: Registration,
    pub trigger: Option<TriggerReason>,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// No probe yet.
    Starting,
    Up,
    /// Failing since `since`; `removed` once past the grace period.
    Down { since: Instant, removed: bool },
}

/// The state machine. Feed it every probe in order with [`Tracker::observe`].
#[derive(Debug, Clone)]
pub struct Tracker {
    address: String,
    port: u16,
    grace: Duration,
    phase: Phase,
    /// The last successful probe, kept through outages.
    last: Option<RedisState>,
    /// The machine redis runs on, registered for placement.
    host: Option<String>,
}

impl Tracker {
    /// `address`/`port` are what the registration advertises; `grace` is how long
    /// redis may stay down before the registration is removed.
    pub fn new(address: impl Into<String>, port: u16, grace: Duration) -> Tracker {
        Tracker { address: address.into(), port, grace, phase: Phase::Starting, last: None, host: None }
    }

    /// Registers `host` as the machine redis runs on.
    pub fn on_host(self, host: impl Into<String>) -> Tracker {
        Tracker { host: Some(host.into()), ..self }
    }

    /// Whether the last probe succeeded.
    pub fn is_healthy(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Takes one probe taken at `now` (monotonic) and `wall_ms` (Unix epoch ms, for
    /// `updated_ms`) and says what to write.
    pub fn observe(&mut self, probe: Probe, now: Instant, wall_ms: u64) -> Decision {
        match probe {
            Probe::Up(state) => self.up(state, now, wall_ms),
            Probe::Down { error } => self.down(error, now, wall_ms),
        }
    }

    fn up(&mut self, state: RedisState, now: Instant, wall_ms: u64) -> Decision {
        let mut events = Vec::new();
        let trigger = match (&self.last, &self.phase) {
            (None, _) => Some(TriggerReason::FirstContact),
            (Some(prev), _) if prev.run_id != state.run_id => {
                Some(TriggerReason::Restarted { previous_run_id: prev.run_id.clone() })
            }
            (Some(_), Phase::Down { removed: true, .. }) => Some(TriggerReason::Rejoined),
            _ => None,
        };
        match (&self.phase, &self.last) {
            (Phase::Up, _) => {}
            (Phase::Down { since, .. }, Some(_)) => events.push(Event::Recovered {
                run_id: state.run_id.clone(),
                down_for: now.saturating_duration_since(*since),
            }),
            (Phase::Starting, _) | (Phase::Down { .. }, None) => {
                events.push(Event::Contacted { run_id: state.run_id.clone(), role: state.role })
            }
        }
        if let Some(from) = self.last.as_ref().map(|prev| prev.role).filter(|role| *role != state.role) {
            events.push(Event::RoleChanged { from, to: state.role });
        }
        let record = self.record(&state, true, wall_ms);
        self.phase = Phase::Up;
        self.last = Some(state);
        Decision { registration: Registration::Put(record), trigger, events }
    }

    fn down(&mut self, error: String, now: Instant, wall_ms: u64) -> Decision {
        let mut events = Vec::new();
        let (since, removed) = match self.phase {
            Phase::Starting | Phase::Up => {
                events.push(Event::Unhealthy { error });
                (now, false)
            }
            Phase::Down { since, removed } => (since, removed),
        };
        let down_for = now.saturating_duration_since(since);
        let remove = removed || down_for > self.grace;
        if remove && !removed {
            events.push(Event::Removed { down_for });
        }
        self.phase = Phase::Down { since, removed: remove };
        let registration = if remove {
            Registration::Absent
        } else {
            let unknown = RedisState {
                role: Role::Unknown,
                upstream: None,
                ..self.last.clone().unwrap_or(RedisState { run_id: String::new(), role: Role::Unknown, offset: 0, upstream: None, fenced: false, upstream_down: false })
            };
            Registration::Put(self.record(&unknown, false, wall_ms))
        };
        Decision { registration, trigger: None, events }
    }

    fn record(&self, state: &RedisState, healthy: bool, wall_ms: u64) -> NodeRecord {
        NodeRecord {
            address: self.address.clone(),
            port: self.port,
            role: state.role,
            repl_offset: state.offset,
            run_id: state.run_id.clone(),
            healthy,
            updated_ms: wall_ms,
            upstream: state.upstream.clone(),
            fenced: state.fenced,
            upstream_down: state.upstream_down,
            host: self.host.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn up(run_id: &str, role: Role, offset: u64) -> Probe {
        let upstream = (role == Role::Slave).then(|| "10.0.0.9:6379".to_string());
        Probe::Up(RedisState { run_id: run_id.into(), role, offset, upstream, fenced: false, upstream_down: false })
    }

    fn down() -> Probe {
        Probe::Down { error: "connection refused".into() }
    }

    /// A tracker and a clock: `at(ms)` is `ms` after the start.
    fn tracker() -> (Tracker, impl Fn(u64) -> Instant) {
        let t0 = Instant::now();
        (Tracker::new("10.0.0.1", 6380, GRACE), move |ms| t0 + Duration::from_millis(ms))
    }

    fn put(d: &Decision) -> &NodeRecord {
        match &d.registration {
            Registration::Put(r) => r,
            Registration::Absent => panic!("expected a registration, got {d:?}"),
        }
    }

    #[test]
    fn a_slave_registers_its_upstream_and_a_down_one_none() {
        let (mut t, at) = tracker();
        let d = t.observe(up("aaa", Role::Slave, 42), at(0), 1000);
        assert_eq!(put(&d).upstream.as_deref(), Some("10.0.0.9:6379"));
        let d = t.observe(down(), at(250), 1250);
        assert_eq!((put(&d).role, put(&d).upstream.as_deref()), (Role::Unknown, None), "nothing known while down");
        // Promoted by hand, same run_id: no trigger, but the registration says so.
        let d = t.observe(up("aaa", Role::Master, 50), at(500), 1500);
        assert_eq!((put(&d).role, put(&d).upstream.as_deref(), &d.trigger), (Role::Master, None, &None));
    }

    #[test]
    fn first_contact_registers_healthy_and_triggers() {
        let (mut t, at) = tracker();
        let d = t.observe(up("aaa", Role::Master, 42), at(0), 1000);
        assert_eq!(
            put(&d),
            &NodeRecord {
                address: "10.0.0.1".into(),
                port: 6380,
                role: Role::Master,
                repl_offset: 42,
                run_id: "aaa".into(),
                healthy: true,
                updated_ms: 1000,
                upstream: None,
                fenced: false,
                upstream_down: false,
                host: None,
            }
        );
        assert_eq!(d.trigger, Some(TriggerReason::FirstContact));
        assert_eq!(d.events, vec![Event::Contacted { run_id: "aaa".into(), role: Role::Master }]);
        assert!(t.is_healthy());
    }

    #[test]
    fn steady_state_refreshes_without_trigger_or_events() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Slave, 1), at(0), 1000);
        for i in 1..20u64 {
            let d = t.observe(up("aaa", Role::Slave, 1 + i * 10), at(i * 250), 1000 + i * 250);
            assert_eq!(d.trigger, None);
            assert!(d.events.is_empty(), "{d:?}");
            let r = put(&d);
            assert_eq!((r.healthy, r.repl_offset, r.updated_ms), (true, 1 + i * 10, 1000 + i * 250));
        }
    }

    #[test]
    fn a_failed_probe_marks_unhealthy_at_once_keeping_the_last_facts() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 99), at(0), 1000);
        let d = t.observe(down(), at(250), 1250);
        let r = put(&d);
        assert!(!r.healthy);
        assert_eq!(r.role, Role::Unknown);
        assert_eq!((r.run_id.as_str(), r.repl_offset, r.updated_ms), ("aaa", 99, 1250));
        assert_eq!(d.trigger, None);
        assert_eq!(d.events, vec![Event::Unhealthy { error: "connection refused".into() }]);
        assert!(!t.is_healthy());
        // Staying down within the grace period: still registered, refreshed, quiet.
        let d = t.observe(down(), at(10_000), 10_000);
        assert_eq!(put(&d).updated_ms, 10_000);
        assert!(!put(&d).healthy);
        assert!(d.events.is_empty());
    }

    #[test]
    fn down_longer_than_the_grace_period_removes_the_registration_once() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 0), at(0), 0);
        t.observe(down(), at(1000), 0);
        // Exactly the grace period is not longer than it.
        assert!(matches!(t.observe(down(), at(1000 + 30_000), 0).registration, Registration::Put(_)));
        let d = t.observe(down(), at(1000 + 30_001), 0);
        assert_eq!(d.registration, Registration::Absent);
        assert_eq!(d.events, vec![Event::Removed { down_for: Duration::from_millis(30_001) }]);
        let d = t.observe(down(), at(60_000), 0);
        assert_eq!(d.registration, Registration::Absent);
        assert!(d.events.is_empty(), "removal is logged once");
    }

    #[test]
    fn back_with_a_new_run_id_is_a_restart() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 500), at(0), 0);
        t.observe(down(), at(250), 0);
        let d = t.observe(up("bbb", Role::Master, 0), at(2000), 2000);
        assert_eq!(d.trigger, Some(TriggerReason::Restarted { previous_run_id: "aaa".into() }));
        assert_eq!(d.events, vec![Event::Recovered { run_id: "bbb".into(), down_for: Duration::from_millis(1750) }]);
        let r = put(&d);
        assert!(r.healthy);
        assert_eq!((r.run_id.as_str(), r.repl_offset), ("bbb", 0));
    }

    #[test]
    fn a_restart_between_two_probes_is_still_seen() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Slave, 500), at(0), 0);
        let d = t.observe(up("bbb", Role::Master, 0), at(250), 0);
        assert_eq!(d.trigger, Some(TriggerReason::Restarted { previous_run_id: "aaa".into() }));
        assert_eq!(d.events, vec![Event::RoleChanged { from: Role::Slave, to: Role::Master }]);
    }

    #[test]
    fn back_with_the_same_run_id_is_a_blip() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Slave, 5), at(0), 0);
        t.observe(down(), at(250), 0);
        t.observe(down(), at(5000), 0);
        let d = t.observe(up("aaa", Role::Slave, 7), at(5250), 5250);
        assert_eq!(d.trigger, None);
        assert_eq!(d.events, vec![Event::Recovered { run_id: "aaa".into(), down_for: Duration::from_millis(5000) }]);
        assert!(put(&d).healthy);
    }

    #[test]
    fn back_after_removal_rejoins_with_a_trigger_even_with_the_same_run_id() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 5), at(0), 0);
        t.observe(down(), at(250), 0);
        assert_eq!(t.observe(down(), at(40_000), 0).registration, Registration::Absent);
        let d = t.observe(up("aaa", Role::Master, 5), at(40_250), 40_250);
        assert_eq!(d.trigger, Some(TriggerReason::Rejoined));
        assert!(put(&d).healthy);
        // A new run_id after removal is reported as the restart it is.
        t.observe(down(), at(41_000), 0);
        t.observe(down(), at(80_000), 0);
        let d = t.observe(up("ccc", Role::Master, 0), at(80_250), 0);
        assert_eq!(d.trigger, Some(TriggerReason::Restarted { previous_run_id: "aaa".into() }));
    }

    #[test]
    fn down_from_the_start_registers_unhealthy_then_first_contact_triggers() {
        let (mut t, at) = tracker();
        let d = t.observe(down(), at(0), 7);
        let r = put(&d);
        assert_eq!(
            (r.healthy, r.role, r.run_id.as_str(), r.repl_offset, r.updated_ms),
            (false, Role::Unknown, "", 0, 7)
        );
        assert_eq!(d.events, vec![Event::Unhealthy { error: "connection refused".into() }]);
        let d = t.observe(up("aaa", Role::Slave, 3), at(500), 0);
        assert_eq!(d.trigger, Some(TriggerReason::FirstContact));
        assert_eq!(d.events, vec![Event::Contacted { run_id: "aaa".into(), role: Role::Slave }]);
    }

    #[test]
    fn never_reached_within_grace_is_removed_and_first_contact_still_triggers() {
        let (mut t, at) = tracker();
        t.observe(down(), at(0), 0);
        assert_eq!(t.observe(down(), at(31_000), 0).registration, Registration::Absent);
        let d = t.observe(up("aaa", Role::Master, 0), at(31_250), 0);
        assert_eq!(d.trigger, Some(TriggerReason::FirstContact));
        assert!(put(&d).healthy);
    }

    #[test]
    fn the_grace_period_restarts_with_each_outage() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 0), at(0), 0);
        t.observe(down(), at(1000), 0);
        t.observe(up("aaa", Role::Master, 0), at(29_000), 0);
        t.observe(down(), at(29_250), 0);
        // 31 s after the first outage began, but only 1.75 s into the second.
        assert!(matches!(t.observe(down(), at(31_000), 0).registration, Registration::Put(_)));
    }

    #[test]
    fn role_changes_are_events_without_trigger() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 10), at(0), 0);
        let d = t.observe(up("aaa", Role::Slave, 10), at(250), 0);
        assert_eq!(d.trigger, None);
        assert_eq!(d.events, vec![Event::RoleChanged { from: Role::Master, to: Role::Slave }]);
        assert_eq!(put(&d).role, Role::Slave);
    }

    #[test]
    fn the_clock_going_backwards_does_not_panic_or_remove() {
        let (mut t, at) = tracker();
        t.observe(up("aaa", Role::Master, 0), at(0), 0);
        t.observe(down(), at(5000), 0);
        assert!(matches!(t.observe(down(), at(1000), 0).registration, Registration::Put(_)));
    }

    #[test]
    fn events_and_reasons_read_as_sentences() {
        let e = Event::Unhealthy { error: "timed out after 250 ms".into() };
        assert_eq!(e.to_string(), "redis unhealthy: timed out after 250 ms");
        let r = TriggerReason::Restarted { previous_run_id: "aaa".into() };
        assert_eq!(r.to_string(), "redis restarted (run_id was aaa)");
        assert_eq!(
            Event::RoleChanged { from: Role::Master, to: Role::Slave }.to_string(),
            "role changed from master to slave"
        );
    }
}
