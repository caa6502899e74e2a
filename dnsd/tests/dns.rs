//! The real `dnsd` against real etcd, asked with dig, hickory-resolver and raw UDP.

mod common;

use common::*;
use harness::Etcd;
use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::RecordType;
use serde_json::json;
use topology::Member;

/// etcd with node-1..3 of redis-1 registered, dnsd, and node-1 published as master.
async fn published() -> (Etcd, Dnsd) {
    let etcd = Etcd::start();
    register(&etcd, "redis-1", "node-1", "127.0.0.11", 7001).await;
    register(&etcd, "redis-1", "node-2", "127.0.0.12", 7002).await;
    register(&etcd, "redis-1", "node-3", "::1", 7003).await;
    let dnsd = Dnsd::start(&etcd, &[]);
    let (status, body) = put(&dnsd.url("/dns"), nodes_topology("node-1", &["node-2", "node-3"])).await;
    assert_eq!(status, 200, "{body}");
    (etcd, dnsd)
}

#[tokio::test]
async fn answers_every_design_name_via_dig() {
    let (_etcd, dnsd) = published().await;
    let srv = |name: &str| dnsd.short(&[name, "SRV"]);
    let master = vec!["0 100 7001 node-1.redis-1.cluster.local.".to_string()];
    assert_eq!(srv("master.redis-1.cluster.local"), master);
    assert_eq!(srv("_redis._tcp.master.redis-1.cluster.local"), master);
    let slaves = vec![
        "0 100 7002 node-2.redis-1.cluster.local.".to_string(),
        "0 100 7003 node-3.redis-1.cluster.local.".to_string(),
    ];
    assert_eq!(srv("slaves.redis-1.cluster.local"), slaves);
    assert_eq!(srv("_REDIS._tcp.Slaves.redis-1.cluster.local."), slaves, "names are case-insensitive");
    assert_eq!(dnsd.short(&["master.redis-1.cluster.local", "A"]), vec!["127.0.0.11"]);
    assert_eq!(dnsd.short(&["node-2.redis-1.cluster.local", "A"]), vec!["127.0.0.12"]);
    assert_eq!(dnsd.short(&["node-3.redis-1.cluster.local", "AAAA"]), vec!["::1"]);
    assert_eq!(srv("node-2.redis-1.cluster.local"), vec!["0 100 7002 node-2.redis-1.cluster.local."]);
    let revision = dnsd.short(&["version.redis-1.cluster.local", "TXT"]);
    assert_eq!(revision.len(), 1);
    assert!(revision[0].trim_matches('"').parse::<u64>().is_ok(), "{revision:?}");
    assert_eq!(dnsd.short(&["cluster.local", "NS"]), vec!["ns.cluster.local."]);
    assert_eq!(dnsd.short(&["ns.cluster.local", "A"]), vec!["127.0.0.1"]);

    // Full answer: authoritative, targets' addresses in the additional section, TTL 1.
    let out = dnsd.dig(&["slaves.redis-1.cluster.local", "SRV", "+noall", "+answer", "+additional", "+comments"]);
    assert!(out.contains("flags: qr aa"), "{out}");
    assert!(out.contains("slaves.redis-1.cluster.local. 1\tIN\tSRV\t0 100 7002 node-2"), "{out}");
    assert!(out.contains("node-2.redis-1.cluster.local. 1\tIN\tA\t127.0.0.12"), "{out}");
    assert!(out.contains("node-3.redis-1.cluster.local. 1\tIN\tAAAA\t::1"), "{out}");

    // Over TCP the same.
    assert_eq!(dnsd.short(&["+tcp", "master.redis-1.cluster.local", "SRV"]), master);
}

#[tokio::test]
async fn answers_via_hickory_resolver() {
    let (_etcd, dnsd) = published().await;
    let resolver = dnsd.resolver();
    let master = resolver.srv("_redis._tcp.master.redis-1.cluster.local").await.unwrap();
    assert_eq!(master, vec!["127.0.0.11:7001".parse().unwrap()]);
    let mut slaves = resolver.srv("slaves.redis-1.cluster.local").await.unwrap();
    slaves.sort();
    assert_eq!(slaves, vec!["127.0.0.12:7002".parse().unwrap(), "[::1]:7003".parse().unwrap()]);
    let one = resolver.resolve_one(&Member::parse_host_port("master.redis-1.cluster.local").unwrap()).await.unwrap();
    assert_eq!(one, "127.0.0.11:7001".parse().unwrap());
    let ips = resolver.ips("node-2.redis-1.cluster.local").await.unwrap();
    assert_eq!(ips, vec!["127.0.0.12".parse::<std::net::IpAddr>().unwrap()]);
    assert_eq!(dnsd.status(&["master.redis-9.cluster.local", "SRV"]), "NXDOMAIN");
    assert!(resolver.srv("master.redis-9.cluster.local").await.unwrap().is_empty(), "NXDOMAIN is no records");
}

