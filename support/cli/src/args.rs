//! The command line. Every global flag has the environment variable the
//! services use for the same setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use service::cli::EtcdArgs;

/// Operate redis-topology clusters: see them, define them, move their master,
/// pause automatic failover, read their history, check that everything agrees.
#[derive(Debug, Parser)]
#[command(name = "redis-topology", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// DNS zone of node names; default: the one dnsd recorded in etcd (`/domain`),
    /// else cluster.local. Refused when it differs from dnsd's.
    #[arg(long, env = "REDIS_TOPOLOGY_DOMAIN", global = true)]
    pub domain: Option<String>,

    /// dnsd's DNS addresses (every replica), to ask what they answer (`check`);
    /// asked all at once, the first answer used; repeat or comma-separate.
    #[arg(long, env = "REDIS_TOPOLOGY_NAMESERVER", value_delimiter = ',', global = true)]
    pub nameserver: Vec<SocketAddr>,

    /// AUTH for reading replication offsets from redis (`list`, `status`).
    #[command(flatten)]
    pub redis_auth: service::redis_auth::RedisAuthArgs,

    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every cluster and node: role, health, replication lag, what DNS publishes,
    /// the last round and its result.
    List,
    /// One cluster, with the dictator's report of the last round.
    Status {
        cluster: String,
        /// Show it again every --interval-ms until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Define the desired topology, validated (JSON rules, and every member an IP
    /// address or a node of the cluster in dnsd's zone) before anything is written.
    Define(Define),
    /// Ask for the topology to be applied again (what a node-agent does when redis restarts).
    Trigger { cluster: String },
    /// Move the master to another member of the topology.
    Switchover {
        cluster: String,
        /// The new master: a node name (`node-2`) or a member as the topology names it.
        #[arg(long)]
        to: String,
        /// Wait for the observer's round, show its progress and the dictator's
        /// report; exit 1 if it failed, 3 if members were left out.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Spread masters over hosts: move as few masters as possible so that no live
    /// host (one a healthy node-agent registers) holds more than its fair share,
    /// ceil(groups / live hosts). Each move is a lossless switchover to a healthy
    /// slave of that group, written as `switchover --to` writes it; they run one
    /// group at a time, each waited for until the observer applied it, and the
    /// first that fails stops the rest. Exit 1 when a move failed or no plan
    /// reaches the fair share (it says why).
    Rebalance {
        /// Print the plan; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long each switchover may take to be applied.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Set the cluster's durability: redis's own `min-replicas-to-write` and
    /// `min-replicas-max-lag`, which the dictator sets on every member. A master
    /// then refuses writes unless that many replicas acknowledged within the lag,
    /// even with its node-agent dead; the price is that a master without enough
    /// live replicas takes no writes at all. Written into the topology, so the
    /// observer applies it at once.
    Durability(DurabilityArgs),
    /// Pause automatic failover of a cluster (`/config/<cluster>/maintenance`).
    Pause {
        cluster: String,
        /// Why, shown by `list` and `status`.
        #[arg(long, default_value = "paused by redis-topology")]
        reason: String,
    },
    /// Resume automatic failover of a cluster.
    Resume { cluster: String },
    /// The last rounds of a cluster: applies and failovers, why, and how they went.
    History { cluster: String },
    /// Do the roles redis reports, the desired topology and DNS agree? Lists what
    /// differs; exit 1 if anything does.
    Check {
        /// Only this cluster (default: every cluster).
        cluster: Option<String>,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Find the environment variable names from before the `REDIS_TOPOLOGY_` prefix
    /// in env files and unit drop-ins (`NAME=`, `#NAME=`, `export NAME=`,
    /// `Environment=NAME=`) and, with --write, rename them in place. Exit 1 if any
    /// are left (without --write), 0 if none. Needs no etcd.
    MigrateEnv {
        /// Files to read (e.g. /etc/redis-topology/*.env).
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
        /// Rewrite the files (the old one is kept as FILE.bak, mode and owner kept).
        #[arg(long)]
        write: bool,
    },
}

#[derive(Debug, Args)]
pub struct DurabilityArgs {
    pub cluster: String,
    /// Replicas that must have acknowledged replication within the lag for the
    /// master to take a write (0: no guard). At most the topology's slave count.
    #[arg(long, required_unless_present = "clear")]
    pub min_replicas_to_write: Option<u32>,
    /// Seconds since a replica's last acknowledgement for it to count (redis checks
    /// once a second).
    #[arg(long, default_value_t = topology::Durability::DEFAULT_MAX_LAG)]
    pub min_replicas_max_lag: u32,
    /// Remove the setting: members keep whatever they have, and lifted fences
    /// restore the dictator's --min-replicas-to-write.
    #[arg(long, conflicts_with = "min_replicas_to_write")]
    pub clear: bool,
}

#[derive(Debug, Args)]
pub struct Define {
    pub cluster: String,
    /// The master: a node name (`node-1`), a full node name, or IP[:port].
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    pub master: Option<String>,
    /// A slave, as --master; repeat for each.
    #[arg(long, conflicts_with = "file")]
    pub slave: Vec<String>,
    /// The topology JSON from a file (`-`: stdin).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// The group's durability (see `durability`); with --master.
    #[arg(long, conflicts_with = "file")]
    pub min_replicas_to_write: Option<u32>,
    /// With --min-replicas-to-write.
    #[arg(long, requires = "min_replicas_to_write", default_value_t = topology::Durability::DEFAULT_MAX_LAG)]
    pub min_replicas_max_lag: u32,
    /// Define it even though two members run on one host (as their node-agents
    /// register it): losing that machine then loses both.
    #[arg(long)]
    pub force: bool,
}
