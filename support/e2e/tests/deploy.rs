#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Deployment (deploy/, scripts/install.sh): the systemd units pass
//! `systemd-analyze verify` with the binaries installed where they say, the fleet
//! units have what fleet and systemd need, every setting in an example env file is
//! a flag the service knows, and the services tell systemd they are ready (only
//! once they serve), keep feeding the watchdog and say when they stop.
//!
//! None of this needs systemd running: `systemd-analyze verify --root` checks units
//! offline, and readiness is read from a NOTIFY_SOCKET the test itself binds.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{Etcd, Redis, Service};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file() && path.to_string_lossy().ends_with(suffix))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {suffix} files in {dir}");
    found
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------
// A unit file parser: enough of systemd.syntax(7) for these checks.

/// `(section, key, value)` in file order; comments and blank lines dropped,
/// backslash continuations joined.
fn parse_unit(text: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut entries = Vec::new();
    let mut section: Option<String> = None;
    let mut pending = String::new();
    for (number, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(rest) = line.strip_suffix('\\') {
            pending.push_str(rest);
            pending.push(' ');
            continue;
        }
        let line = std::mem::take(&mut pending) + line;
        if let Some(name) = line.strip_prefix('[') {
            let name = name.strip_suffix(']').ok_or(format!("line {}: bad section header", number + 1))?;
            section = Some(name.to_string());
            continue;
        }
        let Some(section) = &section else { return Err(format!("line {}: key outside a section", number + 1)) };
        let (key, value) = line.split_once('=').ok_or(format!("line {}: not key=value: {line}", number + 1))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("line {}: bad key {key:?}", number + 1));
        }
        entries.push((section.clone(), key.to_string(), value.trim().to_string()));
    }
    if !pending.is_empty() {
        return Err("file ends inside a continuation".into());
    }
    Ok(entries)
}

fn values<'a>(unit: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    unit.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.as_str()).collect()
}

fn sections(unit: &[(String, String, String)]) -> BTreeSet<&str> {
    unit.iter().map(|(s, _, _)| s.as_str()).collect()
}

#[test]
fn the_unit_parser_reads_sections_keys_and_continuations() {
    let unit = parse_unit("# c\n[Unit]\nDescription=a b\n\n[Service]\nExecStart=/bin/x \\\n  --y\n; c\n").unwrap();
    assert_eq!(values(&unit, "Unit", "Description"), ["a b"]);
    assert_eq!(values(&unit, "Service", "ExecStart"), ["/bin/x  --y"]);
    assert!(parse_unit("Key=outside\n").is_err());
    assert!(parse_unit("[Unit]\nno equals sign\n").is_err());
}

// ---------------------------------------------------------------------------
// The project's binaries and what their --help says.

const SERVICES: [&str; 4] = ["dictator", "dnsd", "observer", "node-agent"];

fn help(binary: &str) -> String {
    let output = Command::new(harness::binary(binary)).arg("--help").output().unwrap();
    assert!(output.status.success(), "{binary} --help failed");
    String::from_utf8(output.stdout).unwrap()
}

/// The `[env: NAME=...]` variables of a binary's `--help`.
fn help_env(binary: &str) -> BTreeSet<String> {
    help(binary)
        .split("[env: ")
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect())
        .collect()
}

/// `REDIS_TOPOLOGY_KEY` of every `REDIS_TOPOLOGY_KEY=...` line, commented (`#REDIS_TOPOLOGY_KEY=`, an example default) or not.
fn env_keys(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (commented, line) = match line.strip_prefix('#') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, line),
            };
            let (key, _) = line.split_once('=')?;
            let valid = !key.is_empty()
                && key.starts_with(|c: char| c.is_ascii_uppercase())
                && key.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            valid.then(|| (key.to_string(), commented))
        })
        .collect()
}

/// Which binary reads an env file: `dnsd.env` -> dnsd, `node-agent-redis-1-node-1.env` -> node-agent.
fn binary_of_env(file: &str) -> Option<&'static str> {
    SERVICES.into_iter().filter(|service| file.starts_with(service)).max_by_key(|service| service.len())
}

/// The log level is read by the logging library, not a flag; every service honours it.
const NOT_FLAGS: [&str; 1] = ["RUST_LOG"];

