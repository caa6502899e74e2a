//! One prefix for every variable the services and HAProxy's config read, and the
//! way from the names before it.
//!
//! Unprefixed names (`LISTEN`, `CLUSTER`, `NODE`, `KEY`, ...) collided with the
//! variables of containers and CI, so every one now starts with [`PREFIX`]; etcd's
//! endpoints use etcdctl's own `ETCDCTL_ENDPOINTS`, like the other `ETCDCTL_*`.
//! [`RENAMED`] is the one table of old and new names: services warn at start when an
//! old name is set and the new one is not ([`parse`]), and `redis-topology
//! migrate-env` rewrites env files and unit drop-ins with it ([`migrate`]).

use clap::Parser;

/// The prefix of every variable the services, the tools and HAProxy's config read.
pub const PREFIX: &str = "REDIS_TOPOLOGY_";

/// `(old, new)`: every variable that was renamed, sorted by the old name.
pub const RENAMED: &[(&str, &str)] = &[
    ("ADVERTISE_ADDRESS", "REDIS_TOPOLOGY_ADVERTISE_ADDRESS"),
    ("ADVERTISE_PORT", "REDIS_TOPOLOGY_ADVERTISE_PORT"),
    ("API_AUTH_READS", "REDIS_TOPOLOGY_API_AUTH_READS"),
    ("API_TOKEN_FILE", "REDIS_TOPOLOGY_API_TOKEN_FILE"),
    ("CATCH_UP_TIMEOUT_MS", "REDIS_TOPOLOGY_CATCH_UP_TIMEOUT_MS"),
    ("CLUSTER", "REDIS_TOPOLOGY_CLUSTER"),
    ("COUNT", "REDIS_TOPOLOGY_COUNT"),
    ("DICTATOR", "REDIS_TOPOLOGY_DICTATOR"),
    ("DNSD", "REDIS_TOPOLOGY_DNSD"),
    ("DNSD_DNS", "REDIS_TOPOLOGY_DNSD_DNS"),
    ("DNSD_DNS_2", "REDIS_TOPOLOGY_DNSD_DNS_2"),
    ("DNSD_DNS_3", "REDIS_TOPOLOGY_DNSD_DNS_3"),
    ("DNS_LISTEN", "REDIS_TOPOLOGY_DNS_LISTEN"),
    ("DNS_UDP_SOCKETS", "REDIS_TOPOLOGY_DNS_UDP_SOCKETS"),
    ("DOMAIN", "REDIS_TOPOLOGY_DOMAIN"),
    ("DOWN_GRACE_SECS", "REDIS_TOPOLOGY_DOWN_GRACE_SECS"),
    ("DURATION_SECS", "REDIS_TOPOLOGY_DURATION_SECS"),
    ("ELECTION_TTL_SECS", "REDIS_TOPOLOGY_ELECTION_TTL_SECS"),
    ("ETCD_ENDPOINTS", "ETCDCTL_ENDPOINTS"),
    ("ETCD_PASSWORD_FILE", "REDIS_TOPOLOGY_ETCD_PASSWORD_FILE"),
    ("ETCD_PREFIX", "REDIS_TOPOLOGY_ETCD_PREFIX"),
    ("FAILOVER_AFTER_MS", "REDIS_TOPOLOGY_FAILOVER_AFTER_MS"),
    ("FAILOVER_AFTER_REFUSED_MS", "REDIS_TOPOLOGY_FAILOVER_AFTER_REFUSED_MS"),
    ("FAILOVER_COOLDOWN_SECS", "REDIS_TOPOLOGY_FAILOVER_COOLDOWN_SECS"),
    ("HAPROXY_LUA", "REDIS_TOPOLOGY_HAPROXY_LUA"),
    ("HAPROXY_READ_BACKEND", "REDIS_TOPOLOGY_HAPROXY_READ_BACKEND"),
    ("HAPROXY_READ_SERVER", "REDIS_TOPOLOGY_HAPROXY_READ_SERVER"),
    ("HAPROXY_RUNTIME", "REDIS_TOPOLOGY_HAPROXY_RUNTIME"),
    ("HAPROXY_WRITE_BACKEND", "REDIS_TOPOLOGY_HAPROXY_WRITE_BACKEND"),
    ("HAPROXY_WRITE_SERVER", "REDIS_TOPOLOGY_HAPROXY_WRITE_SERVER"),
    ("HTTP_HEADER_TIMEOUT_MS", "REDIS_TOPOLOGY_HTTP_HEADER_TIMEOUT_MS"),
    ("HTTP_MAX_CONNECTIONS", "REDIS_TOPOLOGY_HTTP_MAX_CONNECTIONS"),
    ("HTTP_REQUEST_TIMEOUT_MS", "REDIS_TOPOLOGY_HTTP_REQUEST_TIMEOUT_MS"),
    ("INTERVAL_MS", "REDIS_TOPOLOGY_INTERVAL_MS"),
    ("KEY", "REDIS_TOPOLOGY_KEY"),
    ("LEASE_TTL_SECS", "REDIS_TOPOLOGY_LEASE_TTL_SECS"),
    ("LISTEN", "REDIS_TOPOLOGY_LISTEN"),
    ("LOCK_WAIT_MS", "REDIS_TOPOLOGY_LOCK_WAIT_MS"),
    ("LOG_FORMAT", "REDIS_TOPOLOGY_LOG_FORMAT"),
    ("MASTER_PROBE_MS", "REDIS_TOPOLOGY_MASTER_PROBE_MS"),
    ("MIN_REPLICAS_MAX_LAG", "REDIS_TOPOLOGY_MIN_REPLICAS_MAX_LAG"),
    ("MIN_REPLICAS_TO_WRITE", "REDIS_TOPOLOGY_MIN_REPLICAS_TO_WRITE"),
    ("NAMESERVER", "REDIS_TOPOLOGY_NAMESERVER"),
    ("NODE", "REDIS_TOPOLOGY_NODE"),
    ("OBSERVER_ID", "REDIS_TOPOLOGY_OBSERVER_ID"),
    ("RATE", "REDIS_TOPOLOGY_RATE"),
    ("READ_BIND", "REDIS_TOPOLOGY_READ_BIND"),
    ("REDIS", "REDIS_TOPOLOGY_REDIS"),
    ("REDIS_CHECK_PASSWORD", "REDIS_TOPOLOGY_REDIS_CHECK_PASSWORD"),
    ("REDIS_CHECK_USER", "REDIS_TOPOLOGY_REDIS_CHECK_USER"),
    ("REDIS_COMMAND_TIMEOUT_MS", "REDIS_TOPOLOGY_REDIS_COMMAND_TIMEOUT_MS"),
    ("REDIS_CONNECT_TIMEOUT_MS", "REDIS_TOPOLOGY_REDIS_CONNECT_TIMEOUT_MS"),
    ("REDIS_PASSWORD", "REDIS_TOPOLOGY_REDIS_PASSWORD"),
    ("REDIS_PASSWORD_FILE", "REDIS_TOPOLOGY_REDIS_PASSWORD_FILE"),
    ("REDIS_TIMEOUT_MS", "REDIS_TOPOLOGY_REDIS_TIMEOUT_MS"),
    ("REDIS_USER", "REDIS_TOPOLOGY_REDIS_USER"),
    ("REQUEST_TIMEOUT_MS", "REDIS_TOPOLOGY_REQUEST_TIMEOUT_MS"),
    ("RETRY_MAX_MS", "REDIS_TOPOLOGY_RETRY_MAX_MS"),
    ("RETRY_MIN_MS", "REDIS_TOPOLOGY_RETRY_MIN_MS"),
    ("RUNTIME_SOCKET", "REDIS_TOPOLOGY_RUNTIME_SOCKET"),
    ("SELF_FENCE_AFTER_MS", "REDIS_TOPOLOGY_SELF_FENCE_AFTER_MS"),
    ("SENTINEL_ANNOUNCE", "REDIS_TOPOLOGY_SENTINEL_ANNOUNCE"),
    ("SENTINEL_LISTEN", "REDIS_TOPOLOGY_SENTINEL_LISTEN"),
    ("STATS_BIND", "REDIS_TOPOLOGY_STATS_BIND"),
    ("TIMEOUT_MS", "REDIS_TOPOLOGY_TIMEOUT_MS"),
    ("TLS_CA", "REDIS_TOPOLOGY_TLS_CA"),
    ("TLS_CERT", "REDIS_TOPOLOGY_TLS_CERT"),
    ("TLS_CLIENT_CA", "REDIS_TOPOLOGY_TLS_CLIENT_CA"),
    ("TLS_CLIENT_CERT", "REDIS_TOPOLOGY_TLS_CLIENT_CERT"),
    ("TLS_CLIENT_KEY", "REDIS_TOPOLOGY_TLS_CLIENT_KEY"),
    ("TLS_KEY", "REDIS_TOPOLOGY_TLS_KEY"),
    ("TTL", "REDIS_TOPOLOGY_TTL"),
    ("VERIFY_TIMEOUT_MS", "REDIS_TOPOLOGY_VERIFY_TIMEOUT_MS"),
    ("WRITE_BIND", "REDIS_TOPOLOGY_WRITE_BIND"),
];

