//! `redis-topology`: the operator's one command. It reads and writes etcd with
//! the services' own flags and environment (`--etcd-endpoints`/`ETCDCTL_ENDPOINTS`,
//! `--etcd-prefix`/`REDIS_TOPOLOGY_ETCD_PREFIX`, `REDIS_TOPOLOGY_DOMAIN`, `REDIS_TOPOLOGY_NAMESERVER`), so it works from any
//! machine that reaches etcd.
//!
//! Modules, I/O first, then the pure core:
//! - [`args`]: the clap command line (also the source of shell completions);
//! - [`commands`]: one function per subcommand: read, decide, write, print;
//! - `service::clusters`: the only code that talks to etcd (shared with the
//!   observer's status page);
//! - `topology::cluster` (pure): a cluster as etcd holds it; the node table, the
//!   check of roles against the topology and DNS, members named on the command
//!   line, the topology of a switchover, and when a switchover is over;
//! - `topology::placement` (pure): masters per host and the `rebalance` plan;
//! - [`render`] (pure): human tables; `--json` prints the same data as JSON.
//!
//! Exit codes: 0 done (or `check`: all agree); 1 failed (a switchover the
//! dictator refused, `check` found differences, a `rebalance` stopped or with no
//! plan that reaches the fair share); 2 bad input or etcd unreachable,
//! nothing written; 3 a switchover applied partially (members skipped).

pub mod args;
pub mod commands;
pub mod render;
