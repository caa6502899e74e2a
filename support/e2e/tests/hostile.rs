#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Hostile input against the running system (issue 17, item 6): at least 10,000
//! mutated HTTP requests across every service's HTTP port and 10,000 mutated DNS
//! packets to dnsd over UDP and TCP, then every service must still answer
//! correctly, and etcd and the redis roles must be as they were.
//!
//! The inputs come from one seeded RNG (the seed is printed; `HOSTILE_SEED=<n>`
//! replays a run). No request carries a token that may write: the only valid
//! token sent goes with the dictator's `dry_run=true`, on an intact request line,
//! so its mutated bodies reach the topology parser and the planner and change
//! nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::stack::{Stack, StackOptions, CLUSTER, DOMAIN};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HTTP_INPUTS: usize = 10_000;
const DNS_UDP_PACKETS: usize = 7_000;
const DNS_TCP_PACKETS: usize = 3_000;
/// How long a client waits for an answer before it gives up (as a client of a
/// truncated request would).
const ANSWER_WAIT: Duration = Duration::from_millis(400);

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

fn random_bytes(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let n = rng.random_range(0..=max);
    (0..n).map(|_| rng.random()).collect()
}

/// Flips bits, cuts, inserts or duplicates parts of `bytes`.
fn mutate(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.random_range(1..=4) {
        match rng.random_range(0..6) {
            0 | 1 if !bytes.is_empty() => {
                for _ in 0..rng.random_range(1..=8) {
                    let i = rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << rng.random_range(0..8);
                }
            }
            2 if !bytes.is_empty() => bytes.truncate(rng.random_range(0..bytes.len())),
            3 => {
                let at = rng.random_range(0..=bytes.len());
                let insert = random_bytes(rng, 16);
                bytes.splice(at..at, insert);
            }
            4 if bytes.len() > 2 => {
                let (a, b) = (rng.random_range(0..bytes.len()), rng.random_range(0..bytes.len()));
                let (a, b) = (a.min(b), a.max(b));
                let copy = bytes[a..b].to_vec();
                bytes.splice(b..b, copy);
            }
            _ => {
                if let Some(i) = (!bytes.is_empty()).then(|| rng.random_range(0..bytes.len())) {
                    bytes[i] = *pick(rng, &[b'"', b'{', b'}', b'[', b']', b':', b',', b'\\', 0, 0xff, b'9', b'-']);
                }
            }
        }
    }
    bytes
}

/// A topology body: the real one mutated, another shape, or noise.
fn topology_body(rng: &mut StdRng, real: &str) -> Vec<u8> {
    match rng.random_range(0..10) {
        0..=4 => mutate(rng, real.as_bytes().to_vec()),
        5 => random_bytes(rng, 300),
        6 => format!("{}{}", "[".repeat(rng.random_range(1..5000)), "]".repeat(rng.random_range(0..10))).into_bytes(),
        7 => {
            let address = pick(rng, &["999.1.1.1", "", "::", "node-9.redis-1.cluster.local", "a\u{0}b", "x".repeat(300).as_str()]).to_string();
            serde_json::json!({ "master": { "address": address, "port": rng.random::<i64>() }, "slaves": [{"address": "127.0.0.1"}, {"address": "127.0.0.1"}] }).to_string().into_bytes()
        }
        8 => serde_json::json!({ "master": { "address": "127.0.0.1", "prot": 1 }, "extra": true }).to_string().into_bytes(),
        _ => Vec::new(),
    }
}