/// The current name of `old`, if it was renamed.
pub fn renamed(old: &str) -> Option<&'static str> {
    RENAMED.binary_search_by(|(o, _)| (*o).cmp(old)).ok().map(|i| RENAMED[i].1)
}

/// Every variable `command` (and its subcommands) reads.
pub fn read_by(command: &clap::Command) -> Vec<String> {
    let mut names: Vec<String> = command
        .get_arguments()
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_string_lossy().into_owned())
        .collect();
    for sub in command.get_subcommands() {
        names.extend(read_by(sub));
    }
    names.sort();
    names.dedup();
    names
}

/// A warning for every old name `lookup` finds set whose new name, one `reads`
/// holds, is not: that setting is ignored now, which would otherwise go unseen.
pub fn legacy_warnings(reads: &[String], lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
    RENAMED
        .iter()
        .filter(|(old, new)| reads.iter().any(|r| r == new) && lookup(old).is_some() && lookup(new).is_none())
        .map(|(old, new)| format!("{old} is set but no longer read: rename it {new} (README, \"Environment variables\")"))
        .collect()
}

/// Parses the command line like `P::parse()`, and returns the warnings about old
/// variable names for the caller to log once logging is up. When parsing fails
/// (a required flag whose value now sits under an old name), they go to stderr first.
pub fn parse<P: Parser>() -> (P, Vec<String>) {
    let command = P::command();
    let warnings = legacy_warnings(&read_by(&command), |name| std::env::var(name).ok());
    let parsed = command.try_get_matches().and_then(|mut matches| P::from_arg_matches_mut(&mut matches));
    match parsed {
        Ok(parsed) => (parsed, warnings),
        Err(error) => {
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            error.exit()
        }
    }
}

