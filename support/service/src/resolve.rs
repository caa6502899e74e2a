//! Turning topology members into socket addresses.
//!
//! A member's address is an IP literal, an A/AAAA name, or a name with an SRV
//! record (dnsd publishes `master.<cluster>.<domain>` as both). Without an explicit
//! port, SRV wins and gives the port; otherwise A/AAAA with 6379.
//!
//! Lookups go to the `--nameserver`s (normally every dnsd replica) when given, else
//! to the system resolver. Every query goes to all of them at once and the first
//! answer wins, so a dead or silent replica costs nothing as long as one answers;
//! an NXDOMAIN counts only once no other nameserver has a better answer.
//! The cache is off: a topology change must be seen on the next lookup, not after
//! a TTL.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use topology::{Address, Member};

/// Why a member could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The name has no SRV and no A/AAAA record (a 422 for APIs).
    #[error("{0} does not resolve (no SRV, A or AAAA record)")]
    NotFound(String),
    /// The name resolves, but to several instances where one was expected.
    #[error("{name} names {count} instances; a topology member must be exactly one")]
    Ambiguous { name: String, count: usize },
    /// The nameserver did not answer or failed (a 502 for APIs).
    #[error("cannot resolve {name}: {error}")]
    Failed { name: String, error: String },
}

/// Resolves members and SRV names; cheap to clone.
#[derive(Clone)]
pub struct MemberResolver {
    inner: TokioResolver,
}

impl MemberResolver {
    /// Asks `nameservers` (e.g. the dnsd replicas at 127.0.0.1:5353) over UDP,
    /// falling back to TCP for truncated answers; empty uses /etc/resolv.conf.
    pub fn new(nameservers: &[SocketAddr]) -> Result<MemberResolver, ResolveError> {
        let failed = |error: NetError| ResolveError::Failed {
            name: "resolver configuration".into(),
            error: error.to_string(),
        };
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(failed)?
        } else {
            let servers = nameservers.iter().map(|addr| {
                let connection = |mut c: ConnectionConfig| {
                    c.port = addr.port();
                    c
                };
                // An NXDOMAIN from one replica does not end the lookup while
                // another may still answer: a replica restarted while etcd is
                // away serves an empty zone. As HAProxy does, a name is absent
                // only when every nameserver says so (or the rest are silent).
                NameServerConfig::new(
                    addr.ip(),
                    false,
                    vec![connection(ConnectionConfig::udp()), connection(ConnectionConfig::tcp())],
                )
            });
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers.collect()),
                TokioRuntimeProvider::default(),
            )
        };
        let options: &mut ResolverOpts = builder.options_mut();
        options.cache_size = 0;
        options.timeout = Duration::from_millis(500);
        options.attempts = 3;
        options.ndots = 0;
        if !nameservers.is_empty() {
            // Every nameserver at once: a dead replica (refused, or silent until
            // the timeout) must not delay the answer of a live one. They are few,
            // and a lookup is rare (an apply, a reconnect).
            options.num_concurrent_reqs = nameservers.len();
        }
        let inner = builder.build().map_err(failed)?;
        Ok(MemberResolver { inner })
    }

    /// Every address `member` stands for: one per SRV record, or one per A/AAAA
    /// address (same port). IP literals resolve to themselves without a lookup.
    pub async fn resolve_all(&self, member: &Member) -> Result<Vec<SocketAddr>, ResolveError> {
        Ok(self.lookup(member).await?.0)
    }

    /// The one instance `member` names. A name with both an A and an AAAA record is
    /// one instance (IPv4 is used); an SRV name with several targets is ambiguous.
    pub async fn resolve_one(&self, member: &Member) -> Result<SocketAddr, ResolveError> {
        let (mut addrs, from_srv) = self.lookup(member).await?;
        if from_srv && addrs.len() > 1 {
            return Err(ResolveError::Ambiguous { name: member.address.to_string(), count: addrs.len() });
        }
        addrs.sort_by_key(SocketAddr::is_ipv6);
        addrs.into_iter().next().ok_or_else(|| ResolveError::NotFound(member.address.to_string()))
    }

    // The addresses, and whether they came from SRV records.
    async fn lookup(&self, member: &Member) -> Result<(Vec<SocketAddr>, bool), ResolveError> {
        let name = match &member.address {
            Address::Ip(ip) => return Ok((vec![SocketAddr::new(*ip, member.port_or_default())], false)),
            Address::Name(name) => name,
        };
        if member.port.is_none() {
            let srv = self.srv(name).await?;
            if !srv.is_empty() {
                return Ok((srv, true));
            }
        }
        let port = member.port_or_default();
        let ips = self.ips(name).await?;
        Ok((ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(), false))
    }

    /// SRV targets of `name` as socket addresses, in priority order; empty when the
    /// name has no SRV record. Target addresses come from the additional section
    /// when the server sent them (dnsd does), else from a lookup.
    pub async fn srv(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let lookup = match self.inner.srv_lookup(fqdn(name)).await {
            Ok(lookup) => lookup,
            Err(e) if is_absent(&e) => return Ok(Vec::new()),
            Err(e) => return Err(failed(name, e)),
        };
        let mut records: Vec<_> = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(srv) => Some(srv.clone()),
                _ => None,
            })
            .collect();
        records.sort_by_key(|srv| (srv.priority, std::cmp::Reverse(srv.weight)));
        let mut addrs = Vec::with_capacity(records.len());
        for srv in records {
            let glue: Vec<IpAddr> = lookup
                .additionals()
                .iter()
                .filter(|r| r.name == srv.target)
                .filter_map(|r| r.data.ip_addr())
                .collect();
            let ips = if glue.is_empty() { self.ips(&srv.target.to_string()).await? } else { glue };
            let ip = ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied();
            if let Some(ip) = ip {
                addrs.push(SocketAddr::new(ip, srv.port));
            }
        }
        Ok(addrs)
    }

    /// A and AAAA addresses of `name`.
    pub async fn ips(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        match self.inner.lookup_ip(fqdn(name)).await {
            Ok(lookup) => Ok(lookup.iter().collect()),
            Err(e) if is_absent(&e) => Err(ResolveError::NotFound(name.trim_end_matches('.').to_string())),
            Err(e) => Err(failed(name, e)),
        }
    }
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') { name.to_string() } else { format!("{name}.") }
}

fn is_absent(e: &NetError) -> bool {
    e.is_nx_domain() || e.is_no_records_found()
}

fn failed(name: &str, e: NetError) -> ResolveError {
    ResolveError::Failed { name: name.trim_end_matches('.').to_string(), error: e.to_string() }
}
