//! Shared set-up for dnsd's tests: real etcd, the real `dnsd` binary, and clients
//! (dig, hickory-resolver, raw UDP) pointed at its loopback port only.
#![allow(dead_code)]
// Test helpers: a failure here is a test failure (clippy's allow-unwrap-in-tests
// covers only #[test] functions).
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use harness::{free_port, Etcd, Service};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};
use service::resolve::MemberResolver;

pub const DOMAIN: &str = "cluster.local";

/// A running dnsd.
pub struct Dnsd {
    pub service: Service,
    pub http: u16,
    pub dns: u16,
}

impl Dnsd {
    /// Starts dnsd on fresh ports against `etcd`, with `--cluster redis-1`.
    pub fn start(etcd: &Etcd, extra: &[&str]) -> Dnsd {
        let (http, dns) = (free_port(), free_port());
        let listen = format!("127.0.0.1:{http}");
        let dns_listen = format!("127.0.0.1:{dns}");
        let endpoint = etcd.endpoint();
        let mut args = vec![
            "--listen", &listen, "--dns-listen", &dns_listen, "--etcd-endpoints", &endpoint, "--cluster", "redis-1",
        ];
        args.extend_from_slice(extra);
        let mut service = Service::start("dnsd", &args, &[]);
        service.wait_http(http);
        Dnsd { service, http, dns }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    pub fn dns_addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.dns).into()
    }

    /// The records of a NOERROR answer (the data part, as `+short` prints it),
    /// sorted. Panics on any other status or an empty answer: a timeout or an
    /// NXDOMAIN must never pass for an expected answer.
    pub fn short(&self, args: &[&str]) -> Vec<String> {
        let answer = self.answer(args);
        assert!(
            answer.status == "NOERROR" && !answer.records.is_empty(),
            "expected records for {args:?}, got {answer:?}"
        );
        answer.records
    }

    /// The answer's records, possibly none: for polling until an answer appears
    /// (the comparison with a non-empty expectation is what must hold).
    pub fn records(&self, args: &[&str]) -> Vec<String> {
        self.answer(args).records
    }

    /// Asserts a NODATA answer: NOERROR with an empty answer section.
    pub fn assert_nodata(&self, args: &[&str]) {
        let answer = self.answer(args);
        assert_eq!((answer.status.as_str(), answer.records.len()), ("NOERROR", 0), "{args:?}: {answer:?}");
    }

    /// The status and answer records dig got; panics when dig got no answer at all.
    pub fn answer(&self, args: &[&str]) -> Answer {
        let out = self.dig(&[&["+noall", "+comments", "+answer"], args].concat());
        let status = status_of(&out).unwrap_or_else(|| panic!("no status in dig output:\n{out}"));
        let mut records: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            // `name ttl class type data...`: keep the data, as +short prints it.
            .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
            .collect();
        records.sort();
        Answer { status, records }
    }

    /// Full `dig` output (for status, flags and sections). Panics when dig fails
    /// (exit status 9: no reply), so a timeout never reads as an empty answer.
    pub fn dig(&self, args: &[&str]) -> String {
        let port = self.dns.to_string();
        let out = Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=2"])
            .args(args)
            .output()
            .expect("run dig");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "dig {args:?} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// The status dig reports (NOERROR, NXDOMAIN, ...).
    pub fn status(&self, args: &[&str]) -> String {
        let out = self.dig(args);
        status_of(&out).unwrap_or_else(|| panic!("no status in dig output:\n{out}"))
    }

    pub fn resolver(&self) -> MemberResolver {
        MemberResolver::new(&[self.dns_addr()]).unwrap()
    }

    /// Sends raw bytes over UDP; the reply, if one comes within 5 s.
    pub fn raw(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket.send_to(packet, self.dns_addr()).unwrap();
        let mut buf = [0u8; 4096];
        socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
    }

    /// Sends a message over UDP and decodes the reply. UDP may drop a datagram
    /// (a flood fills the socket buffer), so it asks up to three times, as every
    /// resolver does; no answer at all fails the test.
    pub fn ask(&self, message: &Message) -> Message {
        let packet = message.to_vec().unwrap();
        let reply = (0..3).find_map(|_| self.raw(&packet)).expect("an answer to one of three tries");
        Message::from_vec(&reply).unwrap()
    }

    /// The SOA serial, from a UDP query.
    pub fn serial(&self) -> u32 {
        let reply = self.ask(&query(DOMAIN, RecordType::SOA));
        match &reply.answers[0].data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            other => panic!("not an SOA: {other:?}"),
        }
    }
}

/// What one query got: dig's status and the answer's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: String,
    pub records: Vec<String>,
}

pub fn status_of(dig_output: &str) -> Option<String> {
    let at = dig_output.find("status: ")? + "status: ".len();
    Some(dig_output[at..].split(',').next()?.to_string())
}

/// A standard query for one name.
pub fn query(name: &str, rtype: RecordType) -> Message {
    let mut message = Message::new(4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    message
}

/// Writes `/nodes/<cluster>/<node>` as a node-agent would.
pub async fn register(etcd: &Etcd, cluster: &str, node: &str, address: &str, port: u16) {
    let record = json!({"address": address, "port": port, "role": "unknown", "repl_offset": 0,
        "run_id": "test", "healthy": true, "updated_ms": 1});
    etcd.client().await.put(format!("/nodes/{cluster}/{node}"), record.to_string(), None).await.unwrap();
}

pub async fn unregister(etcd: &Etcd, cluster: &str, node: &str) {
    etcd.client().await.delete(format!("/nodes/{cluster}/{node}"), None).await.unwrap();
}

pub async fn put(url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    harness::put_json(url, body).await
}

pub async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::Client::new().get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}")))
}

/// A topology of node names of redis-1: `master` and `slaves`.
pub fn nodes_topology(master: &str, slaves: &[&str]) -> String {
    let name = |n: &str| format!("{n}.redis-1.{DOMAIN}");
    json!({
        "master": {"address": name(master)},
        "slaves": slaves.iter().map(|s| json!({"address": name(s)})).collect::<Vec<_>>(),
    })
    .to_string()
}

/// Waits until `check` holds (answers propagate asynchronously between replicas).
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    harness::wait_until(what, Duration::from_secs(10), &mut check);
}
