#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The observer on real processes: etcd, redis-server, the dictator and dnsd
//! binaries, and one or two observers.

use std::time::Duration;

use etcd_client::{GetOptions, SortOrder, SortTarget};
use harness::{free_port, Etcd, Redis, Service};
use serde_json::{json, Value};
use topology::records::StatusRecord;
use topology::Keys;

/// etcd, a dictator, a dnsd and `redis` instances registered as nodes.
struct Stack {
    etcd: Etcd,
    _dictator: Service,
    dictator_url: String,
    _dnsd: Service,
    dnsd_url: String,
    nodes: Vec<Redis>,
    keys: Keys,
}

impl Stack {
    async fn start(redis_count: usize) -> Stack {
        let etcd = Etcd::start();
        let (dictator_port, dnsd_port, dns_port) = (free_port(), free_port(), free_port());
        let nameserver = format!("127.0.0.1:{dns_port}");
        let mut dictator = Service::start(
            "dictator",
            &["--listen", &format!("127.0.0.1:{dictator_port}"), "--nameserver", &nameserver],
            &[],
        );
        dictator.wait_http(dictator_port);
        let mut dnsd = Service::start(
            "dnsd",
            &[
                "--listen", &format!("127.0.0.1:{dnsd_port}"),
                "--dns-listen", &nameserver,
                "--etcd-endpoints", &etcd.endpoint(),
            ],
            &[],
        );
        dnsd.wait_http(dnsd_port);
        let nodes: Vec<Redis> = (0..redis_count).map(|_| Redis::start()).collect();
        let stack = Stack {
            dictator_url: format!("http://127.0.0.1:{dictator_port}"),
            dnsd_url: format!("http://127.0.0.1:{dnsd_port}"),
            etcd,
            _dictator: dictator,
            _dnsd: dnsd,
            nodes,
            keys: Keys::new(""),
        };
        // Register the nodes as a node-agent would, so dnsd can name them.
        let mut client = stack.etcd.client().await;
        for (i, node) in stack.nodes.iter().enumerate() {
            let record = json!({"address": "127.0.0.1", "port": node.port(), "role": "master", "repl_offset": 0,
                                "run_id": "x", "healthy": true, "updated_ms": 0});
            client.put(stack.keys.node("redis-1", &format!("node-{}", i + 1)), record.to_string(), None).await.unwrap();
        }
        stack
    }

    fn observer(&self, id: &str) -> (Service, u16) {
        let port = free_port();
        let mut service = Service::start(
            "observer",
            &[
                "--listen", &format!("127.0.0.1:{port}"),
                "--etcd-endpoints", &self.etcd.endpoint(),
                "--dictator", &self.dictator_url,
                "--dnsd", &self.dnsd_url,
                "--id", id,
                "--election-ttl-secs", "2",
                "--retry-min-ms", "100",
                "--retry-max-ms", "500",
            ],
            &[],
        );
        service.wait_http(port);
        (service, port)
    }

    fn topology(&self, master: usize, slaves: &[usize]) -> String {
        let member = |i: usize| json!({"address": "127.0.0.1", "port": self.nodes[i].port()});
        json!({"master": member(master), "slaves": slaves.iter().map(|i| member(*i)).collect::<Vec<_>>()}).to_string()
    }

    async fn define(&self, topology: String) {
        self.etcd.client().await.put(self.keys.topology("redis-1"), topology, None).await.unwrap();
    }

    async fn trigger(&self) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.etcd.client().await.put(self.keys.trigger("redis-1"), id.clone(), None).await.unwrap();
        id
    }

    async fn status(&self) -> Option<StatusRecord> {
        let resp = self.etcd.client().await.get(self.keys.status("redis-1"), None).await.unwrap();
        resp.kvs().first().map(|kv| serde_json::from_slice(kv.value()).unwrap())
    }

    async fn published_master_port(&self) -> Option<u64> {
        let resp = reqwest::get(format!("{}/clusters/redis-1/dns", self.dnsd_url)).await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        let body: Value = resp.json().await.ok()?;
        body.pointer("/master/port").and_then(Value::as_u64)
    }

    /// The observers campaigning, in the order they joined the election (the
    /// first is the leader).
    async fn candidates(&self) -> Vec<String> {
        let sorted = GetOptions::new().with_prefix().with_sort(SortTarget::Create, SortOrder::Ascend);
        let got = self.etcd.client().await.get(format!("{}/", self.keys.election()), Some(sorted)).await.unwrap();
        got.kvs().iter().map(|kv| kv.value_str().unwrap().to_string()).collect()
    }

    async fn wait_applied(&self, master: usize, what: &str) {
        let port = self.nodes[master].port() as u64;
        harness::wait_until_async(what, Duration::from_secs(20), || async {
            self.published_master_port().await == Some(port)
                && self.status().await.is_some_and(|s| s.result == "ok")
        })
        .await;
        assert_eq!(self.nodes[master].role(), "master");
    }
}

