//! Pushing the published topology to HAProxy's runtime API, so HAProxy follows a
//! master move within milliseconds instead of at its next DNS resolution.
//!
//! Every `--haproxy-runtime` target gets its own task ([`push::follow`]): on every
//! change of the served zone (and every [`push::RESYNC`] anyway) it reads the
//! backends' slots (`show servers state`), decides the commands that make them
//! match the published master and live slaves ([`plan`], pure), and runs them in
//! order ([`runtime`]); a refused or failed command is logged and retried after a
//! backoff. DNS SRV resolution stays configured in HAProxy: an instance that missed
//! a push (down, started late, socket unreachable) converges through it.
//!
//! - [`hold`]: takes the write slot out of service the moment the desired topology
//!   (`/config/<cluster>/topology`) names another master, so writers wait for the
//!   move instead of retrying onto the fenced master;
//! - [`wanted`]: pure: the addresses HAProxy should route to, from dnsd's records;
//! - [`plan`]: pure: `show servers state` and the wanted addresses to commands;
//! - [`runtime`]: the runtime-API client (unix socket or TCP);
//! - [`push`]: the per-target task.

pub mod hold;
pub mod plan;
pub mod push;
pub mod runtime;

use std::net::{IpAddr, SocketAddr};

use topology::records::PublishedMember;

use crate::state::Records;

/// What the pusher is configured with.
#[derive(Debug, Clone)]
pub struct HaproxyConfig {
    /// The runtime APIs to push to.
    pub targets: Vec<runtime::Target>,
    /// Cluster whose topology is pushed.
    pub cluster: String,
    /// Backend following the master, and its `server-template` prefix.
    pub write_backend: String,
    pub write_server: String,
    /// Backend over the slaves, and its `server-template` prefix.
    pub read_backend: String,
    pub read_server: String,
}

/// The pusher's command-line flags (flattened into dnsd's).
#[derive(Debug, Clone, clap::Args)]
pub struct HaproxyArgs {
    /// HAProxy runtime API (`stats socket ... level admin`) to push the master and
    /// slaves of `--cluster` to, the moment they change: an absolute unix socket path or
    /// IP:port. Repeat (or comma-separate) for several HAProxy instances. None: no push,
    /// HAProxy follows through DNS alone.
    #[arg(long = "haproxy-runtime", env = "REDIS_TOPOLOGY_HAPROXY_RUNTIME", value_delimiter = ',')]
    pub runtime: Vec<runtime::Target>,

    /// HAProxy backend that follows the master.
    #[arg(long = "haproxy-write-backend", env = "REDIS_TOPOLOGY_HAPROXY_WRITE_BACKEND", default_value = "redis_master")]
    pub write_backend: String,

    /// Name prefix of the write backend's `server-template` (its one slot is `<prefix>1`).
    #[arg(long = "haproxy-write-server", env = "REDIS_TOPOLOGY_HAPROXY_WRITE_SERVER", default_value = "master")]
    pub write_server: String,

    /// HAProxy backend over the live slaves; empty: push only the master.
    #[arg(long = "haproxy-read-backend", env = "REDIS_TOPOLOGY_HAPROXY_READ_BACKEND", default_value = "redis_slaves")]
    pub read_backend: String,

    /// Name prefix of the read backend's `server-template` slots.
    #[arg(long = "haproxy-read-server", env = "REDIS_TOPOLOGY_HAPROXY_READ_SERVER", default_value = "slave")]
    pub read_server: String,
}

impl HaproxyArgs {
    pub fn config(self, cluster: &str) -> HaproxyConfig {
        HaproxyConfig {
            targets: self.runtime,
            cluster: cluster.to_string(),
            write_backend: self.write_backend,
            write_server: self.write_server,
            read_backend: self.read_backend,
            read_server: self.read_server,
        }
    }
}

/// Where HAProxy should send writes and reads for one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// `None` when nothing is published, or the master is a host name (no address
    /// to push: DNS resolution handles it).
    pub master: Option<SocketAddr>,
    /// The live slaves with an IP address, as `slaves.<cluster>` serves them.
    pub slaves: Vec<SocketAddr>,
    /// A move to this master is under way ([`hold`]): keep the write slot out of
    /// service until it is published.
    pub hold: Option<SocketAddr>,
}

/// The same master and read pool the zone serves (`zone::Zone::build`): a node's
/// address is its registration's, else the one published; the port is the
/// published one; a slave joins the pool by the zone's own rule
/// (`zone::in_read_pool`).
pub fn wanted(records: &Records, cluster: &str) -> Wanted {
    let Some((topology, _)) = records.published().get(cluster) else { return Wanted::default() };
    let address = |member: &PublishedMember| address_of(records, cluster, member);
    let live = |member: &PublishedMember| crate::zone::in_read_pool(records.registrations(), cluster, member);
    Wanted {
        master: address(&topology.master),
        slaves: topology.slaves.iter().filter(|s| live(s)).filter_map(address).collect(),
        hold: None,
    }
}

/// Where a published member is served: its registration's address when it is a
/// registered node, else the published host; the published port. `None` for a host
/// name.
pub fn address_of(records: &Records, cluster: &str, member: &PublishedMember) -> Option<SocketAddr> {
    let registration = member.node.as_ref().and_then(|n| records.registrations().get(&(cluster.to_string(), n.clone())));
    let host = registration.map_or(member.host.as_str(), |r| r.address.as_str());
    host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, member.port))
}

/// Starts one pusher per target.
pub fn start(
    live: std::sync::Arc<crate::live::Live>,
    config: HaproxyConfig,
    etcd: service::cli::EtcdArgs,
    shutdown: &service::Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    if config.targets.is_empty() {
        return Vec::new();
    }
    let config = std::sync::Arc::new(config);
    let (desired_tx, desired) = tokio::sync::watch::channel(None);
    let follower = tokio::spawn(hold::follow(etcd, config.cluster.clone(), desired_tx, shutdown.clone()));
    let pushers: Vec<_> = config
        .targets
        .iter()
        .map(|target| {
            tracing::info!(%target, cluster = config.cluster, write = config.write_backend, read = config.read_backend,
                "pushing the topology to HAProxy's runtime API");
            let runtime = runtime::Runtime::new(target.clone(), push::TIMEOUT);
            tokio::spawn(push::follow(live.clone(), config.clone(), desired.clone(), runtime, shutdown.clone()))
        })
        .collect();
    pushers.into_iter().chain([follower]).collect()
}

#[cfg(test)]
mod tests;
