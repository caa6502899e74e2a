//! `dictator`: serve the HTTP API (default), or `dictator apply` once from the CLI.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dictator::execute::{ExecSettings, WriteSettings};
use service::redis_auth::Timeouts;
use dictator::{ApplyOptions, Dictator, Settings};
use service::cli::{EtcdArgs, LogArgs};
use service::resolve::MemberResolver;
use topology::{Member, Topology};

/// Applies master/slave topologies to redis-server instances without losing
/// acknowledged writes. Without a subcommand it serves `PUT /master` and
/// `PUT /clusters/{cluster}/master`.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Address of the HTTP API.
    #[arg(long, env = "REDIS_TOPOLOGY_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// Cluster the original `PUT /master` endpoint applies to.
    #[arg(long, env = "REDIS_TOPOLOGY_CLUSTER", default_value = "default")]
    cluster: String,

    #[command(flatten)]
    tuning: Tuning,

    /// Tokens, TLS and limits of the HTTP API.
    #[command(flatten)]
    http: service::http::HttpArgs,

    /// Where `/applied/<cluster>` is kept (applies with `?revision=`) and the
    /// published master is read (an apply that would otherwise be refused).
    #[command(flatten)]
    etcd: EtcdArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Apply one topology now and print the report as JSON (exit 1 on failure).
    Apply(ApplyArgs),
    /// Validate a topology JSON file ("-" for stdin); exit 2 naming the bad field.
    /// With --cluster, also the names rule: every member is an IP address or a node
    /// name of that cluster (<node>.<cluster>.<domain>), as dnsd requires to publish it.
    Check {
        /// The file to check.
        file: String,
        /// The cluster the topology is for.
        #[arg(long = "cluster")]
        for_cluster: Option<String>,
        /// dnsd's zone (its --domain), for node names.
        #[arg(long, default_value = topology::names::DEFAULT_DOMAIN)]
        domain: String,
    },
}

#[derive(Args)]
struct ApplyArgs {
    /// The master, as host, host:port, ip, ip:port or an SRV name.
    #[arg(long)]
    master: String,
    /// A slave (repeat for several).
    #[arg(long = "slave")]
    slaves: Vec<String>,
    /// Apply even if a demoted master holds writes the new master lacks.
    #[arg(long)]
    force: bool,
    /// Observe and plan only; change nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct Tuning {
    /// DNS servers (every dnsd replica) for member names and SRV records, asked
    /// all at once, the first answer used; repeat or comma-separate. Default:
    /// /etc/resolv.conf.
    #[arg(long, env = "REDIS_TOPOLOGY_NAMESERVER", value_delimiter = ',', global = true)]
    nameserver: Vec<SocketAddr>,

    /// How long the new master may take to catch up before the apply aborts (504).
    #[arg(long, env = "REDIS_TOPOLOGY_CATCH_UP_TIMEOUT_MS", default_value_t = 5000, global = true)]
    catch_up_timeout_ms: u64,

    /// How long to wait for every slave to show the verification marker.
    #[arg(long, env = "REDIS_TOPOLOGY_VERIFY_TIMEOUT_MS", default_value_t = 10000, global = true)]
    verify_timeout_ms: u64,

    /// How long a second apply to the same cluster waits before answering 409.
    #[arg(long, env = "REDIS_TOPOLOGY_LOCK_WAIT_MS", default_value_t = 10000, global = true)]
    lock_wait_ms: u64,

    /// Timeout for connecting to a redis instance.
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS_CONNECT_TIMEOUT_MS", default_value_t = 1000, global = true)]
    redis_connect_timeout_ms: u64,

    /// Timeout for one redis command.
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS_COMMAND_TIMEOUT_MS", default_value_t = 2000, global = true)]
    redis_command_timeout_ms: u64,

    /// `min-replicas-to-write` restored where the dictator lifts its fence.
    #[arg(long, env = "REDIS_TOPOLOGY_MIN_REPLICAS_TO_WRITE", default_value_t = 0, global = true)]
    min_replicas_to_write: u32,

    /// `min-replicas-max-lag` set while fencing an instance that has it at 0.
    #[arg(long, env = "REDIS_TOPOLOGY_MIN_REPLICAS_MAX_LAG", default_value_t = 10, global = true)]
    min_replicas_max_lag: u32,

    #[command(flatten)]
    redis_auth: service::redis_auth::RedisAuthArgs,
}

