//! The read-only part of the Redis Sentinel protocol, answered from the state dnsd
//! serves. Pure: [`answer`] turns (state, command) into the reply; the socket side
//! is [`crate::sentinel_server`].
//!
//! Each published cluster is a Sentinel master, named after the cluster. The field
//! names and shapes are the ones `redis-server --sentinel` (7.0) returns, so clients
//! parse them as they are; fields dnsd has no equivalent for (ping times,
//! down-after-milliseconds, ...) are `0`. What dnsd knows maps onto them:
//!
//! - `ip`/`port`: the published master (or slave), as in the SRV records;
//! - `runid`, `slave-repl-offset`: from the member's node registration, when it is a node;
//! - `flags`: `master`/`slave`, plus `s_down` for a member whose node is registered
//!   unhealthy (a slave also when its registration is gone: the read-pool rule);
//! - `config-epoch`: the etcd revision of `/dns/<cluster>`, so it grows with every publish;
//! - `num-other-sentinels`: the other dnsd replicas registered under `/sentinels/`.
//!
//! Nothing here can change the topology: write commands, Sentinel's own write
//! subcommands (`FAILOVER`, `SET`, `MONITOR`, ...) and anything unknown get an error.

use std::collections::BTreeSet;
use std::fmt;

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame as Frame;
use topology::records::{PublishedMember, PublishedTopology};

use crate::state::Records;
use crate::zone::{in_read_pool, Published};

/// The redis version reported in `HELLO` and `INFO`: the Sentinel whose replies these
/// mimic. Clients use it to choose features; dnsd has no version of its own there.
pub const COMPAT_VERSION: &str = "7.0.0";

/// The pub/sub channel of a master change.
pub const SWITCH_MASTER: &str = "+switch-master";

/// Who answers: this replica's run id and the port clients reach it on.
#[derive(Debug, Clone)]
pub struct Identity {
    pub run_id: String,
    pub port: u16,
}

/// What one connection has said so far.
#[derive(Debug, Default, Clone)]
pub struct Session {
    pub id: u64,
    pub name: Option<Bytes>,
    channels: BTreeSet<Bytes>,
    patterns: BTreeSet<Bytes>,
}

impl Session {
    pub fn new(id: u64) -> Session {
        Session { id, ..Session::default() }
    }

    /// In pub/sub mode: only (un)subscribing, `PING` and `QUIT` are allowed.
    pub fn subscribed(&self) -> bool {
        !self.channels.is_empty() || !self.patterns.is_empty()
    }

    fn subscriptions(&self) -> i64 {
        (self.channels.len() + self.patterns.len()) as i64
    }
}

/// The frames to send, and whether to close the connection after them.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub frames: Vec<Frame>,
    pub close: bool,
}

impl From<Frame> for Reply {
    fn from(frame: Frame) -> Reply {
        Reply { frames: vec![frame], close: false }
    }
}

/// Where a master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl From<&PublishedMember> for Endpoint {
    fn from(m: &PublishedMember) -> Endpoint {
        Endpoint { host: m.host.clone(), port: m.port }
    }
}

/// A published master moved: Sentinel's `+switch-master`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub cluster: String,
    pub from: Endpoint,
    pub to: Endpoint,
}

impl Switch {
    /// `<name> <old-ip> <old-port> <new-ip> <new-port>`, as Sentinel publishes it.
    pub fn message(&self) -> String {
        format!("{} {} {} {} {}", self.cluster, self.from.host, self.from.port, self.to.host, self.to.port)
    }
}

/// The masters that moved from `before` to `after`. A cluster published for the
/// first time, or deleted, did not switch (Sentinel announces neither either).
pub fn switches(before: &Published, after: &Published) -> Vec<Switch> {
    after
        .iter()
        .filter_map(|(cluster, (topology, _))| {
            let (old, _) = before.get(cluster)?;
            let (from, to) = (Endpoint::from(&old.master), Endpoint::from(&topology.master));
            (from != to).then(|| Switch { cluster: cluster.clone(), from, to })
        })
        .collect()
}

/// The frames a switch sends to `session`: one `message` if it subscribed to the
/// channel, one `pmessage` per matching pattern.
pub fn deliver(session: &Session, switch: &Switch) -> Vec<Frame> {
    let payload = bulk(switch.message());
    let mut frames = Vec::new();
    if session.channels.contains(SWITCH_MASTER.as_bytes()) {
        frames.push(Frame::Array(vec![bulk("message"), bulk(SWITCH_MASTER), payload.clone()]));
    }
    for pattern in &session.patterns {
        let matches = std::str::from_utf8(pattern)
            .is_ok_and(|p| wildmatch::WildMatch::new(p).matches(SWITCH_MASTER));
        if matches {
            frames.push(Frame::Array(vec![bulk("pmessage"), Frame::BulkString(pattern.clone()), bulk(SWITCH_MASTER), payload.clone()]));
        }
    }
    frames
}

/// The commands served: (name, arity as redis counts it, flags).
const COMMANDS: &[(&str, i64, &[&str])] = &[
    ("auth", -2, &["noscript", "loading", "stale", "fast", "no_auth"]),
    ("client", -2, &["noscript", "loading", "stale"]),
    ("command", -1, &["loading", "stale"]),
    ("hello", -1, &["noscript", "loading", "stale", "fast", "no_auth"]),
    ("info", -1, &["loading", "stale"]),
    ("ping", -1, &["fast", "sentinel"]),
    ("psubscribe", -2, &["pubsub", "noscript", "loading", "stale"]),
    ("punsubscribe", -1, &["pubsub", "noscript", "loading", "stale"]),
    ("quit", -1, &["noscript", "loading", "stale", "fast", "no_auth"]),
    ("role", 1, &["noscript", "loading", "stale", "fast"]),
    ("sentinel", -2, &["admin", "noscript", "loading", "stale"]),
    ("subscribe", -2, &["pubsub", "noscript", "loading", "stale"]),
    ("unsubscribe", -1, &["pubsub", "noscript", "loading", "stale"]),
];

