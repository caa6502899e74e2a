//! node-agent runs beside one redis-server. It registers the instance in etcd
//! under a lease, keeps its health, role, replication offset and run_id fresh,
//! and writes the cluster's topology trigger when redis (re)starts, so that the
//! observer re-applies the topology and a fresh or replaced instance joins as a
//! slave. It replaces the registrator and the `ExecStartPost` trigger of the
//! original design.
//!
//! One agent may watch several redis-servers of its host (`--instance`,
//! `--instances-file`; [`config::Instance`]), each registered as its own node:
//! each has its own probe loop, tracker, self-fence and role checks, and the
//! registry writes them all under one lease, so the agent dying drops them all
//! while one redis dying marks only its own registration unhealthy.
//!
//! Flow, every `--interval`, for each instance:
//!
//! 1. [`probe`]: `PING` and `INFO` within `--redis-timeout-ms` (AUTH as configured);
//! 2. [`tracker`]: a pure state machine turns the probe into the registration to
//!    write (healthy, unhealthy, or removed after `--down-grace-secs`) and says
//!    whether redis (re)started, which asks for a trigger;
//! 3. [`registry`]: puts the registration at `/nodes/<cluster>/<node>` under the
//!    agent's lease, kept alive in the background, writes a fresh uuid to
//!    `/config/<cluster>/topology-trigger` when asked, and survives etcd outages by
//!    reconnecting with backoff under a new lease; on shutdown it revokes the lease.
//!
//! 4. [`self_fence`]: when etcd has not answered a lease renewal for
//!    `--self-fence-after-ms`, a master is fenced (`service::fence`), so that it
//!    takes no writes the observer's failover, which can only start after the lease
//!    expired, would lose.
//!
//! [`agent`] wires these together with [`api`] (`GET /status`, `GET /healthz`, and
//! the load balancers' role checks `GET /master` and `GET /replica` of [`checks`]);
//! [`config`] holds the settings; the retry schedule is `service::backoff`.

pub mod agent;
pub mod api;
pub mod checks;
pub mod config;
pub mod probe;
pub mod registry;
pub mod self_fence;
pub mod tracker;

pub use agent::{run, Status};
pub use config::{Config, Credentials, Instance, RedisTarget};
