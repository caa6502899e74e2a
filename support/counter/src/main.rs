//! `counter`: write unique ids while the topology changes, then print the tally.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use counter::{read_list_as, Pace, Destination, Writer};
use service::cli::LogArgs;
use service::redis_auth::RedisAuthArgs;
use service::resolve::MemberResolver;

/// Pushes fresh ids to a redis list at a fixed rate, reconnecting (and
/// re-resolving) on errors, then reads the list back and prints
/// `ack'd: N (M missing) err'd: E (P phantom) unknown: U (L landed)`. Exits 1 if
/// anything acknowledged is missing, anything rejected was applied, or nothing
/// was acknowledged; 2 if it could not count (usage, the writer died, no read-back).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Write to this address (e.g. HAProxy's write frontend) instead of resolving.
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS", conflicts_with = "cluster")]
    redis: Option<SocketAddr>,

    /// Resolve `master.<cluster>.<domain>` SRV through --nameserver.
    #[arg(long, env = "REDIS_TOPOLOGY_CLUSTER")]
    cluster: Option<String>,

    /// Zone of the SRV name.
    #[arg(long, env = "REDIS_TOPOLOGY_DOMAIN", default_value = topology::names::DEFAULT_DOMAIN)]
    domain: String,

    /// DNS servers (every dnsd replica) for --cluster, asked all at once, the
    /// first answer used; repeat or comma-separate. Default: /etc/resolv.conf.
    #[arg(long, env = "REDIS_TOPOLOGY_NAMESERVER", value_delimiter = ',')]
    nameserver: Vec<SocketAddr>,

    /// Writes per second.
    #[arg(long, env = "REDIS_TOPOLOGY_RATE", default_value_t = 1000)]
    rate: u32,

    /// Stop after this many writes.
    #[arg(long, env = "REDIS_TOPOLOGY_COUNT", conflicts_with = "duration_secs")]
    count: Option<u64>,

    /// Stop after this many seconds (default 10 when --count is absent).
    #[arg(long, env = "REDIS_TOPOLOGY_DURATION_SECS")]
    duration_secs: Option<u64>,

    /// The list to push to (default: a fresh `counter:<uuid>`).
    #[arg(long, env = "REDIS_TOPOLOGY_KEY")]
    key: Option<String>,

    /// Timeout of one write; a timed-out write's outcome is unknown.
    #[arg(long, env = "REDIS_TOPOLOGY_TIMEOUT_MS", default_value_t = 2000)]
    timeout_ms: u64,

    /// Print the tally as JSON, with every write-unavailable window.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    redis_auth: RedisAuthArgs,

    #[command(flatten)]
    log: LogArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let (cli, legacy_env) = service::env::parse::<Cli>();
    cli.log.init();
    service::env::warn(&legacy_env);
    let target = match target(&cli) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let credentials = match cli.redis_auth.credentials() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    let key = cli.key.clone().unwrap_or_else(|| format!("counter:{}", uuid::Uuid::new_v4()));
    let pace = Pace { per_second: cli.rate.max(1), count: cli.count, timeout: Duration::from_millis(cli.timeout_ms) };
    let writer = Writer::start_as(target.clone(), &key, pace, credentials.clone());
    let stop = writer.stopper();
    let shutdown = service::Shutdown::on_signals();
    // With --count the writer stops by itself; otherwise after --duration-secs.
    let duration = cli.count.is_none().then(|| Duration::from_secs(cli.duration_secs.unwrap_or(10)));
    tokio::spawn(async move {
        tokio::select! {
            () = sleep_for(duration) => {}
            () = shutdown.requested() => {}
        }
        stop.store(true, Ordering::SeqCst);
    });
    let tally = match writer.finish().await {
        Ok(tally) => tally,
        Err(e) => {
            eprintln!("counter: {e}; nothing can be said about the writes");
            return ExitCode::from(2);
        }
    };
    let list = match read_list_as(&target, &key, Duration::from_secs(10), &credentials).await {
        Ok(list) => list,
        Err(e) => {
            eprintln!("cannot read {key} back: {e}");
            return ExitCode::from(2);
        }
    };
    let verdict = tally.check(&list);
    if cli.json {
        // A gap counts as unavailability when it is five write intervals long.
        let threshold = (Duration::from_secs(1) / pace.per_second * 5).max(Duration::from_millis(5));
        let windows = tally.windows(threshold);
        let longest = windows.iter().map(|w| w.duration_ms).fold(0.0, f64::max);
        let body = serde_json::json!({
            "tally": verdict.to_string(), "key": key, "acked": verdict.acked, "missing": verdict.missing,
            "rejected": verdict.rejected, "phantom": verdict.phantom,
            "unknown": verdict.unknown, "landed": verdict.landed,
            "windows": windows, "longest_window_ms": longest,
        });
        println!("{body}");
    } else {
        println!("{verdict}");
    }
    match verdict.failure() {
        None => ExitCode::SUCCESS,
        Some(failure) => {
            eprintln!("counter: not lossless: {failure}");
            ExitCode::FAILURE
        }
    }
}

fn target(cli: &Cli) -> anyhow::Result<Destination> {
    match (&cli.redis, &cli.cluster) {
        (Some(addr), _) => Ok(Destination::Fixed(*addr)),
        (None, Some(cluster)) => {
            topology::validate_label("cluster", cluster)?;
            let names = topology::Names::new(&cli.domain)?;
            let resolver = MemberResolver::new(&cli.nameserver)?;
            Ok(Destination::Srv { name: names.master(cluster), resolver: Box::new(resolver) })
        }
        (None, None) => Err(anyhow::anyhow!("give --redis host:port or --cluster (with --nameserver)")),
    }
}

/// Sleeps for `duration`; for ever without one.
async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}