#[tokio::test]
async fn rcodes_nxdomain_refused_formerr_notimp() {
    let (_etcd, dnsd) = published().await;
    // NXDOMAIN inside the zone, with the SOA for negative caching.
    let out = dnsd.dig(&["node-9.redis-1.cluster.local", "A"]);
    assert_eq!(status_of(&out).unwrap(), "NXDOMAIN", "{out}");
    assert!(out.contains("flags: qr aa"), "{out}");
    assert!(out.contains("IN\tSOA\tns.cluster.local. hostmaster.cluster.local."), "{out}");
    assert_eq!(dnsd.status(&["master.redis-9.cluster.local", "SRV"]), "NXDOMAIN");
    // NODATA: the name exists, not with that type.
    let out = dnsd.dig(&["master.redis-1.cluster.local", "TXT"]);
    assert_eq!(status_of(&out).unwrap(), "NOERROR", "{out}");
    assert!(out.contains("ANSWER: 0") && out.contains("AUTHORITY: 1"), "{out}");
    assert_eq!(dnsd.status(&["redis-1.cluster.local", "A"]), "NOERROR");
    // REFUSED outside the zone: no open resolver.
    let out = dnsd.dig(&["example.com", "A"]);
    assert_eq!(status_of(&out).unwrap(), "REFUSED", "{out}");
    assert!(!out.contains("flags: qr aa"), "{out}");
    assert_eq!(dnsd.status(&["master.redis-1.cluster.local", "SRV", "-c", "CH"]), "REFUSED");
    assert_eq!(dnsd.ask(&query("cluster.local.", RecordType::AXFR)).metadata.response_code, ResponseCode::Refused);

    // FORMERR: two questions.
    let mut two = query("master.redis-1.cluster.local.", RecordType::SRV);
    two.add_query(hickory_proto::op::Query::query("slaves.redis-1.cluster.local.".parse().unwrap(), RecordType::SRV));
    assert_eq!(dnsd.ask(&two).metadata.response_code, ResponseCode::FormErr);
    // FORMERR: a valid header announcing a question, followed by garbage.
    let mut packet = query("master.redis-1.cluster.local.", RecordType::SRV).to_vec().unwrap();
    packet.truncate(12 + 5);
    let reply = dnsd.raw(&packet).expect("FORMERR reply");
    assert_eq!(reply[0..2], packet[0..2], "same id");
    assert_eq!(reply[3] & 0x0f, 1, "rcode FORMERR");
    // FORMERR: no question at all.
    let mut none = query("master.redis-1.cluster.local.", RecordType::SRV);
    none.queries.clear();
    assert_eq!(dnsd.ask(&none).metadata.response_code, ResponseCode::FormErr);
    // NOTIMP: opcodes other than QUERY.
    let mut notify = query("cluster.local.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Status;
    assert_eq!(dnsd.ask(&notify).metadata.response_code, ResponseCode::NotImp);
    // BADVERS for EDNS versions above 0.
    let out = dnsd.dig(&["+edns=1", "+noednsneg", "master.redis-1.cluster.local", "SRV"]);
    assert_eq!(status_of(&out).unwrap(), "BADVERS", "{out}");
}

/// Asks for the master's SRV record over UDP from its own socket and requires the
/// right answer: proof that the server still serves, not just that its pid lives.
fn assert_serves(dnsd: &Dnsd, id: u16) {
    let mut ask = query("master.redis-1.cluster.local.", RecordType::SRV);
    ask.metadata.id = id;
    let reply = dnsd.ask(&ask);
    assert_eq!((reply.metadata.id, reply.metadata.response_code), (id, ResponseCode::NoError), "{reply:?}");
    let answers: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(answers, ["0 100 7001 node-1.redis-1.cluster.local."], "{reply:?}");
}

#[tokio::test]
async fn malformed_packets_do_not_crash_it() {
    let (_etcd, mut dnsd) = published().await;
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let valid = query("master.redis-1.cluster.local.", RecordType::SRV).to_vec().unwrap();
    // A small deterministic PRNG: random lengths and bytes, and mutations of a valid query.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..3000u16 {
        let packet: Vec<u8> = if i % 2 == 0 {
            let len = (next() % 600) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut p = valid.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p.truncate(1 + (next() as usize) % p.len());
            p
        };
        socket.send_to(&packet, dnsd.dns_addr()).unwrap();
        // Paced by a round trip every 50 datagrams: a dropped probe would then mean
        // a server that stopped serving, not a flooded socket buffer.
        if i % 50 == 49 {
            assert_serves(&dnsd, i);
        }
    }
    // Extremes: empty, a lone header, a compression-pointer loop, a response.
    for packet in [
        vec![],
        vec![0u8; 12],
        vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
        {
            let mut response = valid.clone();
            response[2] |= 0x80;
            response
        },
    ] {
        socket.send_to(&packet, dnsd.dns_addr()).unwrap();
        assert_serves(&dnsd, packet.len() as u16);
    }
    // A TCP client that sends a length and then garbage, and one that hangs up.
    {
        use std::io::Write;
        let mut tcp = std::net::TcpStream::connect(dnsd.dns_addr()).unwrap();
        let _ = tcp.write_all(&[0, 40, 1, 2, 3]);
        drop(tcp);
        let mut tcp = std::net::TcpStream::connect(dnsd.dns_addr()).unwrap();
        let _ = tcp.write_all(&[0xff, 0xff]);
    }
    assert!(dnsd.service.process().is_running());
    assert_serves(&dnsd, 4242);
    assert_eq!(dnsd.short(&["master.redis-1.cluster.local", "SRV"]), vec!["0 100 7001 node-1.redis-1.cluster.local."]);
    assert_eq!(dnsd.short(&["+tcp", "master.redis-1.cluster.local", "SRV"]), vec!["0 100 7001 node-1.redis-1.cluster.local."]);
}

