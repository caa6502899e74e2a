//! `observer`: watch etcd, drive the dictator and dnsd; one leader acts.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use observer::endpoint::Endpoint;
use observer::failover::Policy;
use observer::apply::Targets;
use observer::leader::{self, Leadership};
use observer::worker::Context;
use service::cli::{EtcdArgs, LogArgs};
use service::resolve::MemberResolver;

/// Watches `/config/<cluster>/topology` and `/config/<cluster>/topology-trigger`
/// in etcd and applies each change: PUT to the dictator, then to dnsd. Run several;
/// one leader (etcd election) acts.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Dictator base URL; the host may be an SRV name (resolved via --nameserver).
    #[arg(long, env = "REDIS_TOPOLOGY_DICTATOR", default_value = "http://127.0.0.1:8000")]
    dictator: String,

    /// dnsd base URL; the host may be an SRV name (resolved via --nameserver).
    #[arg(long, env = "REDIS_TOPOLOGY_DNSD", default_value = "http://127.0.0.1:8001")]
    dnsd: String,

    /// DNS servers for SRV names in --dictator/--dnsd (every dnsd replica), asked
    /// all at once, the first answer used; repeat or comma-separate. Default:
    /// /etc/resolv.conf.
    #[arg(long, env = "REDIS_TOPOLOGY_NAMESERVER", value_delimiter = ',')]
    nameserver: Vec<SocketAddr>,

    /// Address of the HTTP endpoint (`/healthz`).
    #[arg(long, env = "REDIS_TOPOLOGY_LISTEN", default_value = "127.0.0.1:8002")]
    listen: SocketAddr,

    /// This observer's name in the election and in `/status/<cluster>` (default: host-pid).
    #[arg(long, env = "REDIS_TOPOLOGY_OBSERVER_ID")]
    id: Option<String>,

    /// Lease TTL of the leader: another observer takes over within about this long.
    #[arg(long, env = "REDIS_TOPOLOGY_ELECTION_TTL_SECS", default_value_t = 5)]
    election_ttl_secs: u64,

    /// First retry delay after a failed round (doubles up to --retry-max-ms).
    #[arg(long, env = "REDIS_TOPOLOGY_RETRY_MIN_MS", default_value_t = 200)]
    retry_min_ms: u64,

    /// Longest retry delay after failed rounds.
    #[arg(long, env = "REDIS_TOPOLOGY_RETRY_MAX_MS", default_value_t = 10_000)]
    retry_max_ms: u64,

    /// Timeout of one PUT to the dictator or dnsd.
    #[arg(long, env = "REDIS_TOPOLOGY_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,

    /// Fail over automatically when the master has been unhealthy or unregistered
    /// this long (and does not answer redis directly); 0 turns automatic failover off.
    #[arg(long, env = "REDIS_TOPOLOGY_FAILOVER_AFTER_MS", default_value_t = 1000)]
    failover_after_ms: u64,

    /// The delay instead of --failover-after-ms when the master's own port refuses
    /// connections (the host answers but redis is gone, or restarting empty).
    #[arg(long, env = "REDIS_TOPOLOGY_FAILOVER_AFTER_REFUSED_MS", default_value_t = 0)]
    failover_after_refused_ms: u64,

    /// Ask a master etcd says is healthy every this many milliseconds, so a machine
    /// that vanished is seen before its agent's lease expires; 0: only ask masters
    /// etcd says are down.
    #[arg(long, env = "REDIS_TOPOLOGY_MASTER_PROBE_MS", default_value_t = 500)]
    master_probe_ms: u64,

    /// At most one automatic failover per cluster within this many seconds.
    #[arg(long, env = "REDIS_TOPOLOGY_FAILOVER_COOLDOWN_SECS", default_value_t = 60)]
    failover_cooldown_secs: u64,

    /// Rebalance masters by itself: once a host that had lost its masters has been
    /// back and healthy this many seconds, move masters back to it (as
    /// `redis-topology rebalance` does, one group at a time) until no live host
    /// holds more than its fair share. Off unless set.
    #[arg(long, env = "REDIS_TOPOLOGY_REBALANCE_AFTER_SECS")]
    rebalance_after_secs: Option<u64>,

    /// DNS zone of node names in topologies (`<node>.<cluster>.<domain>`).
    #[arg(long, env = "REDIS_TOPOLOGY_DOMAIN", default_value = topology::names::DEFAULT_DOMAIN)]
    domain: String,

    #[command(flatten)]
    redis_auth: service::redis_auth::RedisAuthArgs,

    /// Tokens, TLS and limits of the HTTP endpoint. The first token of
    /// --api-token-file is also what the observer sends to the dictator and dnsd.
    #[command(flatten)]
    http: service::http::HttpArgs,

    /// TLS to https:// --dictator and --dnsd URLs.
    #[command(flatten)]
    client_tls: service::tls::ClientTlsArgs,

    #[command(flatten)]
    etcd: EtcdArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, legacy_env) = service::env::parse::<Cli>();
    cli.log.init();
    service::env::warn(&legacy_env);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "observer stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    service::systemd::spawn_watchdog();
    let dictator = Endpoint::parse(&cli.dictator).map_err(|e| anyhow::anyhow!("--dictator: {e}"))?;
    let dnsd = Endpoint::parse(&cli.dnsd).map_err(|e| anyhow::anyhow!("--dnsd: {e}"))?;
    let resolver = MemberResolver::new(&cli.nameserver).map_err(|e| anyhow::anyhow!("--nameserver: {e}"))?;
    let http = cli.http.settings()?;
    // Read once: rotating the observer's own token means restarting it (the
    // services accept old and new meanwhile).
    let token = match &cli.http.auth.api_token_file {
        Some(path) => Some(service::auth::Tokens::load(path)?.first().to_string()),
        None => None,
    };
    let targets = Targets::new(resolver, dictator, dnsd, Duration::from_millis(cli.request_timeout_ms), token, &cli.client_tls)
        .map_err(anyhow::Error::msg)?;
    let observer_id = cli.id.clone().unwrap_or_else(default_id);
    let etcd = connect(&cli.etcd).await;
    let names = topology::Names::new(&cli.domain).map_err(|e| anyhow::anyhow!("--domain: {e}"))?;
    let failover = (cli.failover_after_ms > 0).then(|| Policy {
        failover_after: Duration::from_millis(cli.failover_after_ms),
        failover_after_refused: Duration::from_millis(cli.failover_after_refused_ms),
        cooldown: Duration::from_secs(cli.failover_cooldown_secs),
        probe_every: (cli.master_probe_ms > 0).then(|| Duration::from_millis(cli.master_probe_ms)),
    });
    let cx = Arc::new(Context {
        etcd,
        keys: cli.etcd.keys(),
        names,
        targets,
        observer_id,
        retry_min: Duration::from_millis(cli.retry_min_ms),
        retry_max: Duration::from_millis(cli.retry_max_ms),
        failover,
        failovers: Default::default(),
        redis_auth: cli.redis_auth.credentials()?,
        last_good_round: Default::default(),
        placing: Default::default(),
        rebalance_after: cli.rebalance_after_secs.map(Duration::from_secs),
    });
    let metrics = service::metrics::install(&[])?;
    metrics::describe_gauge!("redis_topology_observer_leader", "1 while this observer leads (applies and fails over), else 0.");
    metrics::describe_counter!("redis_topology_observer_rounds_total", "Rounds recorded in /status/<cluster>, by result (ok, partial, dictator, dnsd).");
    metrics::describe_counter!("redis_topology_observer_failovers_total", "Automatic failovers this observer wrote.");
    metrics::describe_gauge!("redis_topology_observer_last_good_round_age_seconds", "Seconds since the cluster's last round that applied (ok or partial).");
    metrics::gauge!("redis_topology_observer_leader").set(0.0);

    let domain_error = observer::domain::DomainError::default();
    let domain_check = tokio::spawn(observer::domain::watch(
        cx.etcd.clone(), cx.keys.clone(), cx.names.domain().to_string(), domain_error.clone()));
    let state = Arc::new(Leadership::default());
    let health_state = state.clone();
    let status_cx = cx.clone();
    let app = service::http::with_conventions(Router::new()).route(
        "/status",
        get(move || {
            let leader = health_state.leader.load(Ordering::SeqCst);
            let failovers = status_cx.failover_counts();
            let domain_error = domain_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
            async move { Json(serde_json::json!({ "leader": leader, "failovers": failovers, "domain_error": domain_error })) }
        }),
    );
    let page_cx = cx.clone();
    let page_state = state.clone();
    let app = app.route(
        "/",
        get(move || {
            let (etcd, keys, names) = (page_cx.etcd.clone(), page_cx.keys.clone(), page_cx.names.clone());
            let credentials = page_cx.redis_auth.clone();
            let leader = page_state.leader.load(Ordering::SeqCst);
            async move { axum::response::Html(observer::page::load(etcd, keys, &names, &credentials, leader).await) }
        }),
    );
    let metrics_cx = cx.clone();
    let app = app.merge(service::metrics::routes(metrics, move || metrics_cx.refresh_metrics(topology::records::now_ms())));
    let shutdown = service::Shutdown::on_signals();
    // systemd: ready once etcd answered (above) and the HTTP endpoint is bound.
    let ready = |address| service::systemd::ready(&format!("connected to etcd, serving HTTP on {address}"));
    let http = tokio::spawn(service::http::serve_then(cli.listen, app, http, shutdown.requested(), ready));
    leader::run(cx, Duration::from_secs(cli.election_ttl_secs), state, shutdown.clone()).await;
    domain_check.abort();
    http.await??;
    Ok(())
}

/// Connects to etcd, retrying until it answers (the observer is useless without it).
async fn connect(args: &EtcdArgs) -> etcd_client::Client {
    let mut backoff = service::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match args.connect().await {
            Ok(client) => return client,
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "etcd unreachable");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}
