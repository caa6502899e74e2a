//! The observer turns what operators and node-agents write into etcd into applied
//! topologies (it replaces the original etcd-trigger), and fails over a dead master.
//!
//! Modules, I/O shell first, then the pure core:
//! - [`leader`]: etcd leader election among observers; the leader lists and watches
//!   `/config/` and `/nodes/` and runs one worker per cluster, waking it on every
//!   change; it stops them as soon as its lease can no longer be counted on;
//! - [`worker`]: per cluster, a [`worker::Reconciler`]: each pass reads etcd,
//!   applies the desired topology when it is new or when members' registered roles
//!   diverged from it, records `/status/<cluster>`, looks at the master, and
//!   returns when to look again;
//! - [`apply`]: PUT to the dictator, then (only after a 2xx) to dnsd;
//! - [`inspect`]: the only code that talks to redis: does the master answer, where
//!   do the slaves stand;
//! - [`rebalance`]: with `--rebalance-after-secs`, the leader moves masters
//!   back to a host that returned, one group at a time, by `topology::placement`;
//! - [`domain`]: checks `--domain` against the zone dnsd recorded, loudly;
//! - [`endpoint`]: dictator/dnsd URLs, whose host may be an SRV name;
//! - [`page`]: the status page (`GET /`), rendered from etcd on each load;
//! - [`schedule`] (pure): is applying due (new in etcd, or roles diverged), how a
//!   failure is retried (backoff, or only on a change), and [`schedule::Action`],
//!   when to look again;
//! - [`failover`] (pure): every failover rule: how long the master must stay down,
//!   holds, the PING veto, which slaves are eligible, whom to promote (by the
//!   dictator's own history rule, then the host with the fewest masters), and
//!   what follows when the dictator refuses.
//!
//! Flow: etcd change → leader wakes the cluster's worker → `reconcile` reads the
//! topology, trigger, maintenance flag and registrations → if the topology or
//! trigger is new, [`apply::Targets::apply_and_publish`] → `/status/<cluster>` →
//! with the master down, [`inspect`] gathers facts and [`failover`] decides; a
//! failover writes a new topology to etcd, which the next pass applies; if the
//! dictator refuses its candidate, that pass writes the next one, or the topology
//! from before the failover.
//!
//! Passes for one cluster are sequential and coalesce; clusters are independent.

pub mod apply;
pub mod domain;
pub mod endpoint;
pub mod failover;
pub mod inspect;
pub mod leader;
pub mod page;
pub mod rebalance;
pub mod schedule;
pub mod worker;