#[tokio::test]
async fn registrations_appearing_and_disappearing_change_answers() {
    let etcd = Etcd::start();
    let dnsd = Dnsd::start(&etcd, &[]);
    assert_eq!(dnsd.status(&["node-7.redis-3.cluster.local", "A"]), "NXDOMAIN");
    register(&etcd, "redis-3", "node-7", "127.0.0.77", 7777).await;
    eventually("node-7 to appear", || dnsd.records(&["node-7.redis-3.cluster.local", "A"]) == ["127.0.0.77"]);
    assert_eq!(dnsd.short(&["node-7.redis-3.cluster.local", "SRV"]), vec!["0 100 7777 node-7.redis-3.cluster.local."]);
    assert_eq!(dnsd.status(&["redis-3.cluster.local", "A"]), "NOERROR");
    // The node moves.
    register(&etcd, "redis-3", "node-7", "127.0.0.78", 7778).await;
    eventually("node-7 to move", || dnsd.records(&["node-7.redis-3.cluster.local", "A"]) == ["127.0.0.78"]);
    // The lease lapses.
    unregister(&etcd, "redis-3", "node-7").await;
    eventually("node-7 to vanish", || dnsd.status(&["node-7.redis-3.cluster.local", "A"]) == "NXDOMAIN");
    assert_eq!(dnsd.status(&["redis-3.cluster.local", "A"]), "NXDOMAIN");
    // Garbage in a registration is ignored without taking the rest down.
    etcd.client().await.put("/nodes/redis-3/node-8", "not json", None).await.unwrap();
    register(&etcd, "redis-3", "node-9", "127.0.0.99", 7999).await;
    eventually("node-9 to appear", || dnsd.records(&["node-9.redis-3.cluster.local", "A"]) == ["127.0.0.99"]);
    assert_eq!(dnsd.status(&["node-8.redis-3.cluster.local", "A"]), "NXDOMAIN");
}