/// Sentinel subcommands that change something: never served.
const SENTINEL_WRITES: &[&str] = &[
    "config", "debug", "failover", "flushconfig", "monitor", "remove", "reset", "set", "simulate-failure",
];

/// The reply to one command (`args[0]` is its name). `records` is the state being
/// served; `session` carries the connection's name and subscriptions.
pub fn answer(records: &Records, me: &Identity, session: &mut Session, args: &[Bytes]) -> Reply {
    let Some(name) = args.first() else {
        return error("ERR Protocol error: empty command").into();
    };
    let command = String::from_utf8_lossy(name).to_ascii_lowercase();
    let rest = &args[1..];
    let Some((_, arity, _)) = COMMANDS.iter().find(|(c, _, _)| *c == command) else {
        return unknown_command(name, rest).into();
    };
    let arity_ok = if *arity >= 0 { args.len() as i64 == *arity } else { args.len() as i64 >= -arity };
    if !arity_ok {
        return wrong_arity(&command).into();
    }
    if session.subscribed() && !matches!(command.as_str(), "subscribe" | "psubscribe" | "unsubscribe" | "punsubscribe" | "ping" | "quit") {
        return error(format!(
            "ERR Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        ))
        .into();
    }
    match command.as_str() {
        "ping" => ping(session, rest).into(),
        "quit" => Reply { frames: vec![ok()], close: true },
        "auth" => auth(rest).into(),
        "hello" => hello(session, rest).into(),
        "client" => client(session, rest).into(),
        "command" => command_info(rest).into(),
        "role" => Frame::Array(vec![bulk("sentinel"), Frame::Array(records.published().keys().map(bulk).collect())]).into(),
        "info" => info(records, me, rest).into(),
        "sentinel" => sentinel(records, me, rest).into(),
        "subscribe" | "psubscribe" => subscribe(session, command == "psubscribe", rest),
        "unsubscribe" | "punsubscribe" => unsubscribe(session, command == "punsubscribe", rest),
        _ => unknown_command(name, rest).into(),
    }
}

fn ping(session: &Session, rest: &[Bytes]) -> Frame {
    match (rest, session.subscribed()) {
        ([], false) => Frame::SimpleString(Bytes::from_static(b"PONG")),
        ([message], false) => Frame::BulkString(message.clone()),
        ([], true) => Frame::Array(vec![bulk("pong"), bulk("")]),
        ([message], true) => Frame::Array(vec![bulk("pong"), Frame::BulkString(message.clone())]),
        _ => wrong_arity("ping"),
    }
}

/// Accepted without checking: the Sentinel port serves only where the masters are,
/// which the DNS records publish too; configurations that send a Sentinel password
/// keep working.
fn auth(rest: &[Bytes]) -> Frame {
    if rest.len() > 2 {
        return error("ERR syntax error");
    }
    ok()
}

fn hello(session: &mut Session, rest: &[Bytes]) -> Frame {
    let mut rest = rest.iter();
    if let Some(version) = rest.next() {
        match std::str::from_utf8(version).ok().and_then(|v| v.parse::<i64>().ok()) {
            Some(2) => {}
            Some(_) => return error("NOPROTO unsupported protocol version: dnsd's Sentinel answers RESP2 only"),
            None => return error("ERR Protocol version is not an integer or out of range"),
        }
    }
    let mut name = None;
    while let Some(option) = rest.next() {
        match option.to_ascii_lowercase().as_slice() {
            b"auth" => {
                if rest.next().is_none() || rest.next().is_none() {
                    return error(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option)));
                }
            }
            b"setname" => match rest.next() {
                Some(n) if valid_client_name(n) => name = Some(n.clone()),
                Some(_) => return invalid_client_name(),
                None => return error(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option))),
            },
            _ => return error(format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(option))),
        }
    }
    if name.is_some() {
        session.name = name;
    }
    Frame::Array(vec![
        bulk("server"), bulk("redis"),
        bulk("version"), bulk(COMPAT_VERSION),
        bulk("proto"), Frame::Integer(2),
        bulk("id"), Frame::Integer(session.id as i64),
        bulk("mode"), bulk("sentinel"),
        bulk("modules"), Frame::Array(vec![]),
    ])
}

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

fn invalid_client_name() -> Frame {
    error("ERR Client names cannot contain spaces, newlines or special characters.")
}

/// The `CLIENT` subcommands clients send when they connect.
fn client(session: &mut Session, rest: &[Bytes]) -> Frame {
    let sub = String::from_utf8_lossy(&rest[0]).to_ascii_lowercase();
    match (sub.as_str(), &rest[1..]) {
        ("setname", [name]) if valid_client_name(name) => {
            session.name = (!name.is_empty()).then(|| name.clone());
            ok()
        }
        ("setname", [_]) => invalid_client_name(),
        ("getname", []) => session.name.clone().map_or(Frame::Null, Frame::BulkString),
        ("id", []) => Frame::Integer(session.id as i64),
        // Library name and version (redis 7.2+ clients send them): nothing to keep.
        ("setinfo", [attribute, _]) => match attribute.to_ascii_lowercase().as_slice() {
            b"lib-name" | b"lib-ver" => ok(),
            _ => error(format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(attribute))),
        },
        ("help", []) => help("CLIENT", &[
            "GETNAME", "    Return the name of the current connection.",
            "ID", "    Return the ID of the current connection.",
            "SETINFO <LIB-NAME|LIB-VER> <value>", "    Accepted; nothing is kept.",
            "SETNAME <name>", "    Assign the name <name> to the current connection.",
        ]),
        ("setname" | "getname" | "id" | "setinfo" | "help", _) => wrong_arity(&format!("client|{sub}")),
        _ => unknown_subcommand(&rest[0], "CLIENT"),
    }
}