#[test]
fn every_setting_in_an_env_example_is_a_flag_of_its_service() {
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for path in files("deploy/env", ".env") {
        let name = file_name(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = env_keys(&text);
        assert!(keys.iter().any(|(_, commented)| !commented), "{name}: sets nothing");
        let known: BTreeSet<String> = if name == "haproxy.env" {
            // HAProxy's settings are the variables deploy/haproxy/haproxy.cfg uses.
            let cfg = std::fs::read_to_string(repo().join("deploy/haproxy/haproxy.cfg")).unwrap();
            cfg.split("${").skip(1).filter_map(|rest| rest.split_once('}')).map(|(var, _)| var.to_string()).collect()
        } else {
            let binary = binary_of_env(&name).unwrap_or_else(|| panic!("{name}: which service reads it?"));
            covered.insert(binary);
            help_env(binary)
        };
        assert!(!known.is_empty(), "{name}: found no variables to check against");
        for (key, _) in keys {
            if !known.contains(&key) && !NOT_FLAGS.contains(&key.as_str()) {
                problems.push(format!("{name}: {key} is not one of {known:?}"));
            }
        }
    }
    assert!(problems.is_empty(), "settings no service reads:\n{}", problems.join("\n"));
    assert_eq!(covered, SERVICES.into_iter().collect(), "every service has an example env file");
}

#[test]
fn every_variable_and_flag_a_unit_sets_is_a_flag_of_its_service() {
    let mut checked = 0;
    for path in files("deploy/systemd", ".service").into_iter().chain(files("deploy/fleet", ".service")) {
        let name = file_name(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        // Commented-out settings (`#Key=value`) too: an operator will uncomment them.
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix('#') {
                Some(rest) if rest.split_once('=').is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric())) => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let unit = parse_unit(&uncommented).unwrap_or_else(|e| panic!("{name}: {e}"));
        let Some(exec) = values(&unit, "Service", "ExecStart").first().copied() else { continue };
        let Some(binary) = SERVICES.into_iter().find(|s| exec.split_whitespace().next().unwrap().ends_with(&format!("/{s}"))) else {
            continue;
        };
        let known = help_env(binary);
        for environment in values(&unit, "Service", "Environment") {
            let key = environment.trim_matches('"').split_once('=').unwrap().0;
            assert!(known.contains(key), "{name}: Environment={key} is not a flag of {binary}");
            checked += 1;
        }
        let help = help(binary);
        for flag in exec.split_whitespace().filter(|word| word.starts_with("--")) {
            assert!(help.contains(&format!("{flag} ")), "{name}: {binary} has no flag {flag}");
            checked += 1;
        }
    }
    assert!(checked > 0, "nothing checked");
}

// ---------------------------------------------------------------------------
// systemd units.

fn systemd_analyze() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("systemd-analyze"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!("systemd-analyze not found: it comes with the Debian package `systemd` (apt-get install systemd)")
    })
}

fn cp_a(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let status = Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(status.success(), "cp -a {} {}", from.display(), to.display());
}

/// Runs scripts/install.sh into `destdir` with the binaries the tests use.
fn install(destdir: &Path, extra: &[&str]) -> String {
    let bin_dir = harness::binary("dictator").parent().unwrap().to_path_buf();
    let output = Command::new(repo().join("scripts/install.sh"))
        .arg("--no-build")
        .arg("--bin-dir")
        .arg(&bin_dir)
        .arg("--destdir")
        .arg(destdir)
        .args(extra)
        .env_remove("DESTDIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "install.sh failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// A root for `systemd-analyze verify --root`: what install.sh puts in place, on
/// top of this machine's own units (sysinit.target, Debian's redis-server@.service
/// and haproxy.service, which the units bind to or extend).
fn verify_root(root: &Path) {
    install(root, &[]);
    let system = Path::new("/usr/lib/systemd/system");
    for (unit, package) in [("sysinit.target", "systemd"), ("redis-server@.service", "redis-server"), ("haproxy.service", "haproxy")] {
        assert!(system.join(unit).exists(), "{unit} missing from {}: install the Debian package `{package}`", system.display());
    }
    cp_a(system, &root.join("usr/lib/systemd/system"));
    // Executables of the distribution units the verified ones extend or use.
    for (binary, package) in [("/usr/sbin/haproxy", "haproxy"), ("/usr/bin/mkdir", "coreutils")] {
        assert!(Path::new(binary).exists(), "{binary} missing: install the Debian package `{package}`");
        cp_a(Path::new(binary), &root.join(binary.trim_start_matches('/')));
    }
}

fn verify(analyze: &Path, root: &Path, unit: &str) -> Result<(), String> {
    let output = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()))
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    // Unknown keys and the like are only warnings (exit 0): they fail here too.
    if output.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{unit} ({}):\n{}", output.status, said.trim()))
    }
}

