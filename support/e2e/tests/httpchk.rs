#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The node-agent's role checks (`GET /master`, `GET /replica?lag=`) and
//! deploy/haproxy/haproxy-httpchk.cfg, which routes by them without DNS: writes
//! reach the topology's master, and follow it when it moves; reads reach slaves.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use harness::process::Process;
use harness::stack::{Stack, StackOptions};

fn get(port: u16, path: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_all(&mut stream, format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap()
}

fn haproxy(stack: &Stack) -> (SocketAddr, SocketAddr, Process, tempfile::TempDir) {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy/haproxy-httpchk.cfg");
    let dir = tempfile::tempdir().unwrap();
    let (write, read): (SocketAddr, SocketAddr) = (([127, 0, 0, 1], harness::free_port()).into(), ([127, 0, 0, 1], harness::free_port()).into());
    let mut cmd = Command::new("haproxy");
    cmd.args(["-db", "-f", config]).env("REDIS_TOPOLOGY_WRITE_BIND", write.to_string()).env("REDIS_TOPOLOGY_READ_BIND", read.to_string());
    for (i, node) in stack.nodes.iter().enumerate() {
        cmd.env(format!("REDIS_TOPOLOGY_NODE{}_REDIS", i + 1), node.redis.host_port()).env(format!("REDIS_TOPOLOGY_NODE{}_AGENT_PORT", i + 1), node.agent_port.to_string());
    }
    let process = Process::spawn("haproxy", cmd, &dir.path().join("haproxy.log"));
    harness::wait_until("haproxy to listen", Duration::from_secs(10), || std::net::TcpStream::connect(write).is_ok());
    (write, read, process, dir)
}

/// `ROLE` of whichever redis HAProxy sends a new connection at `addr` to, and its port.
fn behind(addr: SocketAddr) -> Option<(String, u16)> {
    let client = redis::Client::open(harness::redis::client_url(addr)).ok()?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut conn).ok()?;
    let role = match role.first()? {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        _ => return None,
    };
    let port: String = redis::cmd("CONFIG").arg("GET").arg("port").query::<Vec<String>>(&mut conn).ok()?.get(1)?.clone();
    Some((role, port.parse().ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_routes_by_the_node_agents_role_checks() {
    let stack = Stack::start(StackOptions::default());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    let agent = |i: usize| stack.nodes[i].agent_port;
    harness::wait_until("the role checks to follow the topology", Duration::from_secs(10), || {
        get(agent(0), "/master") == 200 && get(agent(1), "/master") == 503 && get(agent(1), "/replica") == 200
    });
    assert_eq!(get(agent(0), "/replica"), 503, "the master is no replica");
    assert_eq!(get(agent(2), "/replica?lag=1048576"), 200);
    assert_eq!(get(agent(2), "/replica?lag=nope"), 400, "a bad lag is refused");

    // A fenced master takes no writes: /master says so.
    let _: String = stack.nodes[0].redis.cmd(&["CONFIG", "SET", "min-replicas-to-write", "1000001"]);
    assert_eq!(get(agent(0), "/master"), 503);
    let _: String = stack.nodes[0].redis.cmd(&["CONFIG", "SET", "min-replicas-to-write", "0"]);
    assert_eq!(get(agent(0), "/master"), 200);

    let (write, read, _haproxy, _dir) = haproxy(&stack);
    let port = |i: usize| stack.nodes[i].redis.port();
    harness::wait_until("writes to reach node-1 through HAProxy", Duration::from_secs(10), || {
        behind(write) == Some(("master".into(), port(0)))
    });
    // HAProxy counts a server up until its first check fails.
    harness::wait_until("reads to reach replicas only", Duration::from_secs(10), || {
        (0..6).all(|_| behind(read).is_some_and(|(role, _)| role == "slave"))
    });

    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("writes to follow the master to node-2", Duration::from_secs(10), || {
        behind(write) == Some(("master".into(), port(1)))
    });
    assert_eq!(get(agent(0), "/master"), 503);
    harness::wait_until("node-1 to be a replica again", Duration::from_secs(10), || get(agent(0), "/replica") == 200);
}