fn command_info(rest: &[Bytes]) -> Frame {
    let entry = |(name, arity, flags): &(&str, i64, &[&str])| {
        Frame::Array(vec![
            bulk(*name),
            Frame::Integer(*arity),
            Frame::Array(flags.iter().map(|f| Frame::SimpleString(Bytes::from(f.to_string()))).collect()),
            Frame::Integer(0),
            Frame::Integer(0),
            Frame::Integer(0),
            Frame::Array(vec![]),
            Frame::Array(vec![]),
            Frame::Array(vec![]),
            Frame::Array(vec![]),
        ])
    };
    let Some(sub) = rest.first() else {
        return Frame::Array(COMMANDS.iter().map(entry).collect());
    };
    match (String::from_utf8_lossy(sub).to_ascii_lowercase().as_str(), &rest[1..]) {
        ("count", []) => Frame::Integer(COMMANDS.len() as i64),
        ("list", []) => Frame::Array(COMMANDS.iter().map(|(name, _, _)| bulk(*name)).collect()),
        ("info", names) => Frame::Array(
            names
                .iter()
                .map(|n| {
                    let n = String::from_utf8_lossy(n).to_ascii_lowercase();
                    COMMANDS.iter().find(|(c, _, _)| *c == n).map_or(Frame::Null, entry)
                })
                .collect(),
        ),
        ("help", []) => help("COMMAND", &[
            "(no subcommand)", "    Return details about the commands served.",
            "COUNT", "    Return the number of commands served.",
            "INFO [<command-name> ...]", "    Return details about the given commands.",
            "LIST", "    Return the names of the commands served.",
        ]),
        ("count" | "list" | "help", _) => wrong_arity(&format!("command|{}", String::from_utf8_lossy(sub).to_ascii_lowercase())),
        _ => unknown_subcommand(sub, "COMMAND"),
    }
}

/// `INFO [section ...]`: the `# Server` and `# Sentinel` sections a Sentinel has.
fn info(records: &Records, me: &Identity, rest: &[Bytes]) -> Frame {
    let wanted: Vec<String> = rest.iter().map(|s| String::from_utf8_lossy(s).to_ascii_lowercase()).collect();
    let all = wanted.is_empty() || wanted.iter().any(|s| matches!(s.as_str(), "all" | "default" | "everything"));
    let mut sections = Vec::new();
    if all || wanted.iter().any(|s| s == "server") {
        sections.push(format!(
            "# Server\r\nredis_version:{COMPAT_VERSION}\r\nredis_mode:sentinel\r\nrun_id:{}\r\ntcp_port:{}\r\n",
            me.run_id, me.port
        ));
    }
    if all || wanted.iter().any(|s| s == "sentinel") {
        let mut s = format!(
            "# Sentinel\r\nsentinel_masters:{}\r\nsentinel_tilt:0\r\nsentinel_tilt_since_seconds:-1\r\nsentinel_running_scripts:0\r\nsentinel_scripts_queue_length:0\r\nsentinel_simulate_failure_flags:0\r\n",
            records.published().len()
        );
        let sentinels = records.sentinels().len().max(1);
        for (i, (cluster, (topology, _))) in records.published().iter().enumerate() {
            let status = if master_down(records, cluster, &topology.master) { "sdown" } else { "ok" };
            s.push_str(&format!(
                "master{i}:name={cluster},status={status},address={},slaves={},sentinels={sentinels}\r\n",
                Endpoint::from(&topology.master),
                topology.slaves.len()
            ));
        }
        sections.push(s);
    }
    Frame::BulkString(Bytes::from(sections.join("\r\n")))
}