/// The unit to verify for a file: a template as one instance; a drop-in directory
/// as the unit it extends.
fn unit_to_verify(name: &str, instance: &str) -> String {
    match name.strip_suffix(".d") {
        Some(unit) => unit.to_string(),
        None => name.replace("@.", &format!("@{instance}.")),
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_with_the_binaries_installed() {
    let analyze = systemd_analyze();
    let root = tempfile::tempdir().unwrap();
    verify_root(root.path());

    let mut names: Vec<String> = std::fs::read_dir(repo().join("deploy/systemd"))
        .unwrap()
        .map(|entry| file_name(&entry.unwrap().path()))
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in &names {
        let unit = unit_to_verify(name, "redis-1-node-1");
        if let Err(e) = verify(&analyze, root.path(), &unit) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "systemd-analyze verify:\n{}", failures.join("\n\n"));
    for expected in ["dictator.service", "dnsd.service", "observer.service", "redis-node-agent@.service"] {
        assert!(names.iter().any(|n| n == expected), "deploy/systemd/{expected} is missing");
    }

    // The check itself catches what it must: a typo and a binary not in place.
    let dictator = root.path().join("etc/systemd/system/dictator.service");
    let good = std::fs::read_to_string(&dictator).unwrap();
    std::fs::write(&dictator, good.replace("Restart=on-failure", "Restart=on-failure\nRestartSecs=1")).unwrap();
    assert!(verify(&analyze, root.path(), "dictator.service").is_err(), "an unknown key passed");
    std::fs::write(&dictator, &good).unwrap();
    std::fs::remove_file(root.path().join("usr/local/bin/dictator")).unwrap();
    assert!(verify(&analyze, root.path(), "dictator.service").is_err(), "a missing binary passed");
}

#[test]
fn systemd_units_are_notify_services_with_a_watchdog_and_hardening() {
    for path in files("deploy/systemd", ".service") {
        let name = file_name(&path);
        let unit = parse_unit(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let one = |key: &str| -> String {
            let found = values(&unit, "Service", key);
            assert_eq!(found.len(), 1, "{name}: [Service] {key}= once, found {found:?}");
            found[0].to_string()
        };
        assert_eq!(one("Type"), "notify", "{name}");
        assert_eq!(one("NotifyAccess"), "main", "{name}");
        assert!(one("WatchdogSec").ends_with('s'), "{name}: WatchdogSec");
        assert!(["on-failure", "always"].contains(&one("Restart").as_str()), "{name}: Restart");
        let binary = one("ExecStart").split_whitespace().next().unwrap().to_string();
        assert!(binary.starts_with("/usr/local/bin/"), "{name}: ExecStart in the install prefix: {binary}");
        let env_files = values(&unit, "Service", "EnvironmentFile");
        assert!(
            env_files.iter().any(|f| f.starts_with("/etc/redis-topology/") && f.ends_with(".env")),
            "{name}: an EnvironmentFile under /etc/redis-topology: {env_files:?}"
        );
        for (key, want) in [
            ("DynamicUser", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectKernelModules", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictNamespaces", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("LockPersonality", "yes"),
            ("SystemCallArchitectures", "native"),
            ("SystemCallFilter", "@system-service"),
            ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ] {
            assert_eq!(one(key), want, "{name}: {key}");
        }
        let capabilities = one("CapabilityBoundingSet");
        if name == "dnsd.service" {
            assert_eq!(capabilities, "CAP_NET_BIND_SERVICE", "dnsd binds port 53 and nothing more");
        } else {
            assert_eq!(capabilities, "", "{name}: no capabilities");
        }
        assert_eq!(values(&unit, "Install", "WantedBy"), ["multi-user.target"], "{name}");
    }
    let agent = parse_unit(&std::fs::read_to_string(repo().join("deploy/systemd/redis-node-agent@.service")).unwrap()).unwrap();
    assert_eq!(values(&agent, "Unit", "BindsTo"), ["redis-server@%i.service"]);
    assert!(values(&agent, "Unit", "After").iter().any(|a| a.contains("redis-server@%i.service")));
    assert!(values(&agent, "Service", "EnvironmentFile").contains(&"/etc/redis-topology/node-agent-%i.env"));
}

#[test]
fn install_sh_is_idempotent_keeps_settings_and_follows_the_prefix() {
    let dest = tempfile::tempdir().unwrap();
    let first = install(dest.path(), &["--prefix", "/opt/redis-topology"]);
    assert!(first.contains("installed"), "{first}");
    let unit = std::fs::read_to_string(dest.path().join("etc/systemd/system/dnsd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/redis-topology/bin/dnsd --api-token-file ${CREDENTIALS_DIRECTORY}/api-token\n"),
        "ExecStart follows --prefix:\n{unit}"
    );
    assert!(dest.path().join("opt/redis-topology/bin/node-agent").is_file());
    assert!(dest.path().join("opt/redis-topology/bin/redis-topology").is_file());
    let completions = std::fs::read_to_string(dest.path().join("opt/redis-topology/share/bash-completion/completions/redis-topology")).unwrap();
    assert!(completions.contains("switchover"), "bash completions of redis-topology installed");
    assert!(dest.path().join("etc/redis-topology/haproxy-httpchk.cfg").is_file());
    assert!(dest.path().join("opt/redis-topology/share/redis-topology/monitoring/alerts.yml").is_file());
    for env in files("deploy/env", ".env") {
        assert!(dest.path().join("etc/redis-topology").join(file_name(&env)).is_file(), "{} installed", file_name(&env));
    }

    let mine = dest.path().join("etc/redis-topology/dnsd.env");
    std::fs::write(&mine, "REDIS_TOPOLOGY_DNS_LISTEN=127.0.0.1:53\n").unwrap();
    let again = install(dest.path(), &["--prefix", "/opt/redis-topology"]);
    assert!(!again.contains("installed") && !again.contains("updated"), "second run changed things:\n{again}");
    assert!(again.contains("kept"), "{again}");
    assert_eq!(std::fs::read_to_string(&mine).unwrap(), "REDIS_TOPOLOGY_DNS_LISTEN=127.0.0.1:53\n", "settings never overwritten");
}

// ---------------------------------------------------------------------------
// The Debian package (scripts/build-deb.sh). tests/systemd.rs installs and runs it.

/// `dpkg-deb` of the .deb built from the tests' binaries: its files, conffiles and
/// the text of one file in it.
fn deb_contents(deb: &Path, what: &[&str]) -> String {
    let output = Command::new("dpkg-deb").args(what).arg(deb).output().unwrap();
    assert!(output.status.success(), "dpkg-deb {what:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn the_debian_package_holds_renamed_binaries_units_running_them_and_conffiles() {
    let out = tempfile::tempdir().unwrap();
    let bin_dir = harness::binary("dictator").parent().unwrap().to_path_buf();
    for binary in SERVICES.into_iter().chain(["counter", "redis-topology"]) {
        harness::binary(binary);
    }
    let output = Command::new(repo().join("scripts/build-deb.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--fast", "--output"])
        .arg(out.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "build-deb.sh: {}", String::from_utf8_lossy(&output.stderr));
    let deb = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(deb.starts_with(out.path()) && deb.is_file(), "build-deb.sh printed {deb:?}");

    let listing = deb_contents(&deb, &["--contents"]);
    let contents: BTreeSet<&str> = listing.lines().filter_map(|l| l.split_whitespace().last()).collect();
    for service in SERVICES {
        assert!(contents.contains(format!("./usr/bin/redis-topology-{service}").as_str()), "{service} renamed:\n{listing}");
        assert!(!contents.contains(format!("./usr/bin/{service}").as_str()), "{service} under its plain name");
    }
    assert!(contents.contains("./usr/bin/redis-topology"), "the CLI:\n{listing}");
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(unpacked.path()).status().unwrap();
    assert!(status.success());
    for unit in files("deploy/systemd", ".service") {
        let name = file_name(&unit);
        let packaged = std::fs::read_to_string(unpacked.path().join("usr/lib/systemd/system").join(&name)).unwrap();
        let exec = packaged.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
        let binary = exec.split_whitespace().next().unwrap();
        assert!(binary.starts_with("/usr/bin/redis-topology-"), "{name}: ExecStart={exec}");
        assert!(contents.contains(format!(".{binary}").as_str()), "{name} runs {binary}, which the package lacks");
    }
    // Settings are conffiles (dpkg keeps edited ones on upgrade); secrets are not shipped.
    let control = tempfile::tempdir().unwrap();
    let status = Command::new("dpkg-deb").arg("-e").arg(&deb).arg(control.path()).status().unwrap();
    assert!(status.success());
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).unwrap();
    for env in files("deploy/env", ".env") {
        let path = format!("/etc/redis-topology/{}", file_name(&env));
        assert!(conffiles.lines().any(|l| l == path), "{path} is not a conffile:\n{conffiles}");
    }
    assert!(conffiles.lines().any(|l| l == "/etc/redis-topology/haproxy.cfg"), "{conffiles}");
    assert!(!listing.contains("password") && !listing.contains(".pem"), "a secret file in the package:\n{listing}");
    for script in ["postinst", "prerm", "postrm"] {
        assert!(control.path().join(script).is_file(), "maintainer script {script}");
    }
}

// ---------------------------------------------------------------------------
// fleet units.

#[test]
fn fleet_units_have_their_sections_keys_and_scheduling() {
    let mut names = BTreeSet::new();
    for path in files("deploy/fleet", ".service") {
        let name = file_name(&path);
        let unit = parse_unit(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            sections(&unit),
            ["Service", "Unit", "X-Fleet"].into_iter().collect(),
            "{name}: [Unit], [Service] and [X-Fleet], no [Install] (fleet starts units itself)"
        );
        assert_eq!(values(&unit, "Unit", "Description").len(), 1, "{name}: Description");
        assert_eq!(values(&unit, "Service", "ExecStart").len(), 1, "{name}: ExecStart");
        assert!(!values(&unit, "Service", "Restart").is_empty(), "{name}: Restart");
        let prefix = name.split('@').next().unwrap();
        assert!(name.ends_with("@.service"), "{name}: a template");
        if prefix == "redis-server" || prefix == "redis-node-agent" {
            // One per machine of the cluster the instance names.
            assert_eq!(values(&unit, "X-Fleet", "Global"), ["true"], "{name}");
            assert_eq!(values(&unit, "X-Fleet", "MachineMetadata"), ["hosts=%i"], "{name}");
        } else {
            // Replicas never share a machine.
            assert_eq!(values(&unit, "X-Fleet", "Conflicts"), [format!("{prefix}@*.service")], "{name}");
            assert!(values(&unit, "X-Fleet", "Global").is_empty(), "{name}");
        }
        if SERVICES.contains(&prefix) || prefix == "redis-node-agent" {
            assert_eq!(values(&unit, "Service", "Type"), ["notify"], "{name}");
            assert!(!values(&unit, "Service", "WatchdogSec").is_empty(), "{name}: WatchdogSec");
        }
        names.insert(prefix.to_string());
    }
    let want: BTreeSet<String> =
        ["dictator", "dnsd", "observer", "redis-node-agent", "redis-server"].map(String::from).into_iter().collect();
    assert_eq!(names, want);
    let agent = parse_unit(&std::fs::read_to_string(repo().join("deploy/fleet/redis-node-agent@.service")).unwrap()).unwrap();
    assert_eq!(values(&agent, "Unit", "BindsTo"), ["redis-server@%i.service"]);
}

/// fleet hands [Unit]/[Service] to systemd (which ignores [X-Fleet]): they must be
/// valid there too. The machine is a CoreOS one: binaries in /opt/bin, docker.
#[test]
fn fleet_units_pass_systemd_analyze_verify() {
    let analyze = systemd_analyze();
    let root = tempfile::tempdir().unwrap();
    verify_root(root.path());
    let units = root.path().join("etc/systemd/system");
    for binary in SERVICES {
        cp_a(&harness::binary(binary), &root.path().join("opt/bin").join(binary));
    }
    // Stand-ins for what Container Linux ships: docker and its unit.
    let docker = root.path().join("usr/bin/docker");
    std::fs::write(&docker, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(units.join("docker.service"), "[Unit]\nDescription=docker\n[Service]\nExecStart=/usr/bin/docker daemon\n")
        .unwrap();
    let mut failures = Vec::new();
    for path in files("deploy/fleet", ".service") {
        let name = file_name(&path);
        std::fs::copy(&path, units.join(&name)).unwrap();
        let instance = if name.starts_with("redis-") { "redis-1" } else { "1" };
        if let Err(e) = verify(&analyze, root.path(), &unit_to_verify(&name, instance)) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "systemd-analyze verify:\n{}", failures.join("\n\n"));
}

// ---------------------------------------------------------------------------
// sd_notify: readiness, watchdog, stopping.

/// The test's end of NOTIFY_SOCKET.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, path, _dir: dir, seen: Vec::new() }
    }

    /// What a service started by systemd with WatchdogSec=1s gets (no WATCHDOG_PID:
    /// the pid is not known before the spawn, and sd_notify accepts its absence).
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("NOTIFY_SOCKET", self.path.to_string_lossy().into_owned()), ("WATCHDOG_USEC", "1000000".into())]
    }

    /// Waits until a datagram with the line `line` has arrived.
    fn wait_for(&mut self, line: &str, timeout: Duration) {
        self.wait_count(line, 1, timeout);
    }

    /// Waits until `count` datagrams with the line `line` have arrived.
    fn wait_count(&mut self, line: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while self.count(line) < count {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{count} x {line} not received within {timeout:?}; received: {:?}", self.messages());
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    /// Waits until a STATUS= line containing `text` has arrived.
    fn wait_status(&mut self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while !self.seen.iter().flat_map(|m| m.lines()).any(|l| l.starts_with("STATUS=") && l.contains(text)) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no STATUS with {text:?} within {timeout:?}; received: {:?}", self.messages());
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen.iter().filter(|m| m.lines().any(|l| l == line)).count()
    }

    fn messages(&self) -> Vec<&str> {
        self.seen.iter().map(String::as_str).collect()
    }

    /// Every STATUS= line received, joined.
    fn status(&self) -> String {
        self.seen.iter().flat_map(|m| m.lines()).filter_map(|l| l.strip_prefix("STATUS=")).collect::<Vec<_>>().join(" | ")
    }
}

fn start(name: &str, args: &[&str], notify: &NotifySocket) -> Service {
    let env = notify.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Service::start(name, args, &env)
}

/// After READY=1: WATCHDOG=1 keeps coming (every half of WATCHDOG_USEC), and
/// SIGTERM brings STOPPING=1 and a clean exit.
fn watchdog_then_stop(mut service: Service, notify: &mut NotifySocket) {
    let fed = notify.count("WATCHDOG=1");
    // Pings keep coming after READY=1. How often (every 500 ms for WATCHDOG_USEC
    // 1 s) is printed, not asserted: the test proves the pings, not the pace.
    let waiting = Instant::now();
    notify.wait_count("WATCHDOG=1", fed + 3, Duration::from_secs(60));
    println!("3 more WATCHDOG=1 pings in {:?} (WATCHDOG_USEC 1 s)", waiting.elapsed());
    let status = service.process().terminate(Duration::from_secs(10));
    notify.wait_for("STOPPING=1", Duration::from_secs(20));
    assert!(status.is_some_and(|s| s.success()), "clean exit after SIGTERM: {status:?}\n{}", service.log());
}

#[test]
fn dictator_is_ready_once_it_serves_and_feeds_the_watchdog() {
    let mut notify = NotifySocket::bind();
    let port = harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    let service = start("dictator", &["--listen", &listen], &notify);
    notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(harness::etcd::http_get(port, "/healthz").is_some(), "READY=1 before the API answers");
    assert!(notify.status().contains(&listen), "STATUS names the address: {}", notify.status());
    watchdog_then_stop(service, &mut notify);
}

#[test]
fn dnsd_is_ready_once_dns_http_and_the_first_etcd_list_are_done() {
    let etcd = Etcd::start();
    let mut notify = NotifySocket::bind();
    let (http, dns) = (harness::free_port(), harness::free_port());
    let (listen, dns_listen) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{dns}"));
    let service = start(
        "dnsd",
        &["--listen", &listen, "--dns-listen", &dns_listen, "--etcd-endpoints", &etcd.endpoint()],
        &notify,
    );
    notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(harness::etcd::http_get(http, "/healthz").is_some(), "READY=1 before the API answers");
    assert!(std::net::TcpStream::connect(&dns_listen).is_ok(), "READY=1 before DNS (TCP) listens");
    assert!(notify.status().contains("etcd listed"), "READY=1 after the etcd list: {}", notify.status());
    watchdog_then_stop(service, &mut notify);
}

#[test]
fn dnsd_without_etcd_is_ready_after_the_first_attempt_and_keeps_retrying() {
    let mut notify = NotifySocket::bind();
    let (http, dns, nothing) = (harness::free_port(), harness::free_port(), harness::free_port());
    let (listen, dns_listen) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{dns}"));
    let etcd = format!("http://127.0.0.1:{nothing}");
    let mut service =
        start("dnsd", &["--listen", &listen, "--dns-listen", &dns_listen, "--etcd-endpoints", &etcd], &notify);
    notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(notify.status().contains("etcd unavailable"), "{}", notify.status());
    assert!(service.process().is_running());
}

#[test]
fn observer_is_ready_once_etcd_answers_and_http_listens() {
    let etcd = Etcd::start();
    let mut notify = NotifySocket::bind();
    let port = harness::free_port();
    let listen = format!("127.0.0.1:{port}");
    let service = start(
        "observer",
        &[
            "--listen",
            &listen,
            "--etcd-endpoints",
            &etcd.endpoint(),
            "--dictator",
            "http://127.0.0.1:9",
            "--dnsd",
            "http://127.0.0.1:9",
        ],
        &notify,
    );
    notify.wait_for("READY=1", Duration::from_secs(20));
    assert!(harness::etcd::http_get(port, "/healthz").is_some(), "READY=1 before the endpoint answers");
    // STATUS= follows what the observer does, not only its start.
    notify.wait_status("leading: applying topologies", Duration::from_secs(20));
    watchdog_then_stop(service, &mut notify);
}

#[test]
fn observer_status_says_when_it_no_longer_leads() {
    let mut etcd = Etcd::start();
    let mut notify = NotifySocket::bind();
    let listen = format!("127.0.0.1:{}", harness::free_port());
    let _service = start(
        "observer",
        &["--listen", &listen, "--etcd-endpoints", &etcd.endpoint(), "--election-ttl-secs", "2",
          "--dictator", "http://127.0.0.1:9", "--dnsd", "http://127.0.0.1:9"],
        &notify,
    );
    notify.wait_status("leading: applying topologies", Duration::from_secs(20));
    etcd.kill();
    notify.wait_status("not leading: ", Duration::from_secs(30));
}

#[test]
fn node_agent_is_ready_once_its_registration_is_in_etcd() {
    let etcd = Etcd::start();
    let mut redis = Redis::start();
    let mut notify = NotifySocket::bind();
    let listen = format!("127.0.0.1:{}", harness::free_port());
    let service = start(
        "node-agent",
        &[
            "--cluster",
            "redis-1",
            "--node",
            "node-1",
            "--redis",
            &redis.host_port(),
            "--listen",
            &listen,
            "--etcd-endpoints",
            &etcd.endpoint(),
        ],
        &notify,
    );
    notify.wait_for("READY=1", Duration::from_secs(20));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let registered = runtime.block_on(async {
        let mut client = etcd.client().await;
        client.get("/nodes/redis-1/node-1", None).await.unwrap().kvs().len()
    });
    assert_eq!(registered, 1, "READY=1 before the registration is in etcd");
    // STATUS= follows redis and the registration.
    notify.wait_status("redis up (master); registered at /nodes/redis-1/node-1", Duration::from_secs(20));
    redis.kill();
    notify.wait_status("redis DOWN", Duration::from_secs(20));
    watchdog_then_stop(service, &mut notify);
}

#[test]
fn without_notify_socket_services_run_as_before() {
    let port = harness::free_port();
    let mut service = Service::start("dictator", &["--listen", &format!("127.0.0.1:{port}")], &[("WATCHDOG_USEC", "1000")]);
    service.wait_http(port);
    assert!(service.process().is_running());
}
