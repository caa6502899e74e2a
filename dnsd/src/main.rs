//! `dnsd`: authoritative DNS for the master/slaves SRV records, with its HTTP API.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use service::cli::{EtcdArgs, LogArgs};
use topology::Names;

/// Authoritative DNS for redis master/slaves SRV records, backed by etcd. Serves
/// `PUT /dns`, `PUT /clusters/{cluster}/dns` (publish) and `GET` on both over HTTP,
/// and the zone over DNS (UDP and TCP).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Address of the HTTP API.
    #[arg(long, env = "REDIS_TOPOLOGY_LISTEN", default_value = "127.0.0.1:8001")]
    listen: SocketAddr,

    /// Address the DNS server answers on, UDP and TCP.
    #[arg(long, env = "REDIS_TOPOLOGY_DNS_LISTEN", default_value = "127.0.0.1:5353")]
    dns_listen: SocketAddr,

    /// Zone dnsd is authoritative for; names outside it are REFUSED.
    #[arg(long, env = "REDIS_TOPOLOGY_DOMAIN", default_value = topology::names::DEFAULT_DOMAIN)]
    domain: String,

    /// TTL of every record and of negative answers, in seconds.
    #[arg(long, env = "REDIS_TOPOLOGY_TTL", default_value_t = 1)]
    ttl: u32,

    /// Cluster the original `PUT /dns` endpoint publishes, and whose master and slaves
    /// `--haproxy-runtime` pushes.
    #[arg(long, env = "REDIS_TOPOLOGY_CLUSTER", default_value = "default")]
    cluster: String,

    /// UDP sockets sharing the DNS port (SO_REUSEPORT), each with its own receive loop
    /// [default: number of CPUs].
    #[arg(long, env = "REDIS_TOPOLOGY_DNS_UDP_SOCKETS")]
    dns_udp_sockets: Option<usize>,

    /// Also answer the read-only part of the Redis Sentinel protocol here (TCP), with
    /// each cluster as a Sentinel master of the same name, so that redis clients find
    /// the master as they would through Sentinel [default: off].
    #[arg(long, env = "REDIS_TOPOLOGY_SENTINEL_LISTEN")]
    sentinel_listen: Option<SocketAddr>,

    /// The Sentinel address given to clients and other dnsd replicas
    /// (`SENTINEL sentinels`) [default: the --sentinel-listen address].
    #[arg(long, env = "REDIS_TOPOLOGY_SENTINEL_ANNOUNCE", requires = "sentinel_listen")]
    sentinel_announce: Option<SocketAddr>,

    #[command(flatten)]
    etcd: EtcdArgs,

    #[command(flatten)]
    log: LogArgs,

    #[command(flatten)]
    haproxy: dnsd::haproxy::HaproxyArgs,

    /// Tokens, TLS and limits of the HTTP API.
    #[command(flatten)]
    http: service::http::HttpArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, legacy_env) = service::env::parse::<Cli>();
    // hickory-server logs a line per query: at thousands a second that would cost
    // more than answering.
    cli.log.init_quieting(&["hickory_server"]);
    service::env::warn(&legacy_env);
    if let Err(e) = topology::validate_label("cluster", &cli.cluster) {
        eprintln!("--cluster: {e}");
        return ExitCode::from(2);
    }
    let names = match Names::new(&cli.domain) {
        Ok(names) => names,
        Err(e) => {
            eprintln!("--domain: {e}");
            return ExitCode::from(2);
        }
    };
    let http = match cli.http.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let config = dnsd::Config {
        listen: cli.listen,
        http,
        dns_listen: cli.dns_listen,
        names,
        ttl: cli.ttl,
        cluster: cli.cluster.clone(),
        udp_sockets: cli.dns_udp_sockets.unwrap_or(cpus).max(1),
        etcd: cli.etcd,
        sentinel: cli.sentinel_listen.map(|listen| dnsd::SentinelConfig { listen, announce: cli.sentinel_announce }),
        haproxy: cli.haproxy.config(&cli.cluster),
    };
    service::systemd::spawn_watchdog();
    match dnsd::run(config, service::Shutdown::on_signals()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "dnsd failed");
            ExitCode::FAILURE
        }
    }
}