fn sentinel(records: &Records, me: &Identity, rest: &[Bytes]) -> Frame {
    let sub = String::from_utf8_lossy(&rest[0]).to_ascii_lowercase();
    let args = &rest[1..];
    let master = |name: &Bytes| {
        let name = String::from_utf8_lossy(name);
        records.published().get_key_value(name.as_ref())
    };
    match (sub.as_str(), args) {
        ("get-master-addr-by-name", [name]) => match master(name) {
            Some((_, (topology, _))) => {
                Frame::Array(vec![bulk(&topology.master.host), bulk(topology.master.port.to_string())])
            }
            None => Frame::Null,
        },
        ("masters", []) => Frame::Array(
            records.published().iter().map(|(cluster, (t, revision))| fields(master_fields(records, me, cluster, t, *revision))).collect(),
        ),
        ("master", [name]) => match master(name) {
            Some((cluster, (t, revision))) => fields(master_fields(records, me, cluster, t, *revision)),
            None => no_such_master(),
        },
        ("replicas" | "slaves", [name]) => match master(name) {
            Some((cluster, (t, _))) => Frame::Array(t.slaves.iter().map(|s| fields(replica_fields(records, cluster, t, s))).collect()),
            None => no_such_master(),
        },
        ("sentinels", [name]) => match master(name) {
            Some(_) => Frame::Array(
                records
                    .sentinels()
                    .iter()
                    .filter(|(run_id, _)| **run_id != me.run_id)
                    .map(|(run_id, r)| {
                        fields(vec![
                            ("name", run_id.clone()), ("ip", r.address.clone()), ("port", r.port.to_string()),
                            ("runid", run_id.clone()), ("flags", "sentinel".into()),
                            ("link-pending-commands", "0".into()), ("link-refcount", "1".into()),
                            ("last-ping-sent", "0".into()), ("last-ok-ping-reply", "0".into()),
                            ("last-ping-reply", "0".into()), ("down-after-milliseconds", "0".into()),
                            ("last-hello-message", "0".into()), ("voted-leader", "?".into()),
                            ("voted-leader-epoch", "0".into()),
                        ])
                    })
                    .collect(),
            ),
            None => no_such_master(),
        },
        // dnsd never votes in a failover (the observer decides): "not down, no vote".
        ("is-master-down-by-addr", [ip, port, _epoch, _runid]) => {
            let down = records.published().iter().any(|(cluster, (t, _))| {
                t.master.host.as_bytes() == ip.as_ref()
                    && t.master.port.to_string().as_bytes() == port.as_ref()
                    && master_down(records, cluster, &t.master)
            });
            Frame::Array(vec![Frame::Integer(i64::from(down)), bulk("*"), Frame::Integer(0)])
        }
        ("myid", []) => bulk(&me.run_id),
        ("help", []) => help("SENTINEL", &[
            "GET-MASTER-ADDR-BY-NAME <master-name>", "    Return the ip and port of the master <master-name>.",
            "IS-MASTER-DOWN-BY-ADDR <ip> <port> <current-epoch> <runid>", "    Whether the master at <ip>:<port> is down; dnsd never votes.",
            "MASTER <master-name>", "    Show the state and info of <master-name>.",
            "MASTERS", "    Show every master (cluster) and its state.",
            "MYID", "    Return this replica's Sentinel run id.",
            "REPLICAS <master-name>", "    Show the replicas of <master-name> and their state.",
            "SENTINELS <master-name>", "    Show the other dnsd replicas answering as Sentinels.",
            "SLAVES <master-name>", "    Same as REPLICAS.",
            "(dnsd serves only these; the topology changes through etcd)",
        ]),
        ("get-master-addr-by-name" | "masters" | "master" | "replicas" | "slaves" | "sentinels" | "is-master-down-by-addr" | "myid" | "help", _) => {
            wrong_arity(&format!("sentinel|{sub}"))
        }
        (write, _) if SENTINEL_WRITES.contains(&write) => error(format!(
            "ERR SENTINEL {} is not served: dnsd only publishes the topology; change it in etcd (/config/<cluster>/topology) and the observer applies it",
            write.to_ascii_uppercase()
        )),
        _ => unknown_subcommand(&rest[0], "SENTINEL"),
    }
}

/// Whether the member's node is registered and reports its redis unhealthy.
fn master_down(records: &Records, cluster: &str, member: &PublishedMember) -> bool {
    member.node.as_ref().is_some_and(|node| {
        records.registrations().get(&(cluster.to_string(), node.clone())).is_some_and(|r| !r.healthy)
    })
}

fn run_id(records: &Records, cluster: &str, member: &PublishedMember) -> String {
    member
        .node
        .as_ref()
        .and_then(|node| records.registrations().get(&(cluster.to_string(), node.clone())))
        .map(|r| r.run_id.clone())
        .unwrap_or_default()
}

fn master_fields(records: &Records, me: &Identity, cluster: &str, t: &PublishedTopology, revision: i64) -> Vec<(&'static str, String)> {
    let flags = if master_down(records, cluster, &t.master) { "master,s_down" } else { "master" };
    let others = records.sentinels().keys().filter(|id| **id != me.run_id).count();
    vec![
        ("name", cluster.to_string()), ("ip", t.master.host.clone()), ("port", t.master.port.to_string()),
        ("runid", run_id(records, cluster, &t.master)), ("flags", flags.into()),
        ("link-pending-commands", "0".into()), ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()), ("last-ok-ping-reply", "0".into()), ("last-ping-reply", "0".into()),
        ("down-after-milliseconds", "0".into()), ("info-refresh", "0".into()),
        ("role-reported", "master".into()), ("role-reported-time", "0".into()),
        ("config-epoch", revision.to_string()), ("num-slaves", t.slaves.len().to_string()),
        ("num-other-sentinels", others.to_string()), ("quorum", "1".into()),
        ("failover-timeout", "0".into()), ("parallel-syncs", "1".into()),
    ]
}

fn replica_fields(records: &Records, cluster: &str, t: &PublishedTopology, slave: &PublishedMember) -> Vec<(&'static str, String)> {
    let live = in_read_pool(records.registrations(), cluster, slave);
    let offset = slave
        .node
        .as_ref()
        .and_then(|node| records.registrations().get(&(cluster.to_string(), node.clone())))
        .map_or(0, |r| r.repl_offset);
    vec![
        ("name", Endpoint::from(slave).to_string()), ("ip", slave.host.clone()), ("port", slave.port.to_string()),
        ("runid", run_id(records, cluster, slave)), ("flags", if live { "slave" } else { "slave,s_down" }.into()),
        ("link-pending-commands", "0".into()), ("link-refcount", "1".into()),
        ("last-ping-sent", "0".into()), ("last-ok-ping-reply", "0".into()), ("last-ping-reply", "0".into()),
        ("down-after-milliseconds", "0".into()), ("info-refresh", "0".into()),
        ("role-reported", "slave".into()), ("role-reported-time", "0".into()),
        ("master-link-down-time", "0".into()), ("master-link-status", if live { "ok" } else { "err" }.into()),
        ("master-host", t.master.host.clone()), ("master-port", t.master.port.to_string()),
        ("slave-priority", "100".into()), ("slave-repl-offset", offset.to_string()), ("replica-announced", "1".into()),
    ]
}

