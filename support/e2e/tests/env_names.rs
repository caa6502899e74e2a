//! Environment variable names (#19 item 4): every one the services, the tools and
//! HAProxy's config read carries the `REDIS_TOPOLOGY_` prefix (etcd's are etcdctl's
//! own `ETCDCTL_*`); what ships uses only names something reads; an old name still
//! set is reported, never silently taken; and `redis-topology migrate-env` turns the
//! env files of before the rename into the ones shipped now.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::binary;
use service::env::{PREFIX, RENAMED};

const BINARIES: &[&str] = &["dictator", "dnsd", "observer", "node-agent", "counter", "redis-topology"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn help(name: &str, args: &[&str]) -> String {
    let out = Command::new(binary(name)).args(args).arg("--help").env_clear().output().expect("run --help");
    assert!(out.status.success(), "{name} {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `[env: NAME=...]` names of a help text.
fn env_names(help: &str) -> BTreeSet<String> {
    help.split("[env: ")
        .skip(1)
        .map(|rest| rest.split(['=', ']']).next().unwrap_or_default().to_string())
        .collect()
}

/// Every name the binaries document, over their subcommands too.
fn read_by_binaries() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for name in BINARIES {
        let top = help(name, &[]);
        names.extend(env_names(&top));
        // Subcommands are listed under "Commands:", two spaces in, until a blank line.
        let commands = top.split("Commands:\n").nth(1).unwrap_or_default();
        for line in commands.lines().take_while(|l| !l.trim().is_empty()) {
            let sub = line.split_whitespace().next().unwrap_or_default();
            if !sub.is_empty() && sub != "help" {
                names.extend(env_names(&help(name, &[sub])));
            }
        }
    }
    names
}

/// The `${NAME}` and `defined(NAME)` names of HAProxy's shipped configs.
fn read_by_haproxy() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in ["deploy/haproxy/haproxy.cfg", "deploy/haproxy/haproxy-httpchk.cfg"] {
        let text = std::fs::read_to_string(repo().join(file)).expect(file);
        for (open, close) in [("${", '}'), ("defined(", ')')] {
            for rest in text.split(open).skip(1) {
                names.insert(rest.split(close).next().unwrap_or_default().to_string());
            }
        }
    }
    names
}

/// Names read with `std::env::var` by tools and tests that take no flag for them.
const READ_WITHOUT_A_FLAG: &[&str] = &["REDIS_TOPOLOGY_REDIS_PASSWORD"];

#[test]
fn every_variable_read_is_prefixed_and_every_rename_names_one_that_is_read() {
    let binaries = read_by_binaries();
    let haproxy = read_by_haproxy();
    assert!(binaries.contains("REDIS_TOPOLOGY_LISTEN") && binaries.contains("ETCDCTL_ENDPOINTS"), "{binaries:?}");
    assert!(haproxy.contains("REDIS_TOPOLOGY_DNSD_DNS"), "{haproxy:?}");
    for name in binaries.iter().chain(&haproxy) {
        assert!(name.starts_with(PREFIX) || name.starts_with("ETCDCTL_"), "{name} collides with others' variables");
    }
    for (old, new) in RENAMED {
        assert!(
            binaries.contains(*new) || haproxy.contains(*new) || READ_WITHOUT_A_FLAG.contains(new),
            "{old} -> {new}: nothing reads {new}"
        );
    }
}

/// The names set by a file's lines, commented out or not: `NAME=` in an env file,
/// `Environment=NAME=` in a unit.
fn assigned(text: &str, unit: bool) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            let line = if unit { line.strip_prefix("Environment=")?.trim_start_matches('"') } else { line };
            let (name, _) = line.split_once('=')?;
            let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            is_name.then(|| name.to_string())
        })
        .collect()
}

