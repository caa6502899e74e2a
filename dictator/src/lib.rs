//! The dictator applies a master/slave topology to redis-server instances without
//! losing an acknowledged write, and without applying one that errored.
//!
//! Flow of one apply (`PUT /master`, `PUT /clusters/{cluster}/master`, or the
//! `dictator apply` command):
//!
//! 1. [`apply`]: resolve every member (IP, A/AAAA or SRV via `--nameserver`), take the
//!    cluster's lock, and [`observe`] every instance (role, history, offset, keys, fence);
//! 2. [`plan`]: a pure function from (wanted, observed) to ordered steps, or a refusal
//!    when promoting would discard acknowledged writes (409 unless `force`);
//! 3. [`execute`]: run the steps with timeouts: fence the old master, let the new one
//!    catch up, promote, re-point the slaves in parallel, release, verify, persist;
//! 4. report each step with its duration and the write pause clients saw.
//!
//! [`api`] is the HTTP surface around [`apply::Dictator`].

pub mod api;
pub mod apply;
pub mod execute;
pub mod observe;
pub mod plan;

pub use apply::{ApplyError, ApplyOptions, Dictator, Report, Settings};
