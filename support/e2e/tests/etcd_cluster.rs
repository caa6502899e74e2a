#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The whole system on a real 3-member etcd (`StackOptions::etcd_members`), every
//! service given all three endpoints, while members die: one, the leader, all.
//!
//! - A switchover under writes with the etcd leader killed mid-apply is applied
//!   (or retried by the observer) and loses no acknowledged write.
//! - Under DNS load, killing a member and then the leader gives no wrong and no
//!   empty answer, and a new topology still reaches DNS with a member down.
//! - Through a full etcd outage dnsd answers from the last zone it had; a dnsd
//!   started during the outage has no zone and says so (REFUSED); both follow
//!   etcd again once it is back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use counter::{read_list, Destination, Pace, Writer};
use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN};
use harness::{free_port, Service};
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(5) };

/// Longer than the node-agents' lease TTL in the stack (2 s): whatever a lost
/// lease could remove from etcd, and so from DNS, is gone by then.
const OUTLAST_LEASES: Duration = Duration::from_secs(3);

fn on_three_members() -> StackOptions {
    StackOptions { etcd_members: 3, dnsds: 2, ..StackOptions::default() }
}

/// What the answers to `_redis._tcp.master.<cluster>` were.
#[derive(Debug, Default)]
struct Answers {
    right: u64,
    /// Another master's port (the first few).
    wrong: Vec<u16>,
    /// An answer without the SRV record (NXDOMAIN, SERVFAIL, no record...).
    empty: Vec<String>,
    /// No answer to three tries.
    unanswered: u64,
}

impl Answers {
    fn add(&mut self, other: Answers) {
        self.right += other.right;
        self.wrong.extend(other.wrong.into_iter().take(10));
        self.empty.extend(other.empty.into_iter().take(10));
        self.unanswered += other.unanswered;
    }
}

/// The SRV ports dnsd at `dns` answers for the cluster's master, with its
/// response code; `None` when three tries got no answer.
async fn ask_master(socket: &tokio::net::UdpSocket, dns: SocketAddr, id: u16) -> Option<(ResponseCode, Vec<u16>)> {
    let mut message = Message::query();
    message.metadata.id = id;
    let name = Name::from_ascii(format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}.")).unwrap();
    message.add_query(Query::query(name, RecordType::SRV));
    let packet = message.to_vec().unwrap();
    let mut buf = [0u8; 4096];
    // UDP may drop a datagram under load: ask up to three times, as resolvers do.
    for _ in 0..3 {
        socket.send_to(&packet, dns).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            let Ok(reply) = Message::from_vec(&buf[..n]) else { continue };
            if reply.metadata.id != id {
                continue; // a late answer to an earlier try
            }
            let ports = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(srv) => Some(srv.port),
                    _ => None,
                })
                .collect();
            return Some((reply.metadata.response_code, ports));
        }
    }
    None
}

/// Asks every dnsd for the master's SRV record, one query after another, until
/// stopped, tallying each answer against `master`.
struct DnsLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Answers>>,
}

impl DnsLoad {
    fn start(nameservers: &[SocketAddr], master: u16) -> DnsLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = nameservers
            .iter()
            .map(|&dns| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    let mut answers = Answers::default();
                    let mut id: u16 = 0;
                    while !stop.load(Ordering::Relaxed) {
                        id = id.wrapping_add(1);
                        match ask_master(&socket, dns, id).await {
                            None => answers.unanswered += 1,
                            Some((_, ports)) if ports == [master] => answers.right += 1,
                            Some((code, ports)) if ports.is_empty() => {
                                if answers.empty.len() < 10 {
                                    answers.empty.push(format!("{dns}: {code}"));
                                }
                            }
                            Some((_, ports)) => answers.wrong.extend(ports.into_iter().filter(|p| *p != master).take(1)),
                        }
                    }
                    answers
                })
            })
            .collect();
        DnsLoad { stop, tasks }
    }

    async fn stop(self) -> Answers {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Answers::default();
        for task in self.tasks {
            all.add(task.await.unwrap());
        }
        all
    }
}

/// Waits until every dnsd names node `i` as the master.
async fn wait_dns_master(stack: &Stack, i: usize) {
    let port = stack.nodes[i].redis.port();
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for &dns in &stack.nameservers {
        harness::wait_until_async(&format!("{dns} to name node {i} master"), Duration::from_secs(30), || async {
            ask_master(&socket, dns, 1).await.is_some_and(|(_, ports)| ports == [port])
        })
        .await;
    }
}

/// How many times the dictator logged the start of an apply.
fn applies_started(stack: &Stack) -> usize {
    harness::without_ansi(&stack.dictator_log()).lines().filter(|l| l.contains(" applying ")).count()
}