impl Tuning {
    fn settings(&self) -> anyhow::Result<Settings> {
        Ok(Settings {
            credentials: self.redis_auth.credentials()?,
            timeouts: Timeouts {
                connect: Duration::from_millis(self.redis_connect_timeout_ms),
                command: Duration::from_millis(self.redis_command_timeout_ms),
            },
            exec: ExecSettings {
                writes: WriteSettings {
                    min_replicas_to_write: self.min_replicas_to_write,
                    min_replicas_max_lag: self.min_replicas_max_lag,
                },
                catch_up_timeout: Duration::from_millis(self.catch_up_timeout_ms),
                verify_timeout: Duration::from_millis(self.verify_timeout_ms),
            },
            lock_wait: Duration::from_millis(self.lock_wait_ms),
        })
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, legacy_env) = service::env::parse::<Cli>();
    cli.log.init();
    service::env::warn(&legacy_env);
    if let Some(Command::Check { file, for_cluster, domain }) = &cli.command {
        return check(file, for_cluster.as_deref(), domain);
    }
    if let Err(e) = topology::validate_label("cluster", &cli.cluster) {
        eprintln!("--cluster: {e}");
        return ExitCode::from(2);
    }
    let resolver = match MemberResolver::new(&cli.tuning.nameserver) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--nameserver: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = match cli.tuning.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let etcd = std::sync::Arc::new(service::etcd::LazyClient::new(cli.etcd.clone()));
    let revisions = dictator::revision::Revisions::new(etcd.clone());
    let dictator = Dictator::new(resolver, settings).with_published(dictator::published::Published::new(etcd));
    match cli.command {
        Some(Command::Apply(args)) => apply_once(&dictator, &cli.cluster, args).await,
        Some(Command::Check { .. }) => ExitCode::SUCCESS,
        None => serve(dictator, revisions, cli.listen, cli.cluster, &cli.http).await,
    }
}

fn check(file: &str, cluster: Option<&str>, domain: &str) -> ExitCode {
    let checked = read_topology(file).and_then(|t| {
        if let Some(cluster) = cluster {
            topology::validate_label("cluster", cluster).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
            let names = topology::Names::new(domain).map_err(|e| anyhow::anyhow!("--domain: {e}"))?;
            names.check_topology(cluster, &t)?;
        }
        Ok(t)
    });
    match checked {
        Ok(t) => {
            println!("{}", t.to_json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{file}: {e}");
            ExitCode::from(2)
        }
    }
}

fn read_topology(file: &str) -> anyhow::Result<Topology> {
    let bytes = if file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(file)?
    };
    Ok(Topology::from_json(&bytes)?)
}

async fn serve(
    dictator: Dictator,
    revisions: dictator::revision::Revisions,
    listen: SocketAddr,
    cluster: String,
    http: &service::http::HttpArgs,
) -> ExitCode {
    let http = match http.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let metrics = match service::metrics::install(&[]) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "cannot serve /metrics");
            return ExitCode::FAILURE;
        }
    };
    metrics::describe_counter!("redis_topology_dictator_applies_total", "Applies answered, by result (ok, unchanged, partial, dry_run, refused, invalid, timeout, failed).");
    metrics::describe_histogram!("redis_topology_dictator_apply_duration_seconds", metrics::Unit::Seconds, "How long an apply took, resolve to verify.");
    metrics::describe_histogram!("redis_topology_dictator_write_pause_seconds", metrics::Unit::Seconds, "How long a changing apply kept the group from taking writes.");
    let app = dictator::api::router(dictator, cluster, revisions).merge(service::metrics::routes(metrics, || {}));
    service::systemd::spawn_watchdog();
    let shutdown = service::Shutdown::on_signals();
    let ready = |address| service::systemd::ready(&format!("serving HTTP on {address}"));
    match service::http::serve_then(listen, app, http, shutdown.requested(), ready).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(%listen, error = %e, "cannot serve");
            ExitCode::FAILURE
        }
    }
}

async fn apply_once(dictator: &Dictator, cluster: &str, args: ApplyArgs) -> ExitCode {
    let topology = match topology_from_args(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let options = ApplyOptions { force: args.force, dry_run: args.dry_run, down: None };
    match dictator.apply(cluster, &topology, options).await {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            // The master is in place, but members in `failed` are not: not done yet.
            if report.outcome.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            let status = dictator::api::status(&e).as_u16();
            let body = serde_json::json!({ "error": e.to_string(), "status": status, "report": e.report() });
            println!("{}", serde_json::to_string_pretty(&body).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn topology_from_args(args: &ApplyArgs) -> anyhow::Result<Topology> {
    let master = Member::parse_host_port(&args.master)?;
    let slaves = args.slaves.iter().map(|s| Member::parse_host_port(s)).collect::<Result<_, _>>()?;
    Ok(Topology::new(master, slaves)?)
}
