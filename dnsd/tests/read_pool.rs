#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The read pool on real processes: redis-server and node-agent per node, dnsd, dig.
//! A slave whose redis dies, whose agent deregisters, or that registers as a master
//! (it serves data of its own) leaves the slaves SRV answer; it comes back when it is
//! a healthy slave again.

mod common;

use std::time::Duration;

use common::*;
use harness::stack::{start_agent, Node};
use harness::{free_port, Etcd, Redis};

fn node(etcd: &Etcd, name: &str) -> Node {
    let mut node = Node {
        name: name.into(),
        cluster: harness::stack::CLUSTER.into(),
        host: format!("host-{name}"),
        redis: Redis::start(),
        agent: None,
        agent_port: free_port(),
        lease_ttl_secs: 2,
    };
    start_agent(&mut node, &etcd.endpoint());
    node
}

fn srv(node: &Node) -> String {
    format!("0 100 {} {}.redis-1.{DOMAIN}.", node.redis.port(), node.name)
}

#[tokio::test]
async fn a_dead_slave_leaves_the_read_pool_and_returns_when_healthy() {
    let etcd = Etcd::start();
    let mut nodes: Vec<Node> = ["node-1", "node-2", "node-3"].iter().map(|n| node(&etcd, n)).collect();
    let dnsd = Dnsd::start(&etcd, &[]);
    // Slaves of node-1, as the dictator would make them.
    let master_port = nodes[0].redis.port().to_string();
    let follow = |n: &Node| n.redis.cmd::<String>(&["REPLICAOF", "127.0.0.1", &master_port]);
    follow(&nodes[1]);
    follow(&nodes[2]);
    // Publishable once every agent has registered its node.
    let topology = nodes_topology("node-1", &["node-2", "node-3"]);
    harness::wait_until_async("the topology published", Duration::from_secs(20), || async {
        put(&dnsd.url("/clusters/redis-1/dns"), topology.clone()).await.0 == 200
    })
    .await;
    let query = ["SRV", "_redis._tcp.slaves.redis-1.cluster.local"];
    let both = { let mut v = vec![srv(&nodes[1]), srv(&nodes[2])]; v.sort(); v };
    eventually("both slaves registered as slaves", || dnsd.records(&query) == both);

    // node-2 promoted by hand: a master serves its own data, not the group's.
    nodes[1].redis.cmd::<String>(&["REPLICAOF", "NO", "ONE"]);
    eventually("node-2, now a master, out of the read pool", || dnsd.records(&query) == vec![srv(&nodes[2])]);
    follow(&nodes[1]);
    eventually("node-2, a slave again, back in the read pool", || dnsd.records(&query) == both);

    // node-2's redis dies: its agent marks it unhealthy, and it leaves the pool.
    nodes[1].redis.kill();
    eventually("node-2 out of the read pool", || dnsd.records(&query) == vec![srv(&nodes[2])]);
    // Its own record stays, and so does the master.
    assert_eq!(dnsd.short(&["A", "node-2.redis-1.cluster.local"]), vec!["127.0.0.1"]);
    assert_eq!(dnsd.short(&["SRV", "_redis._tcp.master.redis-1.cluster.local"]), vec![srv(&nodes[0])]);
    // Without a config file it comes back a master: in the pool once re-pointed.
    nodes[1].redis.restart();
    follow(&nodes[1]);
    eventually("node-2 back in the read pool", || dnsd.records(&query) == both);

    // node-3's agent stops (SIGTERM deregisters it): it leaves the pool too.
    let mut agent = nodes[2].agent.take().expect("node-3's agent runs");
    agent.process().terminate(Duration::from_secs(5));
    eventually("node-3 out of the read pool", || dnsd.records(&query) == vec![srv(&nodes[1])]);
    assert_eq!(dnsd.short(&["A", "node-3.redis-1.cluster.local"]), vec!["127.0.0.1"]);
    start_agent(&mut nodes[2], &etcd.endpoint());
    eventually("node-3 back in the read pool", || dnsd.records(&query) == both);
}