/// What the observer on `port` says about leading; `None` when it does not answer.
async fn leader_flag(port: u16) -> Option<bool> {
    let body = harness::etcd::http_get(port, "/status")?;
    serde_json::from_str::<Value>(&body).ok()?["leader"].as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_applies_the_topology_and_publishes_dns() {
    let stack = Stack::start(3).await;
    let (_observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1, 2])).await;
    stack.wait_applied(0, "first topology applied and published").await;
    assert_eq!(stack.nodes[1].role(), "slave");

    // A new topology moves the master; a trigger alone re-applies (no change).
    stack.define(stack.topology(1, &[0, 2])).await;
    stack.wait_applied(1, "moved master applied and published").await;
    let trigger = stack.trigger().await;
    harness::wait_until_async("trigger recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.trigger.as_deref() == Some(trigger.as_str()) && s.result == "ok")
    })
    .await;
    let status = stack.status().await.unwrap();
    assert_eq!(status.observer, "o1");
    assert_eq!(status.failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dictator_failure_publishes_nothing_and_is_retried() {
    let mut stack = Stack::start(2).await;
    let (_observer, _) = stack.observer("o1");
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "first topology").await;

    // The intended new master is down: the dictator answers 502, DNS stays.
    stack.nodes[1].kill();
    stack.define(stack.topology(1, &[0])).await;
    harness::wait_until_async("a failed round recorded", Duration::from_secs(10), || async {
        stack.status().await.is_some_and(|s| s.result == "dictator" && s.failures >= 2)
    })
    .await;
    let status = stack.status().await.unwrap();
    assert!(status.error.as_deref().unwrap_or("").contains("502"), "{status:?}");
    assert_eq!(stack.published_master_port().await, Some(stack.nodes[0].port() as u64), "DNS must not move");

    // It comes back (empty): the retry applies without anyone writing again.
    stack.nodes[1].restart_empty();
    stack.wait_applied(1, "retried round").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_observers_acts_and_the_other_takes_over() {
    let stack = Stack::start(2).await;
    let (mut first, first_port) = stack.observer("first");
    harness::wait_until_async("first leads", Duration::from_secs(10), || async {
        leader_flag(first_port).await == Some(true)
    })
    .await;
    let (_second, second_port) = stack.observer("second");
    // Once the second's key is in the election behind the first's, it has
    // campaigned and waits: from then on both must answer, and only one leads.
    harness::wait_until_async("second campaigns", Duration::from_secs(10), || async {
        stack.candidates().await == ["first", "second"]
    })
    .await;
    assert_eq!(leader_flag(first_port).await, Some(true), "the first stopped leading");
    assert_eq!(leader_flag(second_port).await, Some(false), "two leaders (or the second does not answer)");

    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "applied by the leader").await;
    assert_eq!(stack.status().await.unwrap().observer, "first");

    first.process().kill();
    harness::wait_until_async("second takes over", Duration::from_secs(15), || async {
        leader_flag(second_port).await == Some(true)
    })
    .await;
    stack.define(stack.topology(1, &[0])).await;
    stack.wait_applied(1, "applied by the new leader").await;
    assert_eq!(stack.status().await.unwrap().observer, "second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_observer_reconciles_what_it_missed() {
    let mut stack = Stack::start(2).await;
    // Written while no observer runs.
    stack.define(stack.topology(0, &[1])).await;
    let (observer, _) = stack.observer("o1");
    stack.wait_applied(0, "reconciled at start").await;
    drop(observer);

    stack.define(stack.topology(1, &[0])).await;
    stack.etcd.kill();
    stack.etcd.restart();
    let (_observer, _) = stack.observer("o2");
    stack.wait_applied(1, "reconciled after restart").await;
    // And it keeps watching across an etcd restart.
    stack.etcd.kill();
    stack.etcd.restart();
    stack.define(stack.topology(0, &[1])).await;
    stack.wait_applied(0, "applied after etcd restarted under it").await;
}

#[test]
fn help_documents_every_flag_with_its_env_var() {
    harness::assert_documents_flags(
        "observer",
        &[
            ("--dictator", "DICTATOR"),
            ("--dnsd", "DNSD"),
            ("--nameserver", "NAMESERVER"),
            ("--listen", "LISTEN"),
            ("--id", "OBSERVER_ID"),
            ("--election-ttl-secs", "ELECTION_TTL_SECS"),
            ("--retry-min-ms", "RETRY_MIN_MS"),
            ("--retry-max-ms", "RETRY_MAX_MS"),
            ("--request-timeout-ms", "REQUEST_TIMEOUT_MS"),
            ("--failover-after-ms", "FAILOVER_AFTER_MS"),
            ("--failover-after-refused-ms", "FAILOVER_AFTER_REFUSED_MS"),
            ("--failover-cooldown-secs", "FAILOVER_COOLDOWN_SECS"),
            ("--domain", "DOMAIN"),
            ("--etcd-endpoints", "ETCD_ENDPOINTS"),
            ("--etcd-prefix", "ETCD_PREFIX"),
            ("--log-format", "LOG_FORMAT"),
            ("--redis-user", "REDIS_USER"),
            ("--redis-password-file", "REDIS_PASSWORD_FILE"),
        ],
    );
}
