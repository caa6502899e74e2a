//! The dictator applies a master/slave topology to redis-server instances without
//! losing an acknowledged write, and without applying one that was rejected.
//!
//! One apply (`PUT /master`, `PUT /clusters/{cluster}/master`, or `dictator apply`)
//! flows through the modules in this order:
//!
//! 1. resolve ([`apply`]): every member to one address (IP, A/AAAA, or SRV via
//!    `--nameserver`), giving the [`plan::Wanted`] topology; then take the cluster's lock;
//! 2. [`observe`]: every member in parallel, into one map of
//!    [`observe::Observed`] members, each up (its connection and its
//!    `service::redis_info::Replication`: role, history, offset, keys, fence) or
//!    unreachable (why);
//! 3. [`plan`]: a pure function from (wanted, observed) to ordered steps, or a
//!    [`plan::Refusal`] when promoting would discard acknowledged writes, unless forced;
//!    when it would, and the new master is already a master, [`published`] says
//!    whether clients already moved to it, and a member that holds writes it lacks
//!    is then quarantined (fenced, left out, reported) rather than block the group;
//! 4. [`execute`]: run the steps through those connections, with timeouts: fence the
//!    old master, let the new one catch up, promote, re-point the slaves in parallel,
//!    release, verify, persist; the [`execute::Outcome`] times each step;
//! 5. report ([`apply`]): [`Report`] embeds the outcome with what was asked and
//!    found; a failure is an [`ApplyError`], which carries the report of what was done.
//!
//! Before any of it, an HTTP apply that carries `?revision=N` passes the
//! [`revision`] gate: older than the newest revision accepted for the cluster
//! (kept in etcd) is refused.
//!
//! [`apply::Dictator`] runs that flow, one apply at a time per cluster. [`api`] is the
//! HTTP edge, and the only module that knows status codes; `main.rs` parses flags
//! and calls into it.

pub mod api;
pub mod apply;
pub mod execute;
pub mod observe;
pub mod plan;
pub mod published;
pub mod revision;

pub use apply::{ApplyError, ApplyOptions, Dictator, Report, Settings};