#[tokio::test]
async fn version_txt_and_soa_serial_follow_changes() {
    let (etcd, dnsd) = published().await;
    let txt = || dnsd.short(&["version.redis-1.cluster.local", "TXT"])[0].trim_matches('"').parse::<i64>().unwrap();
    let (version, serial) = (txt(), dnsd.serial());
    let (status, body) = put(&dnsd.url("/clusters/redis-1/dns"), nodes_topology("node-2", &["node-1"])).await;
    assert_eq!(status, 200, "{body}");
    assert!(txt() > version);
    assert_eq!(txt(), body["revision"].as_i64().unwrap(), "TXT carries the revision the PUT returned");
    assert!(dnsd.serial() > serial);
    assert_eq!(dnsd.short(&["master.redis-1.cluster.local", "SRV"]), vec!["0 100 7002 node-2.redis-1.cluster.local."]);
    let serial = dnsd.serial();
    register(&etcd, "redis-1", "node-4", "127.0.0.14", 7004).await;
    eventually("serial to increase on a registration", || dnsd.serial() > serial);
    // A literal member that is not a registered node gets a synthesized target.
    let topology = json!({"master": {"address": "127.0.0.50", "port": 7050}}).to_string();
    let (status, body) = put(&dnsd.url("/dns"), topology).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(dnsd.short(&["master.redis-1.cluster.local", "SRV"]), vec!["0 100 7050 addr-7f000032.redis-1.cluster.local."]);
    assert_eq!(dnsd.short(&["addr-7f000032.redis-1.cluster.local", "A"]), vec!["127.0.0.50"]);
    dnsd.assert_nodata(&["slaves.redis-1.cluster.local", "SRV"]);
}

/// No amplification: without EDNS a UDP answer fits in 512 bytes or is cut with TC
/// set; with EDNS the client's payload size is the limit; TCP carries it whole.
#[tokio::test]
async fn a_udp_answer_over_512_bytes_is_truncated_with_tc_and_whole_over_tcp() {
    let etcd = Etcd::start();
    let slaves: Vec<String> = (2..=31).map(|n| format!("node-{n}")).collect();
    for n in 1..=31u16 {
        register(&etcd, "redis-1", &format!("node-{n}"), &format!("127.0.1.{n}"), 7000 + n).await;
    }
    let dnsd = Dnsd::start(&etcd, &[]);
    let slave_refs: Vec<&str> = slaves.iter().map(String::as_str).collect();
    let (status, body) = put(&dnsd.url("/dns"), nodes_topology("node-1", &slave_refs)).await;
    assert_eq!(status, 200, "{body}");
    let name = "_redis._tcp.slaves.redis-1.cluster.local.";

    let plain = query(name, RecordType::SRV).to_vec().unwrap();
    let reply = dnsd.raw(&plain).expect("an answer");
    assert!(reply.len() <= 512, "{} bytes without EDNS", reply.len());
    let message = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert!(message.metadata.truncation, "TC set: {message:?}");
    assert_eq!((message.metadata.id, message.metadata.response_code), (4242, ResponseCode::NoError));

    let mut edns = query(name, RecordType::SRV);
    let mut opt = hickory_proto::op::Edns::new();
    opt.set_max_payload(4096);
    edns.edns = Some(opt);
    let reply = dnsd.raw(&edns.to_vec().unwrap()).expect("an answer");
    let message = hickory_proto::op::Message::from_vec(&reply).unwrap();
    assert!(reply.len() > 512 && !message.metadata.truncation, "{} bytes, {message:?}", reply.len());
    assert_eq!(message.answers.len(), 30);
    assert_eq!(message.edns.as_ref().map(|e| e.max_payload()), Some(4096), "our OPT echoes the payload size");

    // dig without EDNS retries over TCP on TC, and gets every record.
    assert_eq!(dnsd.short(&["+noedns", name, "SRV"]).len(), 30);
    assert_eq!(dnsd.short(&["+tcp", name, "SRV"]).len(), 30);
}

/// The answer's question is the client's, letter for letter (0x20 randomization).
#[tokio::test]
async fn the_answer_keeps_the_case_of_the_question() {
    let (_etcd, dnsd) = published().await;
    for name in ["MaStEr.ReDiS-1.cluster.LOCAL.", "nOpE.redis-1.Cluster.local.", "Example.COM."] {
        let ask = query(name, RecordType::SRV).to_vec().unwrap();
        let reply = dnsd.raw(&ask).expect("an answer");
        let question_end = ask.len();
        assert_eq!(reply[12..question_end], ask[12..question_end], "{name}");
        assert_eq!(reply[..2], ask[..2], "same id");
    }
    let reply = dnsd.ask(&query("MaStEr.ReDiS-1.cluster.LOCAL.", RecordType::SRV));
    let answers: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(answers, ["0 100 7001 node-1.redis-1.cluster.local."]);
}
