#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Real redis clients find the master through dnsd's Sentinel listener alone (no
//! HAProxy, no SRV lookups): redis-rs's `SentinelClient` and redis-py's
//! `Sentinel(...).master_for(...)` each write while the master moves five times and
//! then fails over after a kill -9, and nothing acknowledged is lost.
//!
//! redis-py is Debian's `python3-redis` (scripts/install-deps.sh), run with the
//! system `/usr/bin/python3` it installs into.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use counter::{Tally, WriteOutcome};
use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN};
use harness::{free_port, Service};
use redis::sentinel::{Sentinel, SentinelClient, SentinelServerType};

/// Planned moves, then one kill -9 of the master.
const MOVES: usize = 5;
const KILL_PHASE: usize = MOVES + 1;
/// Pause between writes: about 200 a second.
const PAUSE: Duration = Duration::from_millis(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Each write's outcome, with the phase (0 before the first move, `i` from the
/// start of move `i`, [`KILL_PHASE`] from the kill) it was made in.
#[derive(Default)]
struct Outcomes {
    acked: Vec<(String, usize)>,
    rejected: Vec<(String, usize)>,
    unknown: Vec<(String, usize)>,
}

impl Outcomes {
    fn tally(&self, phases: std::ops::RangeInclusive<usize>) -> Tally {
        let now = Instant::now();
        let pick = |ids: &[(String, usize)]| {
            ids.iter().filter(|(_, p)| phases.contains(p)).map(|(id, _)| (id.clone(), now)).collect()
        };
        Tally { started: now, stopped: now, acked: pick(&self.acked), rejected: pick(&self.rejected), unknown: pick(&self.unknown) }
    }

    /// Errored (rejected or unknown) writes per phase.
    fn errored(&self) -> Vec<usize> {
        (0..=KILL_PHASE)
            .map(|p| self.rejected.iter().chain(&self.unknown).filter(|(_, phase)| *phase == p).count())
            .collect()
    }

    /// Acknowledged writes per phase.
    fn acked(&self) -> Vec<usize> {
        (0..=KILL_PHASE).map(|p| self.acked.iter().filter(|(_, phase)| *phase == p).count()).collect()
    }
}

async fn started() -> Stack {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    stack
}

/// What the Sentinel at `sentinel` says the master's port is.
fn sentinel_master_port(sentinel: SocketAddr) -> Option<u16> {
    let client = redis::Client::open(format!("redis://{sentinel}/")).ok()?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    let addr: Option<(String, u16)> =
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(CLUSTER).query(&mut conn).ok()?;
    addr.map(|(_, port)| port)
}

/// Five planned moves, then a kill -9 of the master, announcing each phase with
/// `phase` before starting it. Returns the index of the final master.
async fn move_the_master(stack: &mut Stack, mut phase: impl FnMut(usize)) -> usize {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut master = 0;
    for round in 1..=MOVES {
        phase(round);
        master = round % 3;
        let started = Instant::now();
        let revision = stack.define(master, &[(master + 1) % 3, (master + 2) % 3]).await;
        stack.wait_applied(revision).await;
        println!("move {round}: node-{} is master ({:?} to apply and publish)", master + 1, started.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    phase(KILL_PHASE);
    let killed = Instant::now();
    stack.nodes[master].redis.kill();
    let old = master;
    let mut new = None;
    harness::wait_until_async("the failover, published through the Sentinel listener", Duration::from_secs(30), || {
        new = (0..stack.nodes.len()).find(|i| {
            *i != old && stack.nodes[*i].redis.role() == "master"
                && sentinel_master_port(stack.sentinel) == Some(stack.nodes[*i].redis.port())
        });
        let found = new.is_some();
        async move { found }
    })
    .await;
    let new = new.unwrap();
    println!("kill -9 of node-{}: node-{} is master ({:?} to fail over and publish)", old + 1, new + 1, killed.elapsed());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    new
}

/// Checks the run: lossless through the planned moves, nothing rejected applied
/// ever, and writes acknowledged after the failover. Prints the errored writes
/// per move.
fn check(client: &str, outcomes: &Outcomes, list: &[String]) {
    let planned = outcomes.tally(0..=MOVES).check(list);
    let after_kill = outcomes.tally(KILL_PHASE..=KILL_PHASE).check(list);
    let errored = outcomes.errored();
    println!("{client}: planned moves: {planned}");
    println!("{client}: kill -9 failover: {after_kill}");
    let acked = outcomes.acked();
    println!("{client}: errored writes per phase (before, move 1..{MOVES}, kill -9): {errored:?}");
    println!("{client}: acknowledged writes per phase: {acked:?}");
    // Writes were acknowledged after every move: the client followed each one.
    assert!(acked.iter().all(|n| *n > 0), "{client} wrote in every phase: {acked:?}");
    assert_eq!((planned.missing, planned.phantom), (0, 0), "{client}: {planned}");
    assert_eq!(after_kill.phantom, 0, "{client}: {after_kill}");
    let listed: HashSet<&String> = list.iter().collect();
    assert_eq!(listed.len(), list.len(), "{client}: no id was written twice");
}

fn read_back(stack: &Stack, master: usize, key: &str) -> Vec<String> {
    stack.nodes[master].redis.cmd::<Vec<String>>(&["LRANGE", key, "0", "-1"])
}

/// How a Sentinel client authenticates to the master it is given: as the
/// `default` user when the harness runs redis with auth (`HARNESS_REDIS_AUTH=1`).
fn node_info() -> Option<redis::sentinel::SentinelNodeConnectionInfo> {
    harness::redis::auth_from_env().then(|| {
        let auth = redis::RedisConnectionInfo::default().set_password(harness::redis::admin_password());
        redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(auth)
    })
}

/// redis-rs: a `SentinelClient` asked for a new master connection after every error.
async fn redis_rs_writer(sentinels: Vec<String>, key: String, phase: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> Outcomes {
    let mut client = SentinelClient::build(sentinels, CLUSTER.to_string(), node_info(), SentinelServerType::Master).unwrap();
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut outcomes = Outcomes::default();
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        tokio::time::sleep(PAUSE).await;
        n += 1;
        let (id, phase) = (format!("rs-{n}"), phase.load(Ordering::SeqCst));
        if conn.is_none() {
            let connect = async { client.async_get_client().await?.get_multiplexed_async_connection().await };
            match tokio::time::timeout(WRITE_TIMEOUT, connect).await {
                Ok(Ok(c)) => conn = Some(c),
                // Never sent.
                _ => {
                    outcomes.rejected.push((id, phase));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut rpush = redis::cmd("RPUSH");
        rpush.arg(&key).arg(&id);
        let push = rpush.query_async::<i64>(c);
        let reply = match tokio::time::timeout(WRITE_TIMEOUT, push).await {
            Ok(reply) => reply,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "write timed out").into()),
        };
        match WriteOutcome::of(&reply) {
            WriteOutcome::Acknowledged => outcomes.acked.push((id, phase)),
            WriteOutcome::Rejected => outcomes.rejected.push((id, phase)),
            WriteOutcome::Unknown => outcomes.unknown.push((id, phase)),
        }
        if reply.is_err() {
            conn = None;
        }
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_sentinel_client_follows_five_moves_and_a_kill_9_losslessly() {
    let mut stack = started().await;
    let (phase, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
    let key = "sentinel-rs-ids";
    let writer = tokio::spawn(redis_rs_writer(vec![format!("redis://{}/", stack.sentinel)], key.into(), phase.clone(), stop.clone()));
    let master = move_the_master(&mut stack, |p| phase.store(p, Ordering::SeqCst)).await;
    stop.store(true, Ordering::SeqCst);
    let outcomes = writer.await.unwrap();
    check("redis-rs", &outcomes, &read_back(&stack, master, key));
}

/// redis-py's writer: `Sentinel(...).master_for(...)`, `RPUSH` of fresh ids. Reads
/// `move <n>` and `stop` on stdin; prints `ready`, then its outcomes as JSON.
const REDIS_PY_WRITER: &str = r#"
import json, sys, threading, time
import redis
from redis.sentinel import Sentinel, MasterNotFoundError

sentinels, name, key, password = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4] or None
state = {"phase": 0, "stop": False}

def control():
    for line in sys.stdin:
        words = line.split()
        if words and words[0] == "move":
            state["phase"] = int(words[1])
        elif words and words[0] == "stop":
            break
    state["stop"] = True

threading.Thread(target=control, daemon=True).start()
sentinel = Sentinel([tuple(s) for s in sentinels], socket_timeout=2.0)
master = sentinel.master_for(name, socket_timeout=2.0, socket_connect_timeout=2.0, password=password)
out = {"acked": [], "rejected": [], "unknown": []}
print("ready", flush=True)
n = 0
while not state["stop"]:
    time.sleep(0.005)
    n += 1
    ident, phase = "py-%d" % n, state["phase"]
    try:
        master.rpush(key, ident)
        outcome = "acked"
    except MasterNotFoundError:
        outcome = "rejected"  # no sentinel named a master: never sent
    except redis.exceptions.ResponseError:
        outcome = "rejected"  # an error reply: NOREPLICAS (the fence), ...
    except redis.exceptions.ConnectionError as e:
        # READONLY, which redis-py turns into a ConnectionError, is a refusal.
        outcome = "rejected" if "previous master is now a slave" in str(e) else "unknown"
    except redis.exceptions.TimeoutError:
        outcome = "unknown"
    out[outcome].append([ident, phase])
print(json.dumps(out), flush=True)
"#;

struct PyWriter {
    child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl PyWriter {
    fn start(sentinels: &[SocketAddr], key: &str) -> PyWriter {
        let sentinels: Vec<(String, u16)> = sentinels.iter().map(|s| (s.ip().to_string(), s.port())).collect();
        let password = if harness::redis::auth_from_env() { harness::redis::admin_password() } else { String::new() };
        let mut child = Command::new("/usr/bin/python3")
            // The default user's password when the harness runs redis with auth.
            .args(["-c", REDIS_PY_WRITER, &serde_json::to_string(&sentinels).unwrap(), CLUSTER, key, &password])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run /usr/bin/python3 (scripts/install-deps.sh installs python3-redis)");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the redis-py writer started (is python3-redis installed?)");
        PyWriter { child, stdout }
    }

    fn say(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn stop(mut self) -> Outcomes {
        self.say("stop");
        let mut json = String::new();
        self.stdout.read_to_string(&mut json).unwrap();
        assert!(self.child.wait().unwrap().success(), "the redis-py writer failed");
        let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        let ids = |field: &str| -> Vec<(String, usize)> {
            value[field]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| (pair[0].as_str().unwrap().to_string(), pair[1].as_u64().unwrap() as usize))
                .collect()
        };
        Outcomes { acked: ids("acked"), rejected: ids("rejected"), unknown: ids("unknown") }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_sentinel_master_for_follows_five_moves_and_a_kill_9_losslessly() {
    let mut stack = started().await;
    let key = "sentinel-py-ids";
    let writer = Arc::new(std::sync::Mutex::new(Some(PyWriter::start(&[stack.sentinel], key))));
    let control = writer.clone();
    let master = move_the_master(&mut stack, |p| {
        if let Some(w) = control.lock().unwrap().as_mut() {
            w.say(&format!("move {p}"));
        }
    })
    .await;
    let writer = writer.lock().unwrap().take().unwrap();
    let outcomes = tokio::task::spawn_blocking(move || writer.stop()).await.unwrap();
    check("redis-py", &outcomes, &read_back(&stack, master, key));
}

/// A second dnsd on the stack's etcd, with its own Sentinel listener.
fn second_dnsd(stack: &Stack) -> (Service, SocketAddr) {
    let (http, dns, sentinel) = (free_port(), free_port(), free_port());
    let sentinel: SocketAddr = ([127, 0, 0, 1], sentinel).into();
    let mut dnsd = Service::start(
        "dnsd",
        &["--listen", &format!("127.0.0.1:{http}"), "--dns-listen", &format!("127.0.0.1:{dns}"),
          "--sentinel-listen", &sentinel.to_string(), "--etcd-endpoints", &stack.etcd.endpoint(),
          "--domain", DOMAIN, "--cluster", CLUSTER],
        &[],
    );
    dnsd.wait_http(http);
    (dnsd, sentinel)
}

fn sentinel_conn(sentinel: SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{sentinel}/")).unwrap().get_connection_with_timeout(Duration::from_secs(2)).unwrap()
}

/// The ports of the sentinels `sentinel` lists besides itself; none while it does
/// not know the cluster yet (it answers "No such master" until it has read it).
fn other_sentinels(sentinel: SocketAddr) -> Vec<u16> {
    let listed: Vec<std::collections::HashMap<String, String>> =
        redis::cmd("SENTINEL").arg("sentinels").arg(CLUSTER).query(&mut sentinel_conn(sentinel)).unwrap_or_default();
    listed.iter().map(|s| s["port"].parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsd_replicas_list_each_other_announce_switches_and_answer_without_etcd() {
    let mut stack = started().await;
    let (_second, second) = second_dnsd(&stack);
    let first = stack.sentinel;
    harness::wait_until("each replica lists the other in SENTINEL sentinels", Duration::from_secs(10), || {
        other_sentinels(first) == [second.port()] && other_sentinels(second) == [first.port()]
    });
    let master = stack.nodes[0].redis.port();
    assert_eq!((sentinel_master_port(first), sentinel_master_port(second)), (Some(master), Some(master)));

    // A subscriber on the second replica hears the first's publish of a move.
    let mut subscriber = sentinel_conn(second);
    subscriber.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut pubsub = subscriber.as_pubsub();
    pubsub.subscribe("+switch-master").unwrap();
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    let message: String = pubsub.get_message().unwrap().get_payload().unwrap();
    let new = stack.nodes[1].redis.port();
    assert_eq!(message, format!("{CLUSTER} 127.0.0.1 {master} 127.0.0.1 {new}"));
    drop(pubsub);

    // Bad input gets an error and a closed connection; the listener goes on.
    for bad in [format!("*1\r\n${}\r\n{}", 1 << 20, "x".repeat(20_000)), "*1\r\n$x\r\n".to_string(), "*1\r\n*1\r\n*1\r\n".to_string()] {
        let mut raw = std::net::TcpStream::connect(second).unwrap();
        raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = raw.write_all(bad.as_bytes());
        let mut answer = String::new();
        raw.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("-ERR Protocol error"), "{answer:?}");
    }
    let refused: redis::RedisResult<()> = redis::cmd("SET").arg("a").arg("b").query(&mut sentinel_conn(second));
    assert!(refused.unwrap_err().to_string().contains("unknown command"));

    // Cut off from etcd, both replicas answer from their last state, and a real
    // client still finds the master through them. (It reads: with etcd gone, the
    // master's agent fences it within two thirds of its lease, by design.)
    let _: () = redis::cmd("SET").arg("through-sentinel").arg("1").query(&mut stack.nodes[1].redis.conn()).unwrap();
    stack.etcd.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((sentinel_master_port(first), sentinel_master_port(second)), (Some(new), Some(new)));
    assert_eq!(other_sentinels(second), [first.port()]);
    let mut sentinel = Sentinel::build(vec![format!("redis://{second}/"), format!("redis://{first}/")]).unwrap();
    let mut conn = sentinel.master_for(CLUSTER, node_info().as_ref()).unwrap().get_connection().unwrap();
    let got: String = redis::cmd("GET").arg("through-sentinel").query(&mut conn).unwrap();
    assert_eq!(got, "1");
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).unwrap();
    assert_eq!(role.first(), Some(&redis::Value::BulkString(b"master".to_vec())), "{role:?}");
}
