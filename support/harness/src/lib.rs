//! Test harness: real `etcd`, real `redis-server` and the project's own binaries,
//! each on free loopback ports in its own temporary directory.
//!
//! Every process is killed when its handle is dropped, including while a test
//! panics, and also if the test process itself dies (`PR_SET_PDEATHSIG`), so no
//! test leaves a server behind. When a test panics, each handle prints the tail of
//! its process's log to help tell why.
//!
//! - [`ports`]: loopback ports reserved across concurrent test processes, and a
//!   nameserver address that never answers.
//! - [`process`]: the child-process wrapper all of the above share.
//! - [`etcd`], [`redis`]: the real servers, with kill -9 / restart; etcd also as a
//!   cluster of several members (kill one, find the leader), and with
//!   client TLS and auth ([`etcd::Etcd::start_secure`]), its certificates from [`tls`].
//! - [`bin`]: the project's own binaries (dictator, dnsd, ...).
//! - [`stack`]: the whole system (etcd, redis + node-agent per node, dnsd, dictator,
//!   observer, HAProxy with the repository's config), as an operator runs it.
//! - [`netns`]: simulated hosts in network namespaces, with a data and a control
//!   network whose links can be cut and healed.
//! - [`multihost`]: the whole system (or Redis Sentinel) spread over such hosts.

pub mod bin;
pub mod etcd;
pub mod multihost;
pub mod netns;
pub mod ports;
pub mod process;
pub mod redis;
pub mod stack;
pub mod tls;

pub use bin::{assert_documents_flags, assert_json_errors, binary, put_json, Service};
pub use etcd::Etcd;
pub use ports::{free_port, silent_nameserver};
pub use redis::{Persistence, Redis};

use std::time::{Duration, Instant};

/// Polls `ready` every 20 ms until it returns true or `timeout` passes.
pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Async twin of [`wait_until`], for conditions that need async I/O.
pub async fn wait_until_async<F, Fut>(what: &str, timeout: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// `text` without terminal colour codes (`ESC [ ... m`): the services colour
/// their log fields even into a file.
pub fn without_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
