//! Plumbing shared by every redis-topology service, so each `main.rs` stays thin:
//!
//! - [`auth`]: bearer tokens on every HTTP API (`--api-token-file`) and the audit log
//!   of state-changing requests;
//! - [`backoff`]: capped exponential backoff for reconnection loops;
//! - [`clusters`]: every cluster's keys read from etcd, and the operator's writes
//!   (`redis-topology`, the observer's status page);
//! - [`etcd`]: the list-then-watch loop and the kept-alive lease every service
//!   holds etcd with;
//! - [`cli`]: the common flags (`--etcd-endpoints`, `--etcd-prefix`, etcd TLS and user,
//!   `--log-format`) with their environment variables, connecting to etcd, and logging set-up;
//! - [`env`]: the `REDIS_TOPOLOGY_` prefix of every environment variable, the table of
//!   the names before it, the warning when one is still set, and rewriting env files;
//! - [`http`]: the JSON error type every API returns, `/healthz`, JSON 404/405 fallbacks and
//!   serving with graceful shutdown, the listener's flags (`HttpArgs`) and limits;
//! - [`tls`]: rustls for the HTTP listeners (`--tls-cert`, mTLS) and their clients;
//! - [`fence`]: the write fence on a master, set the same way by the dictator and
//!   by a node-agent cut off from etcd;
//! - [`metrics`]: Prometheus `GET /metrics` from the `metrics` facade;
//! - [`redis_auth`]: redis AUTH (`--redis-user`, `--redis-password-file`) for every
//!   service that talks to redis, and connecting with it within timeouts;
//! - [`redis_info`]: what an instance says in `INFO` (role, upstream, replication
//!   history and offset, keys, run_id), parsed once for every service;
//! - [`shutdown`]: the one [`Shutdown`] handle every task gets, triggered by
//!   SIGTERM or SIGINT;
//! - [`secret`]: one-line secrets read from files (passwords), never printed;
//! - [`resolve`]: turning topology members (IP, A/AAAA name or SRV name) into socket
//!   addresses through a configurable nameserver (dnsd);
//! - [`systemd`]: `Type=notify` readiness, the watchdog and `STOPPING=1` (sd_notify),
//!   all no-ops when not started by systemd.

pub mod auth;
pub mod backoff;
pub mod cli;
pub mod env;
pub mod clusters;
pub mod etcd;
pub mod fence;
pub mod http;
pub mod metrics;
pub mod redis_auth;
pub mod redis_info;
pub mod resolve;
pub mod secret;
pub mod shutdown;
pub mod systemd;
pub mod tls;

pub use http::ApiError;
pub use shutdown::Shutdown;