fn subscribe(session: &mut Session, patterns: bool, rest: &[Bytes]) -> Reply {
    let kind = if patterns { "psubscribe" } else { "subscribe" };
    let frames = rest
        .iter()
        .map(|channel| {
            let set = if patterns { &mut session.patterns } else { &mut session.channels };
            set.insert(channel.clone());
            Frame::Array(vec![bulk(kind), Frame::BulkString(channel.clone()), Frame::Integer(session.subscriptions())])
        })
        .collect();
    Reply { frames, close: false }
}

fn unsubscribe(session: &mut Session, patterns: bool, rest: &[Bytes]) -> Reply {
    let kind = if patterns { "punsubscribe" } else { "unsubscribe" };
    let names: Vec<Bytes> = if rest.is_empty() {
        let set = if patterns { &session.patterns } else { &session.channels };
        set.iter().cloned().collect()
    } else {
        rest.to_vec()
    };
    if names.is_empty() {
        return Frame::Array(vec![bulk(kind), Frame::Null, Frame::Integer(session.subscriptions())]).into();
    }
    let frames = names
        .into_iter()
        .map(|name| {
            let set = if patterns { &mut session.patterns } else { &mut session.channels };
            set.remove(&name);
            Frame::Array(vec![bulk(kind), Frame::BulkString(name), Frame::Integer(session.subscriptions())])
        })
        .collect();
    Reply { frames, close: false }
}

/// `<COMMAND> HELP`: the subcommands served, one line each, as redis lists them.
fn help(command: &str, lines: &[&str]) -> Frame {
    let title = format!("{command} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:");
    let lines = std::iter::once(title.as_str()).chain(lines.iter().copied()).chain(["HELP", "    Print this help."]);
    Frame::Array(lines.map(|l| Frame::SimpleString(Bytes::from(l.to_string()))).collect())
}

