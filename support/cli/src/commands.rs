//! One function per subcommand. Each reads etcd through [`Store`], lets
//! `topology::cluster` decide, writes only once the input is valid, and prints a
//! table or (`--json`) JSON. Errors name the problem; nothing is written then.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::json;
use topology::records::now_ms;
use topology::{Names, Topology};

use crate::args::{Cli, Command, Define, DurabilityArgs};
use topology::cluster::{self as model, DnsAnswer, Outcome};
use topology::placement::{self, Move};
use crate::render;
use service::clusters::{read_offsets, Store, StoreError};
use service::redis_auth::Credentials;

/// A failure that ends the command: bad input (nothing written) or etcd.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    fn invalid(e: impl std::fmt::Display) -> CommandError {
        CommandError::Invalid(e.to_string())
    }
}

/// Runs the command; the exit code is the crate doc's.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::Completions { shell } = cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut command, "redis-topology", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if let Command::MigrateEnv { files, write } = &cli.command {
        return migrate_env(files, *write, cli.json);
    }
    match dispatch(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("redis-topology: {e}");
            ExitCode::from(2)
        }
    }
}

/// `migrate-env`: every old name in `files`, renamed in place with `write`.
/// Exit 2 if a file cannot be read or written (the files before it stay migrated:
/// each rename is reported as it is made).
fn migrate_env(files: &[std::path::PathBuf], write: bool, json: bool) -> ExitCode {
    let mut found = Vec::new();
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("redis-topology: reading {}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let (migrated, renames) = service::env::migrate(&text);
        if write
            && !renames.is_empty()
            && let Err(e) = rewrite(path, &migrated)
        {
            eprintln!("redis-topology: rewriting {}: {e} (the file is unchanged)", path.display());
            return ExitCode::from(2);
        }
        for rename in renames {
            if !json {
                let done = if write { "renamed" } else { "rename" };
                println!("{}:{}: {done} {} to {}", path.display(), rename.line, rename.old, rename.new);
            }
            found.push(serde_json::json!({
                "file": path.display().to_string(), "line": rename.line, "old": rename.old, "new": rename.new,
            }));
        }
    }
    if json {
        println!("{}", serde_json::json!({ "renames": found, "written": write }));
    } else if found.is_empty() {
        println!("no old names in {} file(s)", files.len());
    }
    if found.is_empty() || write {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Replaces `path` with `text` atomically (a temporary file renamed over it), with
/// the old file's mode and owner, keeping the old one as `path.bak`.
fn rewrite(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.migrate-env"));
    let written = (|| {
        std::fs::write(&temp, text)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        // Only root may give a file away; as its owner, it is ours already.
        if let Err(e) = chown(&temp, Some(meta.uid()), Some(meta.gid()))
            && e.kind() != std::io::ErrorKind::PermissionDenied
        {
            return Err(e);
        }
        std::fs::copy(path, path.with_file_name(format!("{name}.bak")))?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CommandError> {
    if let Some(cluster) = cluster_arg(&cli.command) {
        topology::validate_label("cluster", cluster).map_err(CommandError::invalid)?;
    }
    // The error names the endpoints.
    let etcd = cli.etcd.connect().await.map_err(|e| CommandError::Invalid(e.to_string()))?;
    let mut store = Store { etcd, keys: cli.etcd.keys() };
    let credentials = cli.redis_auth.credentials().map_err(|e| CommandError::Invalid(format!("{e:#}")))?;
    let names = names(&mut store, cli.domain.as_deref()).await?;
    let json = cli.json;
    match cli.command {
        Command::List => list(&mut store, &names, &credentials, json).await,
        Command::Status { cluster, watch, interval_ms } => {
            status(&mut store, &names, &credentials, &cluster, watch, interval_ms, json).await
        }
        Command::Define(define) => self::define(&mut store, &names, define, json).await,
        Command::Trigger { cluster } => {
            let trigger = store.trigger(&cluster).await?;
            print(json, &json!({"cluster": cluster, "trigger": trigger}), &format!("triggered {cluster}: {trigger}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Switchover { cluster, to, wait, timeout_secs } => {
            switchover(&mut store, &names, &cluster, &to, wait.then(|| Duration::from_secs(timeout_secs)), json).await
        }
        Command::Durability(args) => durability(&mut store, args, json).await,
        Command::Rebalance { dry_run, timeout_secs } => {
            rebalance(&mut store, &names, dry_run, Duration::from_secs(timeout_secs), json).await
        }
        Command::Pause { cluster, reason } => {
            store.pause(&cluster, Some(&reason)).await?;
            print(json, &json!({"cluster": cluster, "paused": reason}), &format!("automatic failover of {cluster} paused: {reason}"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Resume { cluster } => {
            store.pause(&cluster, None).await?;
            print(json, &json!({"cluster": cluster, "paused": null}), &format!("automatic failover of {cluster} resumed"));
            Ok(ExitCode::SUCCESS)
        }
        Command::History { cluster } => {
            let history = store.status(&cluster).await?.map(|s| s.history).unwrap_or_default();
            print(json, &json!(history), &render::history(&history, now_ms()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { cluster } => check(&mut store, &names, cluster.as_deref(), &cli.nameserver, json).await,
        Command::Completions { .. } | Command::MigrateEnv { .. } => Ok(ExitCode::SUCCESS),
    }
}

fn cluster_arg(command: &Command) -> Option<&str> {
    match command {
        Command::Status { cluster, .. }
        | Command::Trigger { cluster }
        | Command::Switchover { cluster, .. }
        | Command::Pause { cluster, .. }
        | Command::Resume { cluster }
        | Command::History { cluster } => Some(cluster),
        Command::Define(define) => Some(&define.cluster),
        Command::Durability(args) => Some(&args.cluster),
        Command::Check { cluster } => cluster.as_deref(),
        Command::List | Command::Rebalance { .. } | Command::Completions { .. } | Command::MigrateEnv { .. } => None,
    }
}

fn print(json: bool, value: &serde_json::Value, human: &str) {
    if json {
        println!("{value}");
    } else {
        println!("{}", human.trim_end());
    }
}

/// The zone of node names: dnsd's (`/domain` in etcd); `--domain` only before
/// any dnsd ran, and refused when it differs from dnsd's.
async fn names(store: &mut Store, domain: Option<&str>) -> Result<Names, CommandError> {
    let recorded = store.domain().await?;
    let domain = match (domain, recorded) {
        (Some(given), Some(recorded)) if Names::new(given).ok() != Names::new(&recorded).ok() => {
            return Err(CommandError::Invalid(format!("REDIS_TOPOLOGY_DOMAIN is {given} but dnsd serves {recorded} (/domain in etcd)")));
        }
        (_, Some(recorded)) => recorded,
        (Some(given), None) => given.to_string(),
        (None, None) => topology::names::DEFAULT_DOMAIN.to_string(),
    };
    Names::new(&domain).map_err(|e| CommandError::Invalid(format!("domain: {e}")))
}

/// How long `list` and `status` wait for a redis's offset: one that does not
/// answer by then shows none.
const OFFSET_TIMEOUT: Duration = Duration::from_millis(300);

async fn list(store: &mut Store, names: &Names, credentials: &Credentials, json: bool) -> Result<ExitCode, CommandError> {
    let mut states = store.clusters(None).await?;
    read_offsets(&mut states, credentials, OFFSET_TIMEOUT).await;
    let views: Vec<_> = states.iter().map(|c| c.view(names)).collect();
    let now = now_ms();
    let human = if views.is_empty() { "no clusters".to_string() } else { views.iter().map(|v| render::cluster(v, now)).collect::<Vec<_>>().join("\n") };
    print(json, &json!(views), &human);
    Ok(ExitCode::SUCCESS)
}

async fn status(
    store: &mut Store,
    names: &Names,
    credentials: &Credentials,
    cluster: &str,
    watch: bool,
    interval_ms: u64,
    json: bool,
) -> Result<ExitCode, CommandError> {
    let clear = watch && !json && std::io::stdout().is_terminal();
    let mut last = None;
    loop {
        let mut state = store.cluster(cluster).await?;
        read_offsets(std::slice::from_mut(&mut state), credentials, OFFSET_TIMEOUT).await;
        let view = state.view(names);
        let value = json!({"cluster": view, "status": state.status});
        if last.as_ref() != Some(&value) {
            let mut human = render::cluster(&view, now_ms());
            if let Some(status) = &state.status {
                human += &format!("\n{}", render::report(status));
            }
            if clear {
                print!("\x1b[2J\x1b[H");
            }
            print(json, &value, &human);
            if watch && !json && !clear {
                println!("---");
            }
            last = Some(value);
        }
        if !watch {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(Duration::from_millis(interval_ms.max(100))).await;
    }
}

async fn define(store: &mut Store, names: &Names, define: Define, json: bool) -> Result<ExitCode, CommandError> {
    let cluster = define.cluster.as_str();
    let topology = match (&define.file, &define.master) {
        (Some(file), _) => {
            let mut text = Vec::new();
            let read = if file.as_os_str() == "-" {
                std::io::stdin().read_to_end(&mut text).map(drop)
            } else {
                std::fs::read(file).map(|t| text = t)
            };
            read.map_err(|e| CommandError::Invalid(format!("{}: {e}", file.display())))?;
            Topology::from_json(&text).map_err(|e| CommandError::Invalid(format!("{}: {e}", file.display())))?
        }
        (None, Some(master)) => {
            let member = |arg: &str| model::member_arg(names, cluster, arg).map_err(CommandError::invalid);
            let slaves = define.slave.iter().map(|s| member(s)).collect::<Result<Vec<_>, _>>()?;
            let durability = define.min_replicas_to_write.map(|n| topology::Durability {
                min_replicas_to_write: n,
                min_replicas_max_lag: define.min_replicas_max_lag,
            });
            Topology::new(member(master)?, slaves)
                .and_then(|t| t.with_durability(durability))
                .map_err(CommandError::invalid)?
        }
        (None, None) => return Err(CommandError::Invalid("give --master (and --slave ...) or --file".into())),
    };
    let topology = model::checked(names, cluster, topology).map_err(CommandError::invalid)?;
    let shared = model::shared_hosts(&store.cluster(cluster).await?, names, &topology);
    if !shared.is_empty() {
        let said: Vec<String> = shared.iter().map(|(host, nodes)| format!("{} run on host {host}", nodes.join(" and "))).collect();
        if !define.force {
            return Err(CommandError::Invalid(format!(
                "{}: losing that machine would lose them together; place them on different hosts, or pass --force",
                said.join("; ")
            )));
        }
        eprintln!("redis-topology: warning: {} (--force)", said.join("; "));
    }
    let revision = store.define(cluster, &topology).await?;
    print(
        json,
        &json!({"cluster": cluster, "topology": serde_json::from_str::<serde_json::Value>(&topology.to_json()).unwrap_or_default(), "revision": revision}),
        &format!("defined {cluster} (revision {revision}): {}", topology.to_json()),
    );
    Ok(ExitCode::SUCCESS)
}

/// Rewrites the cluster's topology with a new durability, only if the topology
/// read is still the one in etcd.
async fn durability(store: &mut Store, args: DurabilityArgs, json: bool) -> Result<ExitCode, CommandError> {
    let cluster = args.cluster.as_str();
    let state = store.cluster(cluster).await?;
    let Some((topology, read_revision)) = state.topology else {
        return Err(CommandError::Invalid(format!("cluster {cluster} has no topology defined")));
    };
    let durability = args.min_replicas_to_write.filter(|_| !args.clear).map(|n| topology::Durability {
        min_replicas_to_write: n,
        min_replicas_max_lag: args.min_replicas_max_lag,
    });
    let topology = topology.with_durability(durability).map_err(CommandError::invalid)?;
    let revision = store.replace(cluster, &topology, read_revision).await?;
    let said = match durability {
        Some(d) => format!(
            "durability of {cluster}: min-replicas-to-write {} within {} s; topology revision {revision} written",
            d.min_replicas_to_write, d.min_replicas_max_lag
        ),
        None => format!("durability of {cluster} cleared; topology revision {revision} written"),
    };
    print(json, &json!({"cluster": cluster, "revision": revision, "durability": durability}), &said);
    Ok(ExitCode::SUCCESS)
}

async fn switchover(store: &mut Store, names: &Names, cluster: &str, to: &str, wait: Option<Duration>, json: bool) -> Result<ExitCode, CommandError> {
    let state = store.cluster(cluster).await?;
    let (topology, revision) = store.switch_over(&state, names, to).await?;
    if !json {
        println!("switchover of {cluster} to {}: topology revision {revision} written", topology.master);
    }
    let Some(timeout) = wait else {
        if json {
            println!("{}", json!({"cluster": cluster, "revision": revision, "master": topology.master.to_string()}));
        }
        return Ok(ExitCode::SUCCESS);
    };
    let (outcome, status) = wait_round(store, cluster, revision, timeout, !json).await?;
    if outcome.is_none() {
        eprintln!("redis-topology: revision {revision} not applied within {}s", timeout.as_secs());
    }
    if let Some(status) = &status {
        print(json, &json!({"cluster": cluster, "revision": revision, "status": status}), &render::report(status));
    }
    Ok(match outcome {
        Some(Outcome::Done) => ExitCode::SUCCESS,
        Some(Outcome::Partial) => ExitCode::from(3),
        _ => ExitCode::FAILURE,
    })
}

/// Waits until the observer's round of `revision` (or a later one) ends: its
/// outcome, `None` when `timeout` passed first, and the last status read.
/// `progress`: print each new state of the round.
async fn wait_round(
    store: &mut Store,
    cluster: &str,
    revision: i64,
    timeout: Duration,
    progress: bool,
) -> Result<(Option<Outcome>, Option<topology::records::StatusRecord>), CommandError> {
    let started = Instant::now();
    let mut seen = None;
    loop {
        let status = store.status(cluster).await?;
        if let Some(status) = &status {
            let outcome = model::outcome(status, revision);
            let line = (status.topology_revision, status.result.clone(), status.failures);
            if progress && status.topology_revision >= revision && seen.as_ref() != Some(&line) {
                println!("  observer: round of revision {}: {}{}", status.topology_revision, status.result, status.error.as_ref().map_or(String::new(), |e| format!(" ({e})")));
                seen = Some(line);
            }
            if outcome != Outcome::Pending {
                return Ok((Some(outcome), Some(status.clone())));
            }
        }
        if started.elapsed() > timeout {
            return Ok((None, status));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One move of a rebalance as it went.
#[derive(Debug, serde::Serialize)]
struct MoveReport {
    #[serde(flatten)]
    planned: Move,
    /// `done`; `partial` (applied, members left out); `failed`; `timed out`
    /// (written, not applied in time: the observer may still apply it); `not
    /// done` (never written).
    result: &'static str,
    /// The topology revision written, if any.
    revision: Option<i64>,
    error: Option<String>,
}

/// Plans the moves from what etcd holds and, unless `dry_run`, runs them one
/// group at a time, stopping at the first that does not end `done`.
async fn rebalance(store: &mut Store, names: &Names, dry_run: bool, timeout: Duration, json: bool) -> Result<ExitCode, CommandError> {
    let states = store.clusters(None).await?;
    let groups = placement::groups(&states, names);
    let live = placement::live_hosts(&states);
    let plan = match placement::plan(&groups, &live) {
        Ok(plan) => plan,
        Err(why) => {
            print(json, &json!({"error": why.to_string(), "unreachable": why}), &format!("cannot rebalance: {why}"));
            return Ok(ExitCode::FAILURE);
        }
    };
    if !json {
        println!("{}", render::plan(&plan).trim_end());
    }
    if dry_run || plan.moves.is_empty() {
        if json {
            println!("{}", json!({"plan": plan, "dry_run": dry_run}));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut reports: Vec<MoveReport> = Vec::new();
    let mut stopped = false;
    for planned in &plan.moves {
        if stopped {
            reports.push(MoveReport { planned: planned.clone(), result: "not done", revision: None, error: None });
            continue;
        }
        if !json {
            println!("moving {planned}");
        }
        let report = move_master(store, names, planned, timeout, !json).await;
        stopped = report.result != "done";
        if !json {
            match &report.error {
                Some(error) => println!("  {}: {error}", report.result),
                None => println!("  {} (topology revision {})", report.result, report.revision.unwrap_or_default()),
            }
        }
        reports.push(report);
    }
    let human = reports
        .iter()
        .map(|r| format!("{:>9}: {}{}", r.result, r.planned, r.error.as_ref().map_or(String::new(), |e| format!(" ({e})"))))
        .collect::<Vec<_>>()
        .join("\n");
    print(json, &json!({"plan": plan, "moves": reports}), &format!("rebalance {}:\n{human}", if stopped { "stopped" } else { "done" }));
    Ok(if stopped { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One move: re-read the group, check the plan still holds for it, write the
/// switchover only over the topology read, and wait for the observer's round.
async fn move_master(store: &mut Store, names: &Names, planned: &Move, timeout: Duration, progress: bool) -> MoveReport {
    let report = |result, revision, error: Option<String>| MoveReport { planned: planned.clone(), result, revision, error };
    let state = match store.cluster(&planned.group).await {
        Ok(state) => state,
        Err(e) => return report("failed", None, Some(e.to_string())),
    };
    // The plan was made from an earlier read: another move, a failover or an
    // operator may have changed the group since.
    let Some(group) = placement::groups(std::slice::from_ref(&state), names).pop() else {
        return report("failed", None, Some("the group has no topology any more".into()));
    };
    if group.master.node != planned.from || !group.master.eligible {
        return report("failed", None, Some(format!("the master is now {}, serving: {}; not the one planned", group.master.node, group.master.eligible)));
    }
    if !group.slaves.iter().any(|s| s.node == planned.to && s.eligible) {
        return report("failed", None, Some(format!("{} is no longer a healthy slave following the master", planned.to)));
    }
    let (topology, revision) = match store.switch_over(&state, names, &planned.to).await {
        Ok(written) => written,
        Err(e) => return report("failed", None, Some(e.to_string())),
    };
    if progress {
        println!("  switchover of {} to {}: topology revision {revision} written", planned.group, topology.master);
    }
    let why = |status: &Option<topology::records::StatusRecord>| status.as_ref().and_then(|s| s.error.clone());
    match wait_round(store, &planned.group, revision, timeout, progress).await {
        Ok((Some(Outcome::Done), _)) => report("done", Some(revision), None),
        Ok((Some(Outcome::Partial), status)) => report("partial", Some(revision), why(&status).or(Some("members left out".into()))),
        Ok((Some(_), status)) => report("failed", Some(revision), why(&status).or(Some("the observer's round failed".into()))),
        Ok((None, _)) => report(
            "timed out",
            Some(revision),
            Some(format!("not applied within {}s; the observer may still apply it", timeout.as_secs())),
        ),
        Err(e) => report("failed", Some(revision), Some(format!("written, then: {e}"))),
    }
}

async fn check(store: &mut Store, names: &Names, cluster: Option<&str>, nameservers: &[std::net::SocketAddr], json: bool) -> Result<ExitCode, CommandError> {
    let mut states = store.clusters(cluster).await?;
    if let Some(cluster) = cluster
        && states.is_empty()
    {
        states.push(model::ClusterState { name: cluster.to_string(), ..model::ClusterState::default() });
    }
    let resolver = match nameservers {
        [] => None,
        some => Some(service::resolve::MemberResolver::new(some).map_err(CommandError::invalid)?),
    };
    let mut results = Vec::new();
    for state in &states {
        let answer = match &resolver {
            Some(resolver) => Some(match resolver.srv(&names.master_srv(&state.name)).await {
                Ok(addrs) => DnsAnswer::Addresses(addrs.iter().map(ToString::to_string).collect()),
                Err(e) => DnsAnswer::Error(e.to_string()),
            }),
            None => None,
        };
        results.push((state.name.clone(), state.check(names, answer.as_ref())));
    }
    let agree = results.iter().all(|(_, diffs)| diffs.is_empty());
    let human = results
        .iter()
        .map(|(name, diffs)| {
            if diffs.is_empty() {
                format!("{name}: OK (roles, topology and DNS agree)")
            } else {
                format!("{name}: {} difference(s)\n{}", diffs.len(), diffs.iter().map(|d| format!("  - {d}")).collect::<Vec<_>>().join("\n"))
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let value = json!(results.iter().map(|(name, diffs)| json!({"cluster": name, "agree": diffs.is_empty(), "differences": diffs})).collect::<Vec<_>>());
    print(json, &value, if results.is_empty() { "no clusters" } else { &human });
    Ok(if agree { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