fn shipped_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(repo().join(dir)).expect(dir).map(|e| e.expect("entry").path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

#[test]
fn the_shipped_env_files_and_units_set_only_names_something_reads() {
    let mut read = read_by_binaries();
    read.extend(read_by_haproxy());
    // And CONFIG, which Debian's haproxy.service reads and our drop-in sets.
    read.extend(["RUST_LOG", "ETCDCTL_PASSWORD", "CONFIG"].map(String::from));
    let env_files = shipped_files("deploy/env").into_iter().map(|f| (f, false));
    let units = ["deploy/systemd", "deploy/fleet", "deploy/systemd/haproxy.service.d"].into_iter().flat_map(shipped_files);
    let mut checked = 0;
    for (file, unit) in env_files.chain(units.map(|f| (f, true))) {
        let text = std::fs::read_to_string(&file).expect("read");
        for name in assigned(&text, unit) {
            assert!(read.contains(&name), "{}: {name} is read by nothing", file.display());
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} assignments found: the parser lost them");
}

#[test]
fn an_old_name_still_set_is_reported_and_not_taken() {
    // The node-agent's cluster and node under their old names: not read, so the
    // required flags are missing, and the error says why.
    let out = Command::new(binary("node-agent"))
        .env_clear()
        .env("CLUSTER", "redis-1")
        .env("NODE", "node-1")
        .env("REDIS_TOPOLOGY_NODE", "node-1")
        .output()
        .expect("run node-agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("warning: CLUSTER is set but no longer read: rename it REDIS_TOPOLOGY_CLUSTER"), "{stderr}");
    assert!(stderr.contains("--cluster"), "{stderr}");
    assert!(!stderr.contains("NODE is set"), "NODE has its new name set too: nothing to report\n{stderr}");
}

/// `text` as it was before the rename: every new name assigned at the start of a
/// line (after `#`, `export ` or `Environment=`, as `migrate-env` reads them) back
/// to its old one. Mentions inside comments are prose, and stay.
fn before_the_rename(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let name_at = line.len() - line.trim_start_matches(['#', ' ']).trim_start_matches("Environment=").len();
            let rest = &line[name_at..];
            match RENAMED.iter().find(|(_, new)| rest.strip_prefix(new).is_some_and(|r| r.starts_with('='))) {
                Some((old, new)) => format!("{}{old}{}", &line[..name_at], &rest[new.len()..]),
                None => line.to_string(),
            }
        })
        .collect()
}

#[test]
fn migrate_env_turns_the_old_env_files_into_the_shipped_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut pairs = Vec::new();
    for file in shipped_files("deploy/env") {
        let shipped = std::fs::read_to_string(&file).expect("read");
        let old = before_the_rename(&shipped);
        assert_ne!(old, shipped, "{} has no renamed name", file.display());
        let path = dir.path().join(file.file_name().expect("name"));
        std::fs::write(&path, &old).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        pairs.push((path, old, shipped));
    }
    let files: Vec<&Path> = pairs.iter().map(|(p, _, _)| p.as_path()).collect();
    let migrate = |extra: &[&str]| {
        Command::new(binary("redis-topology")).arg("migrate-env").args(extra).args(&files).env_clear().output().expect("run")
    };

    // A look first: it lists what it would rename, changes nothing, and exits 1.
    let look = migrate(&[]);
    let listed = String::from_utf8_lossy(&look.stdout);
    assert_eq!(look.status.code(), Some(1), "{listed}");
    assert!(listed.contains("dnsd.env:5: rename ETCD_ENDPOINTS to ETCDCTL_ENDPOINTS"), "{listed}");
    for (path, old, _) in &pairs {
        assert_eq!(&std::fs::read_to_string(path).expect("read"), old, "without --write nothing changes");
    }

    let write = migrate(&["--write"]);
    assert!(write.status.success(), "{}", String::from_utf8_lossy(&write.stderr));
    for (path, old, shipped) in &pairs {
        assert_eq!(&std::fs::read_to_string(path).expect("read"), shipped, "{}", path.display());
        assert_eq!(std::fs::metadata(path).expect("stat").permissions().mode() & 0o777, 0o600, "the mode is kept");
        let backup = path.with_file_name(format!("{}.bak", path.file_name().expect("name").to_string_lossy()));
        assert_eq!(&std::fs::read_to_string(backup).expect("the backup"), old);
    }
    let again = migrate(&[]);
    assert!(again.status.success(), "nothing left: {}", String::from_utf8_lossy(&again.stdout));

    let missing = Command::new(binary("redis-topology"))
        .args(["migrate-env", "/nonexistent/dictator.env"])
        .env_clear()
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/dictator.env"));
}

#[test]
fn the_readme_migration_names_every_renamed_variable() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let section = readme.split("### Environment variables").nth(1).expect("the README's section").split("\n## ").next().unwrap_or_default();
    for (old, new) in RENAMED {
        assert!(section.contains(&format!("`{old}`")), "the README's migration lacks {old} (now {new})");
    }
}