fn fields(pairs: Vec<(&'static str, String)>) -> Frame {
    Frame::Array(pairs.into_iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
}

fn bulk(s: impl AsRef<[u8]>) -> Frame {
    Frame::BulkString(Bytes::copy_from_slice(s.as_ref()))
}

fn ok() -> Frame {
    Frame::SimpleString(Bytes::from_static(b"OK"))
}

/// An error reply. RESP errors are one line: line breaks become spaces.
pub fn error(message: impl Into<String>) -> Frame {
    let message: String = message.into().chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    Frame::Error(message.into())
}

fn no_such_master() -> Frame {
    error("ERR No such master with that name")
}

fn wrong_arity(command: &str) -> Frame {
    error(format!("ERR wrong number of arguments for '{command}' command"))
}

fn unknown_subcommand(sub: &[u8], command: &str) -> Frame {
    error(format!("ERR unknown subcommand '{}'. Try {command} HELP.", shown(sub)))
}

/// Redis's wording, then what dnsd does serve: writes go to the master itself.
fn unknown_command(name: &[u8], rest: &[Bytes]) -> Frame {
    let args: String = rest.iter().take(8).map(|a| format!("'{}' ", shown(a))).collect();
    error(format!(
        "ERR unknown command '{}', with args beginning with: {args}(dnsd serves only the read-only Sentinel discovery commands; send writes to the master that SENTINEL get-master-addr-by-name returns)",
        shown(name)
    ))
}

/// At most 128 characters of a client's argument, as redis quotes them.
fn shown(arg: &[u8]) -> String {
    String::from_utf8_lossy(&arg[..arg.len().min(128)]).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use topology::records::{NodeRecord, SentinelRecord};

    use super::*;
    use crate::state::Sentinels;
    use crate::zone::tests::reg;
    use crate::zone::Registrations;

    const ME: &str = "0000000000000000000000000000000000000001";
    const PEER: &str = "0000000000000000000000000000000000000002";

    fn me() -> Identity {
        Identity { run_id: ME.into(), port: 26379 }
    }

    fn member(host: &str, port: u16, node: Option<&str>) -> PublishedMember {
        PublishedMember { host: host.into(), port, node: node.map(String::from) }
    }

    /// redis-1: master node-1 (10.0.0.1:6379), slaves node-2 (healthy) and node-3
    /// (unhealthy); two dnsd replicas, this one and a peer.
    fn records() -> Records {
        let mut registrations = Registrations::new();
        let mut node = |name: &str, record: NodeRecord| registrations.insert(("redis-1".into(), name.into()), record);
        node("node-1", NodeRecord { run_id: "r1".into(), ..reg("10.0.0.1", 6379) });
        node("node-2", NodeRecord { repl_offset: 42, ..reg("10.0.0.2", 6379) });
        node("node-3", NodeRecord { healthy: false, ..reg("10.0.0.3", 6379) });
        let topology = PublishedTopology {
            master: member("10.0.0.1", 6379, Some("node-1")),
            slaves: vec![member("10.0.0.2", 6379, Some("node-2")), member("10.0.0.3", 6379, Some("node-3"))],
            topology_revision: None,
        };
        let published = Published::from([("redis-1".to_string(), (topology, 17))]);
        let sentinels = Sentinels::from([
            (ME.to_string(), SentinelRecord { address: "127.0.0.1".into(), port: 26379 }),
            (PEER.to_string(), SentinelRecord { address: "127.0.0.2".into(), port: 26380 }),
        ]);
        Records::listed(registrations, published, 20).with_sentinels(sentinels)
    }

    fn ask_in(records: &Records, session: &mut Session, command: &str) -> Reply {
        let args: Vec<Bytes> = command.split(' ').map(|a| Bytes::from(a.to_string())).collect();
        answer(records, &me(), session, &args)
    }

    fn ask(command: &str) -> Frame {
        let reply = ask_in(&records(), &mut Session::new(7), command);
        assert_eq!(reply.frames.len(), 1, "{command}: {reply:?}");
        assert!(!reply.close, "{command}");
        reply.frames.into_iter().next().unwrap()
    }

    fn text(frame: &Frame) -> String {
        match frame {
            Frame::BulkString(b) | Frame::SimpleString(b) => String::from_utf8_lossy(b).into_owned(),
            Frame::Error(e) => e.to_string(),
            Frame::Integer(i) => i.to_string(),
            Frame::Array(items) if items.is_empty() => String::new(),
            other => panic!("not a string: {other:?}"),
        }
    }

    fn err(command: &str) -> String {
        match ask(command) {
            Frame::Error(e) => e.to_string(),
            other => panic!("{command}: expected an error, got {other:?}"),
        }
    }

    /// A flat field/value array as a map, checking that every key is there once.
    fn map(frame: &Frame) -> HashMap<String, String> {
        let Frame::Array(items) = frame else { panic!("not an array: {frame:?}") };
        assert_eq!(items.len() % 2, 0);
        let map: HashMap<String, String> = items.chunks(2).map(|kv| (text(&kv[0]), text(&kv[1]))).collect();
        assert_eq!(map.len(), items.len() / 2, "duplicate field in {frame:?}");
        map
    }

    fn list(frame: &Frame) -> Vec<HashMap<String, String>> {
        let Frame::Array(items) = frame else { panic!("not an array: {frame:?}") };
        items.iter().map(map).collect()
    }

    #[test]
    fn ping_and_quit() {
        assert_eq!(ask("PING"), Frame::SimpleString("PONG".into()));
        assert_eq!(ask("ping hello"), Frame::BulkString("hello".into()));
        assert_eq!(err("PING a b"), "ERR wrong number of arguments for 'ping' command");
        let reply = ask_in(&records(), &mut Session::new(1), "QUIT");
        assert_eq!(reply, Reply { frames: vec![ok()], close: true });
    }

    #[test]
    fn get_master_addr_by_name() {
        assert_eq!(ask("SENTINEL get-master-addr-by-name redis-1"), Frame::Array(vec![bulk("10.0.0.1"), bulk("6379")]));
        assert_eq!(ask("sentinel GET-MASTER-ADDR-BY-NAME nope"), Frame::Null);
        assert_eq!(err("SENTINEL get-master-addr-by-name"), "ERR wrong number of arguments for 'sentinel|get-master-addr-by-name' command");
        assert_eq!(err("SENTINEL get-master-addr-by-name a b"), "ERR wrong number of arguments for 'sentinel|get-master-addr-by-name' command");
    }

    #[test]
    fn masters_and_master_have_sentinels_fields() {
        let masters = list(&ask("SENTINEL masters"));
        assert_eq!(masters.len(), 1);
        let master = map(&ask("SENTINEL master redis-1"));
        assert_eq!(masters[0], master);
        for (field, value) in [
            ("name", "redis-1"), ("ip", "10.0.0.1"), ("port", "6379"), ("runid", "r1"), ("flags", "master"),
            ("role-reported", "master"), ("config-epoch", "17"), ("num-slaves", "2"),
            ("num-other-sentinels", "1"), ("quorum", "1"),
        ] {
            assert_eq!(master[field], value, "{field}");
        }
        for field in ["link-pending-commands", "link-refcount", "last-ping-sent", "last-ok-ping-reply", "last-ping-reply",
            "down-after-milliseconds", "info-refresh", "role-reported-time", "failover-timeout", "parallel-syncs"] {
            assert!(master[field].parse::<i64>().is_ok(), "{field} is an integer");
        }
        assert_eq!(err("SENTINEL master nope"), "ERR No such master with that name");
        assert_eq!(err("SENTINEL master"), "ERR wrong number of arguments for 'sentinel|master' command");
        assert_eq!(err("SENTINEL masters x"), "ERR wrong number of arguments for 'sentinel|masters' command");
    }

    #[test]
    fn an_unhealthy_master_is_subjectively_down() {
        let mut records = records();
        let mut record = records.registrations()[&("redis-1".to_string(), "node-1".to_string())].clone();
        record.healthy = false;
        records.apply(crate::state::Change::Registration { cluster: "redis-1".into(), node: "node-1".into(), record: Some(record) }, 30);
        let reply = ask_in(&records, &mut Session::new(1), "SENTINEL master redis-1");
        assert_eq!(map(&reply.frames[0])["flags"], "master,s_down");
        let reply = ask_in(&records, &mut Session::new(1), "SENTINEL is-master-down-by-addr 10.0.0.1 6379 0 *");
        assert_eq!(reply.frames[0], Frame::Array(vec![Frame::Integer(1), bulk("*"), Frame::Integer(0)]));
    }

    #[test]
    fn replicas_and_slaves_list_every_published_slave_with_its_state() {
        let replicas = list(&ask("SENTINEL replicas redis-1"));
        assert_eq!(replicas, list(&ask("SENTINEL slaves redis-1")));
        assert_eq!(replicas.len(), 2);
        let (live, dead) = (&replicas[0], &replicas[1]);
        assert_eq!((live["name"].as_str(), live["ip"].as_str(), live["port"].as_str()), ("10.0.0.2:6379", "10.0.0.2", "6379"));
        assert_eq!((live["flags"].as_str(), live["master-link-status"].as_str()), ("slave", "ok"));
        assert_eq!((live["master-host"].as_str(), live["master-port"].as_str()), ("10.0.0.1", "6379"));
        assert_eq!(live["slave-repl-offset"], "42");
        assert_eq!((dead["flags"].as_str(), dead["master-link-status"].as_str()), ("slave,s_down", "err"));
        assert_eq!(err("SENTINEL replicas nope"), "ERR No such master with that name");
        assert_eq!(err("SENTINEL slaves"), "ERR wrong number of arguments for 'sentinel|slaves' command");
    }

    #[test]
    fn sentinels_lists_the_other_replicas() {
        let sentinels = list(&ask("SENTINEL sentinels redis-1"));
        assert_eq!(sentinels.len(), 1, "not itself");
        let peer = &sentinels[0];
        assert_eq!((peer["name"].as_str(), peer["runid"].as_str()), (PEER, PEER));
        assert_eq!((peer["ip"].as_str(), peer["port"].as_str(), peer["flags"].as_str()), ("127.0.0.2", "26380", "sentinel"));
        assert_eq!(err("SENTINEL sentinels nope"), "ERR No such master with that name");
        assert_eq!(ask("SENTINEL myid"), bulk(ME));
    }

    #[test]
    fn is_master_down_by_addr_never_votes() {
        assert_eq!(ask("SENTINEL is-master-down-by-addr 10.0.0.1 6379 0 *"), Frame::Array(vec![Frame::Integer(0), bulk("*"), Frame::Integer(0)]));
        assert_eq!(ask("SENTINEL is-master-down-by-addr 10.9.9.9 1 0 *"), Frame::Array(vec![Frame::Integer(0), bulk("*"), Frame::Integer(0)]));
        assert_eq!(err("SENTINEL is-master-down-by-addr 10.0.0.1 6379"), "ERR wrong number of arguments for 'sentinel|is-master-down-by-addr' command");
    }

    #[test]
    fn writes_and_unknown_commands_are_refused() {
        for command in ["SET a b", "RPUSH l x", "DEL a", "FLUSHALL", "EVAL x 0", "SELECT 0", "GET a"] {
            let e = err(command);
            assert!(e.starts_with("ERR unknown command '"), "{command}: {e}");
            assert!(e.contains("send writes to the master that SENTINEL get-master-addr-by-name returns"), "{e}");
        }
        assert!(err("SET a b").contains("'SET', with args beginning with: 'a' 'b' "));
        for sub in ["failover redis-1", "set redis-1 quorum 2", "monitor m 1.2.3.4 1 1", "remove redis-1", "reset *", "flushconfig"] {
            let e = err(&format!("SENTINEL {sub}"));
            assert!(e.contains("is not served: dnsd only publishes the topology"), "{sub}: {e}");
        }
        assert_eq!(err("SENTINEL nope"), "ERR unknown subcommand 'nope'. Try SENTINEL HELP.");
        for command in ["SENTINEL", "CLIENT", "COMMAND"] {
            let Frame::Array(lines) = ask(&format!("{command} help")) else { panic!("{command} HELP") };
            assert!(text(&lines[0]).starts_with(&format!("{command} <subcommand>")), "{lines:?}");
            assert_eq!(err(&format!("{command} HELP x")), format!("ERR wrong number of arguments for '{}|help' command", command.to_lowercase()));
        }
        let Frame::Array(lines) = ask("SENTINEL HELP") else { panic!() };
        assert!(lines.iter().any(|l| text(l).starts_with("GET-MASTER-ADDR-BY-NAME")));
        assert_eq!(err("SENTINEL"), "ERR wrong number of arguments for 'sentinel' command");
        let reply = answer(&records(), &me(), &mut Session::new(1), &[]);
        assert!(matches!(&reply.frames[0], Frame::Error(_)));
    }

    #[test]
    fn hello_speaks_resp2_and_refuses_resp3() {
        let mut session = Session::new(9);
        let reply = ask_in(&records(), &mut session, "HELLO 2 AUTH u p SETNAME app");
        let hello = map(&reply.frames[0]);
        assert_eq!((hello["server"].as_str(), hello["proto"].as_str(), hello["id"].as_str(), hello["mode"].as_str()),
            ("redis", "2", "9", "sentinel"));
        assert_eq!(session.name.as_deref(), Some(&b"app"[..]));
        assert!(map(&ask("HELLO")).contains_key("version"));
        assert!(err("HELLO 3").starts_with("NOPROTO unsupported protocol version"));
        assert_eq!(err("HELLO x"), "ERR Protocol version is not an integer or out of range");
        assert_eq!(err("HELLO 2 AUTH u"), "ERR Syntax error in HELLO option 'AUTH'");
        assert_eq!(err("HELLO 2 BOGUS"), "ERR Syntax error in HELLO option 'BOGUS'");
    }

    #[test]
    fn auth_is_accepted() {
        assert_eq!(ask("AUTH secret"), ok());
        assert_eq!(ask("AUTH user secret"), ok());
        assert_eq!(err("AUTH"), "ERR wrong number of arguments for 'auth' command");
        assert_eq!(err("AUTH a b c"), "ERR syntax error");
    }

    #[test]
    fn client_subcommands() {
        let (records, mut session) = (records(), Session::new(5));
        let mut run = |command: &str| ask_in(&records, &mut session, command).frames.remove(0);
        assert_eq!(run("CLIENT GETNAME"), Frame::Null);
        assert_eq!(run("CLIENT SETNAME app-1"), ok());
        assert_eq!(run("client getname"), bulk("app-1"));
        assert_eq!(run("CLIENT ID"), Frame::Integer(5));
        assert_eq!(run("CLIENT SETINFO LIB-NAME redis-py"), ok());
        assert_eq!(run("CLIENT SETINFO lib-ver 5.0"), ok());
        assert!(matches!(run("CLIENT SETINFO other x"), Frame::Error(_)));
        assert_eq!(err("CLIENT"), "ERR wrong number of arguments for 'client' command");
        assert_eq!(err("CLIENT SETNAME"), "ERR wrong number of arguments for 'client|setname' command");
        assert_eq!(err("CLIENT KILL x"), "ERR unknown subcommand 'KILL'. Try CLIENT HELP.");
        let bad = answer(&records, &me(), &mut session, &[Bytes::from("CLIENT"), Bytes::from("SETNAME"), Bytes::from("a b")]);
        assert!(text(&bad.frames[0]).contains("cannot contain spaces"));
    }

    #[test]
    fn command_describes_what_is_served() {
        assert_eq!(ask("COMMAND COUNT"), Frame::Integer(COMMANDS.len() as i64));
        let Frame::Array(all) = ask("COMMAND") else { panic!() };
        assert_eq!(all.len(), COMMANDS.len());
        let Frame::Array(names) = ask("COMMAND LIST") else { panic!() };
        assert!(names.contains(&bulk("sentinel")));
        let Frame::Array(info) = ask("COMMAND INFO ping set") else { panic!() };
        assert!(matches!(&info[0], Frame::Array(e) if e[0] == bulk("ping")));
        assert_eq!(info[1], Frame::Null);
        assert_eq!(err("COMMAND COUNT x"), "ERR wrong number of arguments for 'command|count' command");
        assert_eq!(err("COMMAND nope"), "ERR unknown subcommand 'nope'. Try COMMAND HELP.");
    }

    #[test]
    fn role_and_info_are_a_sentinels() {
        assert_eq!(ask("ROLE"), Frame::Array(vec![bulk("sentinel"), Frame::Array(vec![bulk("redis-1")])]));
        assert_eq!(err("ROLE x"), "ERR wrong number of arguments for 'role' command");
        let info = text(&ask("INFO"));
        for line in ["# Server", "redis_mode:sentinel", &format!("run_id:{ME}"), "tcp_port:26379", "# Sentinel",
            "sentinel_masters:1", "master0:name=redis-1,status=ok,address=10.0.0.1:6379,slaves=2,sentinels=2"] {
            assert!(info.lines().any(|l| l == line), "{line} in {info}");
        }
        let sentinel = text(&ask("INFO sentinel"));
        assert!(sentinel.starts_with("# Sentinel") && !sentinel.contains("# Server"), "{sentinel}");
        assert_eq!(text(&ask("INFO keyspace")), "");
    }

    fn switch(from: u16, to: u16) -> Switch {
        let at = |port| Endpoint { host: "10.0.0.1".into(), port };
        Switch { cluster: "redis-1".into(), from: at(from), to: at(to) }
    }

    #[test]
    fn subscribers_get_switch_master_and_only_pubsub_commands() {
        let (records, mut session) = (records(), Session::new(1));
        assert!(deliver(&session, &switch(1, 2)).is_empty(), "not subscribed");
        let reply = ask_in(&records, &mut session, "SUBSCRIBE +switch-master other");
        assert_eq!(reply.frames, vec![
            Frame::Array(vec![bulk("subscribe"), bulk("+switch-master"), Frame::Integer(1)]),
            Frame::Array(vec![bulk("subscribe"), bulk("other"), Frame::Integer(2)]),
        ]);
        let reply = ask_in(&records, &mut session, "PSUBSCRIBE * +switch-* +sdown");
        assert_eq!(reply.frames[2], Frame::Array(vec![bulk("psubscribe"), bulk("+sdown"), Frame::Integer(5)]));
        let payload = bulk("redis-1 10.0.0.1 1 10.0.0.1 2");
        assert_eq!(deliver(&session, &switch(1, 2)), vec![
            Frame::Array(vec![bulk("message"), bulk("+switch-master"), payload.clone()]),
            Frame::Array(vec![bulk("pmessage"), bulk("*"), bulk("+switch-master"), payload.clone()]),
            Frame::Array(vec![bulk("pmessage"), bulk("+switch-*"), bulk("+switch-master"), payload]),
        ]);
        let e = ask_in(&records, &mut session, "SENTINEL masters").frames.remove(0);
        assert!(text(&e).starts_with("ERR Can't execute 'sentinel'"), "{e:?}");
        assert_eq!(ask_in(&records, &mut session, "PING").frames, vec![Frame::Array(vec![bulk("pong"), bulk("")])]);
        let reply = ask_in(&records, &mut session, "UNSUBSCRIBE");
        assert_eq!(reply.frames.len(), 2);
        let reply = ask_in(&records, &mut session, "PUNSUBSCRIBE *");
        assert_eq!(reply.frames, vec![Frame::Array(vec![bulk("punsubscribe"), bulk("*"), Frame::Integer(2)])]);
        ask_in(&records, &mut session, "PUNSUBSCRIBE");
        assert!(!session.subscribed());
        assert_eq!(ask_in(&records, &mut session, "UNSUBSCRIBE").frames,
            vec![Frame::Array(vec![bulk("unsubscribe"), Frame::Null, Frame::Integer(0)])]);
        assert_eq!(err("SUBSCRIBE"), "ERR wrong number of arguments for 'subscribe' command");
    }

    #[test]
    fn only_a_moved_master_is_a_switch() {
        let published = |port: u16| {
            let t = PublishedTopology { master: member("10.0.0.1", port, None), slaves: vec![], topology_revision: None };
            Published::from([("redis-1".to_string(), (t, 1))])
        };
        assert_eq!(switches(&published(1), &published(2)), vec![switch(1, 2)]);
        assert!(switches(&published(1), &published(1)).is_empty(), "a slave change is no switch");
        assert!(switches(&Published::new(), &published(1)).is_empty(), "first publish");
        assert!(switches(&published(1), &Published::new()).is_empty(), "deleted");
        assert_eq!(switch(1, 2).message(), "redis-1 10.0.0.1 1 10.0.0.1 2");
    }
}
