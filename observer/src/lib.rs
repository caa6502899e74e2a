//! The observer turns what operators and node-agents write into etcd into applied
//! topologies (it replaces the original etcd-trigger).
//!
//! - [`leader`]: etcd leader election among observers; the leader lists and watches
//!   `/config/` and runs one worker per cluster;
//! - [`worker`]: per cluster, reads the newest topology and trigger and, when they
//!   differ from what was last applied, applies it; records `/status/<cluster>`;
//! - [`apply`]: PUT to the dictator, then (only after a 2xx) to dnsd;
//! - [`schedule`]: the pure parts: is applying due, how long to back off;
//! - [`failover`]: the pure parts of automatic failover: is the master dead long
//!   enough, may we act, whom to promote;
//! - [`endpoint`]: dictator/dnsd URLs, whose host may be an SRV name.
//!
//! Applies for one cluster are sequential and coalesce; clusters are independent.

pub mod apply;
pub mod endpoint;
pub mod failover;
pub mod inspect;
pub mod leader;
pub mod schedule;
pub mod worker;