/// One HTTP input: a request to `port` of the service `kind`.
fn http_input(rng: &mut StdRng, kind: &str, real: &str, token: &str) -> Vec<u8> {
    // The dictator's parser and planner behind a valid token, in a dry run only.
    if kind == "dictator" && rng.random_range(0..10) == 0 {
        let body = topology_body(rng, real);
        let mut head = format!(
            "PUT /clusters/{CLUSTER}/master?dry_run=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        head.extend(body);
        return head;
    }
    // One defect at a time, so that most requests reach the routing, the token
    // check and the handlers, and the rest hyper's parser.
    let defect = rng.random_range(0..10);
    let methods = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"];
    let odd_methods = ["TRACE", "CONNECT", "PUT ", "G\0T", "PRI", "get", "X".repeat(100).leak()];
    let paths = [
        "/master", "/clusters/redis-1/master", "/dns", "/clusters/redis-1/dns", "/status", "/", "/healthz", "/metrics",
        "/replica?lag=x", "/replica?lag=18446744073709551616", "/replica?lag=5", "/clusters/../master", "/clusters/%00/dns",
        "/clusters/redis-1/master?force=true&revision=999999999", "/master?revision=-1&dry_run=maybe", "/dns?revision=1e9",
        "/master?down=[::1]:x&force=true", "/clusters/REDIS_1/dns", "/clusters/redis-1", "/clusters/redis-1/dns?revision=1",
    ];
    let method = if defect == 4 { pick(rng, &odd_methods).to_string() } else { pick(rng, &methods).to_string() };
    let path = match (defect, rng.random_range(0..3)) {
        (5, 0) => format!("/{}", "a/".repeat(rng.random_range(1..6000))),
        (5, 1) => String::from_utf8_lossy(&random_bytes(rng, 40)).into_owned(),
        (5, _) => pick(rng, &["//", "*", "http://evil/master", "/%", "/master#x", "/master?revision=%ff"]).to_string(),
        _ => pick(rng, &paths).to_string(),
    };
    let near = {
        let mut t = token.as_bytes().to_vec();
        let i = rng.random_range(0..t.len());
        t[i] = if t[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8_lossy(&t).into_owned()
    };
    let auth = match rng.random_range(0..8) {
        0 => String::new(),
        1 => format!("Authorization: Bearer {near}\r\n"),
        2 => "Authorization: Bearer\r\n".into(),
        3 => "Authorization: Basic b3BlcmF0b3I6b3BlcmF0b3I=\r\n".into(),
        4 => format!("Authorization: Bearer {}\r\n", "A".repeat(rng.random_range(1..20_000))),
        5 => format!("Authorization: Bearer {near}\r\nAuthorization: Bearer {near}\r\n"),
        6 => format!("Authorization: bEaReR  {}\r\n", &token[..token.len() / 2]),
        _ => "Authorization: Bearer 0123456789abcdef0123456789abcdef\r\n".into(),
    };
    let body = topology_body(rng, real);
    let length = match (defect, rng.random_range(0..6)) {
        (7, 0) => String::new(),
        (7, 1) => format!("Content-Length: {}\r\n", body.len() + rng.random_range(1..100)),
        (7, 2) => "Content-Length: -1\r\n".into(),
        (7, 3) => "Content-Length: 99999999999999999999\r\n".into(),
        (7, 4) => format!("Content-Length: {0}\r\nContent-Length: {1}\r\n", body.len(), body.len() + 1),
        (7, _) => "Transfer-Encoding: chunked\r\n".into(),
        _ => format!("Content-Length: {}\r\n", body.len()),
    };
    let mut extra = String::from("Connection: close\r\n");
    if defect == 8 {
        for _ in 0..rng.random_range(1..4) {
            let headers: [&str; 10] = [
                "Connection: keep-alive\r\n", "Expect: 100-continue\r\n", "Content-Type: application/json\r\n",
                "Content-Type: text/plain; charset=\u{1}\r\n", "Host: \r\n", "X-Forwarded-For: 10.0.0.1\r\n",
                "Upgrade: h2c\r\n", "Te: trailers\r\n", ": empty-name\r\n", "Bad Header\r\n",
            ];
            let header: &&str = pick(rng, &headers);
            extra.push_str(header);
        }
        if rng.random_range(0..5) == 0 {
            extra.push_str(&(0..100).map(|i| format!("X-{i}: v\r\n")).collect::<String>());
        }
    }
    let version = if defect == 6 { *pick(rng, &["HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "HTTP/1.1 x"]) } else { "HTTP/1.1" };
    let mut request = format!("{method} {path} {version}\r\nHost: 127.0.0.1\r\n{auth}{length}{extra}\r\n").into_bytes();
    if length.starts_with("Transfer-Encoding") {
        request.extend(format!("{:x}\r\n", body.len() + rng.random_range(0..3)).into_bytes());
        request.extend(&body);
        let ends: [&[u8]; 3] = [b"\r\n0\r\n\r\n", b"\r\nzz\r\n", b""];
        let end: &&[u8] = pick(rng, &ends);
        request.extend_from_slice(end);
    } else {
        request.extend(body);
    }
    match (defect, rng.random_range(0..2)) {
        (9, 0) => mutate(rng, request),
        (9, _) => {
            let cut = rng.random_range(0..=request.len());
            request.truncate(cut);
            request
        }
        _ => request,
    }
}

/// Sends one request; returns the answer's status (0: none before the client gave up).
async fn send_http(port: u16, request: Vec<u8>) -> u16 {
    let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(("127.0.0.1", port))).await
    else {
        return 0;
    };
    let _ = stream.write_all(&request).await;
    let mut answer = Vec::new();
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
        if complete(&answer) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.").and_then(|rest| rest.get(2..5)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Whether `answer` holds a whole response (head, and the body its length says).
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
    length.is_none_or(|n| body.len() >= n)
}

fn dns_query(rng: &mut StdRng) -> Vec<u8> {
    let names = [
        format!("master.{CLUSTER}.{DOMAIN}"), format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}"),
        format!("slaves.{CLUSTER}.{DOMAIN}"), format!("node-1.{CLUSTER}.{DOMAIN}"), format!("version.{CLUSTER}.{DOMAIN}"),
        DOMAIN.to_string(), "example.com".into(), format!("ns.{DOMAIN}"), format!("addr-7f000001.{CLUSTER}.{DOMAIN}"),
    ];
    let types = [RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::TXT, RecordType::ANY, RecordType::AXFR,
        RecordType::IXFR, RecordType::SOA, RecordType::NS, RecordType::from(rng.random::<u16>())];
    let mut message = Message::query();
    message.metadata.id = rng.random();
    let name = Name::from_ascii(pick(rng, &names)).unwrap_or_default();
    for _ in 0..if rng.random_range(0..10) == 0 { rng.random_range(0..3) } else { 1 } {
        message.add_query(Query::query(name.clone(), *pick(rng, &types)));
    }
    if rng.random_bool(0.5) {
        let mut edns = Edns::new();
        edns.set_max_payload(rng.random());
        message.set_edns(edns);
    }
    message.to_vec().unwrap_or_default()
}

/// A DNS packet: a real query, bit-flipped or cut most of the time, or noise.
fn dns_input(rng: &mut StdRng) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 => dns_query(rng),
        1 => random_bytes(rng, 600),
        _ => {
            let query = dns_query(rng);
            mutate(rng, query)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mutated_http_requests_and_dns_packets_crash_nothing_and_change_nothing() {
    let seed: u64 = std::env::var("HOSTILE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(17);
    println!("seed {seed} (HOSTILE_SEED={seed} replays this run)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stack = Stack::start(StackOptions { api_tokens: true, ..StackOptions::default() });
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    stack.wait_registrations_follow_roles().await;
    let real = stack.topology(1, &[0, 2]);
    let token = stack.api_tokens[1].clone();
    let before = (stack.etcd_state().await, stack.nodes.iter().map(|n| n.redis.role()).collect::<Vec<_>>());
    let started = Instant::now();

    // HTTP: every input built first from the one RNG, then sent 32 at a time.
    let targets = [
        (stack.dictator_url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("dictator port"), "dictator"),
        (stack.dnsd_url.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).expect("dnsd port"), "dnsd"),
        (stack.observers[0].1, "observer"),
        (stack.nodes[0].agent_port, "node-agent"),
    ];
    let inputs: Vec<(u16, Vec<u8>)> = (0..HTTP_INPUTS)
        .map(|_| {
            let (port, kind) = *pick(&mut rng, &targets);
            (port, http_input(&mut rng, kind, &real, &token))
        })
        .collect();
    let statuses = Arc::new(std::sync::Mutex::new(BTreeMap::<u16, usize>::new()));
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for (port, request) in inputs {
        let permit = slots.clone().acquire_owned().await.expect("semaphore");
        let statuses = statuses.clone();
        tasks.push(tokio::spawn(async move {
            let shown = std::env::var("HOSTILE_SHOW").is_ok().then(|| request.clone());
            let status = send_http(port, request).await;
            if let Some(request) = shown.filter(|_| status == 400) {
                println!("400 <- {:?}", String::from_utf8_lossy(&request[..request.len().min(300)]));
            }
            *statuses.lock().unwrap_or_else(|p| p.into_inner()).entry(status).or_default() += 1;
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("an HTTP sender");
    }
    let http_took = started.elapsed();

    // DNS over UDP: sent at a bounded pace, answers counted as they come.
    let dns = stack.dns;
    let udp = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("udp socket"));
    let udp_answers = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let (udp, answers) = (udp.clone(), udp_answers.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 65535];
            while udp.recv(&mut buf).await.is_ok() {
                answers.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    for i in 0..DNS_UDP_PACKETS {
        let packet = dns_input(&mut rng);
        let _ = udp.send_to(&packet, dns).await;
        if i % 200 == 199 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // DNS over TCP: 1 to 3 packets per connection, length-prefixed (some lie).
    let mut tcp_packets = 0;
    let mut connections = Vec::new();
    while tcp_packets < DNS_TCP_PACKETS {
        let mut stream_bytes = Vec::new();
        for _ in 0..rng.random_range(1..=3) {
            let packet = dns_input(&mut rng);
            let length = match rng.random_range(0..10) {
                0 => rng.random::<u16>(),
                1 => (packet.len() as u16).saturating_add(1),
                _ => packet.len() as u16,
            };
            stream_bytes.extend(length.to_be_bytes());
            stream_bytes.extend(packet);
            tcp_packets += 1;
        }
        connections.push(stream_bytes);
    }
    let tcp_answers = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for bytes in connections {
        let permit = slots.clone().acquire_owned().await.expect("semaphore");
        let answers = tcp_answers.clone();
        tasks.push(tokio::spawn(async move {
            if let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(dns)).await {
                let _ = stream.write_all(&bytes).await;
                let mut buf = [0u8; 4096];
                if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await
                    && n > 0
                {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        }));
    }
    for task in tasks {
        task.await.expect("a DNS sender");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    receiver.abort();
    let took = started.elapsed();

    // Every service still answers, and correctly.
    let crashed = stack.exited();
    for (port, kind) in targets {
        assert_eq!(send_http(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec()).await, 200, "{kind} /healthz");
    }
    let dig = std::process::Command::new("dig")
        .args(["+short", "+time=2", "+tries=1", "-p", &dns.port().to_string(), &format!("@{}", dns.ip())])
        .args(["SRV", &format!("_redis._tcp.master.{CLUSTER}.{DOMAIN}")])
        .output()
        .expect("dig");
    let answer = String::from_utf8_lossy(&dig.stdout).into_owned();
    assert!(answer.contains(&format!("{}.", stack.node_name(0))), "dnsd no longer answers the master: {answer:?}");
    let after = (stack.etcd_state().await, stack.nodes.iter().map(|n| n.redis.role()).collect::<Vec<_>>());
    let changed_keys = before.0.iter().filter(|(k, v)| after.0.get(*k) != Some(v)).count()
        + after.0.keys().filter(|k| !before.0.contains_key(*k)).count();
    let changed_roles = before.1.iter().zip(&after.1).filter(|(a, b)| a != b).count();
    let panics = ["dictator", "dnsd"]
        .iter()
        .zip([stack.dictator_log(), stack.dnsd_log()])
        .filter(|(_, log)| log.contains("panicked"))
        .map(|(name, _)| *name)
        .collect::<Vec<_>>();
    let statuses = statuses.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "hostile input: {HTTP_INPUTS} HTTP requests (statuses {statuses:?}; 0 = no answer before the client gave up) in {:.1} s, \
         {} DNS packets ({DNS_UDP_PACKETS} UDP, {tcp_packets} TCP; answers: {} UDP, {} TCP connections) in {:.1} s total; \
         crashes={} panics={} state changes={} (etcd keys {changed_keys}, redis roles {changed_roles})",
        http_took.as_secs_f64(),
        DNS_UDP_PACKETS + tcp_packets,
        udp_answers.load(Ordering::Relaxed),
        tcp_answers.load(Ordering::Relaxed),
        took.as_secs_f64(),
        crashed.len(),
        panics.len(),
        changed_keys + changed_roles,
    );
    assert!(crashed.is_empty(), "services exited: {crashed:?}");
    assert!(panics.is_empty(), "panics in {panics:?}");
    assert_eq!(statuses.get(&500), None, "an internal error answered");
    assert!(statuses.get(&200).copied().unwrap_or(0) > 0 && statuses.get(&401).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert_eq!(after.0, before.0, "etcd changed");
    assert_eq!(after.1, before.1, "a redis role changed");
}