/// Two switchovers under writes through HAProxy, each with the etcd leader killed
/// as soon as the dictator starts applying: the observer's status write, dnsd's
/// publish and the dictator's revision record all meet the election. Every
/// switchover is applied (a failed step is retried by the observer), and the
/// counter finds no acknowledged write missing and no rejected one applied. The
/// agents run with their default lease TTL (5 s): their renewals went unanswered
/// for up to 3.5 s after the leader's death here, and an agent may fence its
/// master meanwhile (refused writes, counted as err'd, never lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_with_the_etcd_leader_killed_mid_apply_is_applied_and_loses_nothing() {
    let mut stack = Stack::start(StackOptions { haproxy: true, agent_lease_ttl_secs: 5, ..on_three_members() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    let through_haproxy = Destination::Fixed(stack.write.unwrap());
    let writer = Writer::start(through_haproxy.clone(), "etcd-cluster-ids", PACE);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for master in [1, 2] {
        let leader = stack.etcd.wait_leader().await;
        let started = applies_started(&stack);
        let slaves: Vec<usize> = (0..3).filter(|&i| i != master).collect();
        let revision = stack.define(master, &slaves).await;
        harness::wait_until("the dictator to start applying", Duration::from_secs(20), || applies_started(&stack) > started);
        stack.etcd.kill_member(leader);
        stack.wait_applied(revision).await;
        wait_dns_master(&stack, master).await;
        println!("etcd leader etcd-{leader} killed mid-apply; node {master} is master");
        stack.etcd.restart_member(leader);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = writer.stop().await.unwrap();
    let list = read_list(&through_haproxy, "etcd-cluster-ids", Duration::from_secs(10)).await.unwrap();
    let verdict = tally.check(&list);
    let fences: usize = stack.nodes.iter().filter_map(|n| n.agent.as_ref()).map(|a| a.log().matches("fenced this master").count()).sum();
    println!("{verdict}; the agents fenced a master {fences} times");
    assert!(verdict.acked > 100, "writes went through: {verdict}");
    assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{verdict}");
    assert_eq!(stack.nodes[2].redis.role(), "master");
    assert!(stack.exited().is_empty(), "crashed: {:?}", stack.exited());
}

/// Both dnsd replicas under a steady stream of SRV queries while an etcd member
/// dies, and then the leader: every answer names the master, none is empty. With
/// the member still down, a new topology is applied and reaches both replicas:
/// the services moved on to the live members. Member 0, the first endpoint every
/// service is given, dies in one of the two steps: given only its endpoint, the
/// services lose etcd with it, and that step's apply times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_the_master_while_an_etcd_member_and_then_the_leader_die() {
    let mut stack = Stack::start(on_three_members());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    wait_dns_master(&stack, 0).await;

    let mut master = 0;
    for step in ["a follower", "the leader"] {
        let leader = stack.etcd.wait_leader().await;
        let victim = match step {
            "the leader" => leader,
            _ if leader == 0 => 1,
            _ => 0,
        };
        let load = DnsLoad::start(&stack.nameservers, stack.nodes[master].redis.port());
        stack.etcd.kill_member(victim);
        tokio::time::sleep(OUTLAST_LEASES).await;
        let answers = load.stop().await;
        println!("{step} (etcd-{victim}) killed: {answers:?}");
        assert!(answers.right > 100, "dnsd answered: {answers:?}");
        assert!(answers.wrong.is_empty() && answers.empty.is_empty() && answers.unanswered == 0, "{answers:?}");

        // The member is still down: the system still applies, and DNS follows.
        master = (master + 1) % 3;
        let slaves: Vec<usize> = (0..3).filter(|&i| i != master).collect();
        let revision = stack.define(master, &slaves).await;
        stack.wait_applied(revision).await;
        wait_dns_master(&stack, master).await;
        stack.etcd.restart_member(victim);
    }
    assert!(stack.exited().is_empty(), "crashed: {:?}", stack.exited());
}

/// All etcd members killed: both dnsd replicas keep answering the master from the
/// zone they had, for longer than any lease; a dnsd started during the outage has
/// no zone and answers REFUSED, so a resolver asks another nameserver. When etcd
/// is back, a new topology is applied and every dnsd, the late one included, names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dnsd_answers_from_its_last_zone_through_a_full_etcd_outage_and_follows_etcd_again() {
    let mut stack = Stack::start(on_three_members());
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    wait_dns_master(&stack, 0).await;

    let load = DnsLoad::start(&stack.nameservers, stack.nodes[0].redis.port());
    stack.etcd.kill();
    tokio::time::sleep(OUTLAST_LEASES).await;

    let answers = load.stop().await;
    println!("through the outage: {answers:?}");
    assert!(answers.right > 100, "dnsd answered: {answers:?}");
    assert!(answers.wrong.is_empty() && answers.empty.is_empty() && answers.unanswered == 0, "{answers:?}");

    // A dnsd that starts while etcd is away.
    let (http, dns) = (free_port(), SocketAddr::from(([127, 0, 0, 1], free_port())));
    let (listen, dns_listen, endpoints) = (format!("127.0.0.1:{http}"), dns.to_string(), stack.etcd.endpoint());
    let mut late = Service::start("dnsd", &["--listen", &listen, "--dns-listen", &dns_listen, "--domain", DOMAIN,
        "--cluster", CLUSTER, "--etcd-endpoints", &endpoints], &[]);
    late.wait_http(http);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (code, ports) = ask_master(&socket, dns, 7).await.expect("the late dnsd answers");
    println!("a dnsd started during the outage answers {code} with {ports:?}");
    assert!(ports.is_empty(), "a dnsd that never reached etcd knows no master: {ports:?}");
    assert_eq!(code, ResponseCode::Refused, "it says it has no zone, rather than that the name does not exist");

    stack.etcd.restart();
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    wait_dns_master(&stack, 1).await;
    let port = stack.nodes[1].redis.port();
    harness::wait_until_async("the late dnsd to name the master", Duration::from_secs(30), || async {
        ask_master(&socket, dns, 8).await.is_some_and(|(_, ports)| ports == [port])
    })
    .await;
    assert!(stack.exited().is_empty(), "crashed: {:?}", stack.exited());
}