/// Logs the warnings of [`parse`], once logging is set up.
pub fn warn(warnings: &[String]) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

/// One rename [`migrate`] made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rename {
    /// 1-based.
    pub line: usize,
    pub old: &'static str,
    pub new: &'static str,
}

/// `text` (an env file, or a unit or drop-in with `Environment=` lines) with every
/// old name assigned or commented out renamed: `OLD=`, `#OLD=`, `export OLD=`,
/// `Environment=OLD=` and `Environment="OLD=`. Values, comments and other names
/// are left as they are.
pub fn migrate(text: &str) -> (String, Vec<Rename>) {
    let mut out = String::with_capacity(text.len() + 64);
    let mut renames = Vec::new();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match rename_line(line) {
            Some((migrated, old, new)) => {
                out.push_str(&migrated);
                renames.push(Rename { line: i + 1, old, new });
            }
            None => out.push_str(line),
        }
    }
    (out, renames)
}

fn rename_line(line: &str) -> Option<(String, &'static str, &'static str)> {
    let mut at = 0;
    // Any mix of the leads, in any order: `# export OLD=`, `Environment="OLD=`.
    loop {
        let rest = &line[at..];
        let skip = ["#", " ", "\t", "export ", "Environment=", "\""].iter().find(|lead| rest.starts_with(*lead));
        match skip {
            Some(lead) => at += lead.len(),
            None => break,
        }
    }
    let rest = &line[at..];
    let (name, _) = rest.split_once('=')?;
    let (old, new) = RENAMED.iter().find(|(old, _)| *old == name)?;
    Some((format!("{}{new}{}", &line[..at], &rest[name.len()..]), old, new))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_every_new_name_is_prefixed_or_etcdctl() {
        assert!(RENAMED.windows(2).all(|w| w[0].0 < w[1].0), "sorted by the old name, without repeats");
        for (old, new) in RENAMED {
            assert!(new.starts_with(PREFIX) || new.starts_with("ETCDCTL_"), "{new}");
            assert!(!old.starts_with(PREFIX), "{old}");
            assert_eq!(renamed(old), Some(*new));
        }
        assert_eq!(renamed("ETCD_ENDPOINTS"), Some("ETCDCTL_ENDPOINTS"));
        assert_eq!(renamed("HOST"), None, "REDIS_TOPOLOGY_HOST never had an unprefixed name");
        assert_eq!(renamed("RUST_LOG"), None);
    }

    #[test]
    fn old_names_in_env_files_and_units_are_renamed_and_nothing_else_is() {
        let before = "# comment naming LISTEN stays\nLISTEN=127.0.0.1:8000\n#ETCD_PREFIX=\n  # TTL=1\n\
                      export NODE=node-1\nEnvironment=REDIS_PASSWORD_FILE=%d/redis-password\n\
                      Environment=\"CLUSTER=redis 1\"\nRUST_LOG=info\nETCDCTL_CERT=/c.pem\n\
                      REDIS_TOPOLOGY_LISTEN=already\nLISTENER=not-ours\nETCD_ENDPOINTS=http://a:2379,http://b:2379";
        let (after, renames) = migrate(before);
        assert_eq!(
            after,
            "# comment naming LISTEN stays\nREDIS_TOPOLOGY_LISTEN=127.0.0.1:8000\n#REDIS_TOPOLOGY_ETCD_PREFIX=\n  # REDIS_TOPOLOGY_TTL=1\n\
             export REDIS_TOPOLOGY_NODE=node-1\nEnvironment=REDIS_TOPOLOGY_REDIS_PASSWORD_FILE=%d/redis-password\n\
             Environment=\"REDIS_TOPOLOGY_CLUSTER=redis 1\"\nRUST_LOG=info\nETCDCTL_CERT=/c.pem\n\
             REDIS_TOPOLOGY_LISTEN=already\nLISTENER=not-ours\nETCDCTL_ENDPOINTS=http://a:2379,http://b:2379"
        );
        let lines: Vec<usize> = renames.iter().map(|r| r.line).collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7, 12]);
        assert_eq!(migrate(&after).1, [], "a migrated file has nothing left to rename");
    }

    #[test]
    fn a_warning_only_for_an_old_name_set_without_its_new_one_among_the_commands_own() {
        let reads = vec!["REDIS_TOPOLOGY_LISTEN".to_string(), "REDIS_TOPOLOGY_CLUSTER".to_string(), "ETCDCTL_ENDPOINTS".to_string()];
        let env = |set: &'static [&'static str]| move |name: &str| set.contains(&name).then(|| "x".to_string());
        // NODE is not this command's: CI's own NODE is none of our business.
        let warnings = legacy_warnings(&reads, env(&["LISTEN", "NODE", "CLUSTER", "REDIS_TOPOLOGY_CLUSTER", "ETCD_ENDPOINTS"]));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].starts_with("ETCD_ENDPOINTS is set but no longer read: rename it ETCDCTL_ENDPOINTS"));
        assert!(warnings[1].starts_with("LISTEN is set but no longer read: rename it REDIS_TOPOLOGY_LISTEN"));
        assert!(legacy_warnings(&reads, env(&[])).is_empty());
    }
}
