//! The fast path against hickory's path, byte for byte, for every name and type of a
//! zone; truncation; and random bytes through the whole UDP answer.
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_server::net::xfer::Protocol;
use proptest::prelude::*;
use topology::records::{PublishedMember, PublishedTopology};
use topology::Names;

use super::*;
use crate::authority::{answer_slow, answer_udp, Handler};
use crate::live::Live;
use crate::zone::tests::reg;
use crate::zone::{Published, Registrations, ZoneConfig};

const SRC: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

fn member(host: &str, port: u16, node: Option<&str>) -> PublishedMember {
    PublishedMember { host: host.into(), port, node: node.map(String::from) }
}

/// redis-1: a master, a slave, an IPv6 slave, a literal slave, a slave on a host
/// name; `big`: a master and 30 slaves (its slaves SRV answer is over 1232 bytes).
fn live() -> (Arc<Live>, Handler) {
    let config = ZoneConfig {
        names: Names::default(),
        ttl: 1,
        ns_address: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
    };
    let mut regs = Registrations::new();
    regs.insert(("redis-1".into(), "node-1".into()), reg("10.0.0.1", 7001));
    regs.insert(("redis-1".into(), "node-2".into()), reg("10.0.0.2", 7002));
    regs.insert(("redis-1".into(), "node-3".into()), reg("fd00::3", 7003));
    regs.insert(("redis-1".into(), "node-4".into()), reg("redis.example.com", 7004));
    let mut published = Published::new();
    published.insert(
        "redis-1".into(),
        (
            PublishedTopology {
                master: member("10.0.0.1", 7001, Some("node-1")),
                slaves: vec![
                    member("10.0.0.2", 7002, Some("node-2")),
                    member("fd00::3", 7003, Some("node-3")),
                    member("10.0.0.9", 6380, None),
                    member("redis.example.com", 7004, Some("node-4")),
                ],
                topology_revision: None,
            },
            42,
        ),
    );
    let mut slaves = Vec::new();
    for i in 1..=30u16 {
        let node = format!("node-{i}");
        regs.insert(("big".into(), node.clone()), reg(&format!("10.1.0.{i}"), 7000 + i));
        slaves.push(member(&format!("10.1.0.{i}"), 7000 + i, Some(&node)));
    }
    regs.insert(("big".into(), "node-0".into()), reg("10.1.0.100", 7000));
    published.insert(
        "big".into(),
        (PublishedTopology { master: member("10.1.0.100", 7000, Some("node-0")), slaves, topology_revision: None }, 43),
    );
    let live = Arc::new(Live::new(config.clone()));
    live.zone_swap().store(Arc::new(Zone::build(&config, &regs, &published, 44)));
    let handler = Handler::new(live.clone());
    (live, handler)
}

/// An OPT record: payload, extended rcode, version, flags.
type Opt = (u16, u8, u8, u16);

fn query(id: u16, flags: [u8; 2], name: &[u8], qtype: u16, qclass: u16, opt: Option<Opt>) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&flags);
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    q.extend_from_slice(name);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    if let Some((payload, rcode, version, flags)) = opt {
        q.extend_from_slice(&[0, 0, 41]);
        q.extend_from_slice(&payload.to_be_bytes());
        q.extend_from_slice(&[rcode, version]);
        q.extend_from_slice(&flags.to_be_bytes());
        q.extend_from_slice(&[0, 0]);
    }
    q
}

/// `name` (wire format) with its letters changed: 0 as is, 1 upper case, 2 mixed.
fn recase(name: &[u8], mode: usize) -> Vec<u8> {
    let mut out = name.to_vec();
    let mut at = 0;
    while at < out.len() && out[at] != 0 {
        let len = usize::from(out[at]);
        for (i, byte) in out[at + 1..at + 1 + len].iter_mut().enumerate() {
            match mode {
                1 => byte.make_ascii_uppercase(),
                2 if i % 2 == 0 => byte.make_ascii_uppercase(),
                _ => {}
            }
        }
        at += 1 + len;
    }
    out
}

fn wire(text: &str) -> Vec<u8> {
    let mut name = hickory_proto::rr::Name::from_ascii(text).unwrap();
    name.set_fqdn(true);
    let mut out = Vec::new();
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

fn truncated(reply: &[u8]) -> bool {
    reply[2] & 0x02 != 0
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
}

const TYPES: [u16; 14] = [1, 28, 33, 16, 6, 2, 255, 15, 5, 0, 41, 65535, 251, 252];
const OPTS: [Option<Opt>; 8] = [
    None,
    Some((0, 0, 0, 0)),
    Some((512, 0, 0, 0)),
    Some((1232, 0, 0, 0x8000)),
    Some((4096, 0, 0, 0)),
    Some((65535, 3, 0, 0x7fff)),
    Some((1400, 0, 1, 0)),
    Some((1232, 0, 255, 0x8000)),
];
const FLAGS: [[u8; 2]; 5] = [[0x01, 0x00], [0x00, 0x00], [0x00, 0x10], [0x03, 0x20], [0x05, 0x70]];

/// Every name of the zone, names that do not exist in it (one close to the longest
/// a name can be), its parents, and names outside it.
fn names(zone: &Zone) -> Vec<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = zone.wire_names().map(|(n, _)| n.to_vec()).collect();
    names.sort();
    for text in ["nope.redis-1.cluster.local", "master.redis-9.cluster.local", "x.node-1.redis-1.cluster.local",
        "example.com", "local", ".", "cluster.local.example.com", "xcluster.local"]
    {
        names.push(wire(text));
    }
    let label = "a".repeat(63);
    names.push(wire(&format!("{label}.{label}.{label}.{}.cluster.local", "b".repeat(47))));
    names
}

#[test]
fn the_fast_path_sends_what_hickory_sends_for_every_name_type_case_and_edns() {
    let (live, handler) = live();
    let zone = live.zone();
    let (mut key, mut out) = (Vec::new(), Vec::new());
    let (mut fast, mut total) = (0usize, 0usize);
    // Twice: the second round answers from what the first encoded, with other
    // cases, IDs and flags.
    for round in 0..2usize {
        for (n, name) in names(&zone).iter().enumerate() {
            for (t, qtype) in TYPES.iter().enumerate() {
                for (o, opt) in OPTS.iter().enumerate() {
                    let i = round + n + t + o;
                    let qclass = match i % 7 {
                        3 => 3,
                        5 => 255,
                        _ => 1,
                    };
                    let id = (i * 7919) as u16;
                    let q = query(id, FLAGS[i % FLAGS.len()], &recase(name, i % 3), *qtype, qclass, *opt);
                    let slow = block_on(answer_slow(&handler, &q, SRC, Protocol::Udp)).expect("hickory answers");
                    total += 1;
                    match answer(&zone, &q, &mut key, &mut out) {
                        Some(answered) => {
                            fast += 1;
                            assert_eq!(out, slow, "query {q:?}");
                            assert_eq!(answered.code, Message::from_vec(&slow).unwrap().metadata.response_code);
                        }
                        None => {
                            let version = opt.map_or(0, |o| o.2);
                            assert!(version > 0 || truncated(&slow), "the fast path declined {q:?}: {slow:?}");
                        }
                    }
                }
            }
        }
    }
    assert!(fast * 10 > total * 7, "{fast} of {total} on the fast path");
}

#[test]
fn queries_the_fast_path_does_not_understand_go_to_hickory() {
    let (live, _) = live();
    let zone = live.zone();
    let (mut key, mut out) = (Vec::new(), Vec::new());
    let name = wire("master.redis-1.cluster.local");
    let good = query(1, [1, 0], &name, 33, 1, None);
    assert!(answer(&zone, &good, &mut key, &mut out).is_some());
    let mut declined = Vec::new();
    let mut response = good.clone();
    response[2] |= 0x80;
    declined.push(response);
    let mut notify = good.clone();
    notify[2] |= 4 << 3;
    declined.push(notify);
    let mut two = good.clone();
    two[5] = 2;
    declined.push(two);
    let mut trailing = good.clone();
    trailing.push(0);
    declined.push(trailing);
    let mut with_answer = good.clone();
    with_answer[7] = 1;
    declined.push(with_answer);
    // A compressed question name, an OPT with an option, an OPT under another name.
    let mut compressed = good[..12].to_vec();
    compressed.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1]);
    declined.push(compressed);
    let mut cookie = query(1, [1, 0], &name, 33, 1, Some((1232, 0, 0, 0)));
    let len = cookie.len();
    cookie[len - 1] = 12;
    cookie.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    declined.push(cookie);
    let mut named_opt = query(1, [1, 0], &name, 33, 1, None);
    named_opt[11] = 1;
    named_opt.extend_from_slice(&[1, b'a', 0, 0, 41, 4, 0, 0, 0, 0, 0, 0, 0]);
    declined.push(named_opt);
    declined.push(good[..good.len() - 1].to_vec());
    declined.push(good[..11].to_vec());
    for q in declined {
        assert_eq!(answer(&zone, &q, &mut key, &mut out), None, "{q:?}");
    }
}

#[test]
fn an_answer_over_512_bytes_without_edns_is_truncated_with_tc() {
    let (live, handler) = live();
    let zone = live.zone();
    let (mut key, mut out) = (Vec::new(), Vec::new());
    for name in ["slaves.big.cluster.local", "_redis._tcp.slaves.big.cluster.local"] {
        let name = wire(name);
        let plain = query(7, [1, 0], &name, 33, 1, None);
        assert!(answer_udp(&zone, &handler, &plain, SRC, &mut key, &mut out));
        assert!(out.len() <= 512 && truncated(&out), "{} bytes", out.len());
        let reply = Message::from_vec(&out).unwrap();
        assert_eq!((reply.metadata.id, reply.metadata.response_code), (7, ResponseCode::NoError));
        // The client's payload size is honored, TC set where the answer exceeds it.
        let edns = query(8, [1, 0], &name, 33, 1, Some((1232, 0, 0, 0)));
        assert!(answer_udp(&zone, &handler, &edns, SRC, &mut key, &mut out));
        assert!(out.len() <= 1232 && truncated(&out), "{} bytes", out.len());
        let large = query(9, [1, 0], &name, 33, 1, Some((4096, 0, 0, 0)));
        assert!(answer_udp(&zone, &handler, &large, SRC, &mut key, &mut out));
        assert!(out.len() > 1232 && !truncated(&out), "{} bytes", out.len());
        assert_eq!(Message::from_vec(&out).unwrap().answers.len(), 30);
        // Over TCP nothing is cut.
        let tcp = block_on(answer_slow(&handler, &plain, SRC, Protocol::Tcp)).unwrap();
        assert!(!truncated(&tcp) && tcp.len() > 1232);
    }
}

#[test]
fn names_are_in_the_zone_at_label_boundaries_only() {
    let apex = wire("cluster.local");
    assert!(in_zone(&apex, &apex));
    assert!(in_zone(&wire("a.b.cluster.local"), &apex));
    assert!(!in_zone(&wire("xcluster.local"), &apex));
    assert!(!in_zone(&wire("local"), &apex));
    assert!(!in_zone(&[0], &apex));
}

/// What the UDP loop sends for `packet`, if anything.
fn udp_reply(live: &Live, handler: &Handler, packet: &[u8]) -> Option<Vec<u8>> {
    let zone = live.zone();
    let (mut key, mut out) = (Vec::new(), Vec::new());
    answer_udp(&zone, handler, packet, SRC, &mut key, &mut out).then_some(out)
}

/// Every answer is well formed, has the query's ID, takes no more than the client
/// allows, and is FORMERR when the query did not decode.
fn check_reply(packet: &[u8], reply: Option<Vec<u8>>) -> Result<(), TestCaseError> {
    let Some(reply) = reply else { return Ok(()) };
    prop_assert!(packet.len() >= 12, "an answer to {} bytes", packet.len());
    let message = Message::from_vec(&reply);
    prop_assert!(message.is_ok(), "malformed answer {reply:?} to {packet:?}");
    let message = message.unwrap();
    prop_assert_eq!(&reply[..2], &packet[..2]);
    prop_assert_eq!(message.metadata.message_type, hickory_proto::op::MessageType::Response);
    match Message::from_vec(packet) {
        Ok(query) => {
            let limit = query.edns.as_ref().map_or(512, |e| usize::from(e.max_payload().max(512)));
            prop_assert!(reply.len() <= limit, "{} bytes for a client taking {limit}", reply.len());
        }
        Err(_) => {
            prop_assert_eq!(message.metadata.response_code, ResponseCode::FormErr);
            prop_assert!(reply.len() <= 512);
        }
    }
    Ok(())
}

/// Valid queries to mutate.
fn valid_queries() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, qtype) in [("slaves.big.cluster.local", 33), ("master.redis-1.cluster.local", 1), ("node-3.redis-1.cluster.local", 28),
        ("nope.cluster.local", 33), ("example.com", 1)]
    {
        out.push(query(0x1234, [1, 0], &wire(name), qtype, 1, None));
        out.push(query(0x4321, [1, 0], &wire(name), qtype, 1, Some((1232, 0, 0, 0x8000))));
    }
    out
}

/// One zone for every case (building one per case would be most of the run).
static SHARED: std::sync::LazyLock<(Arc<Live>, Handler)> = std::sync::LazyLock::new(live);

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_get_no_answer_or_a_well_formed_one(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (live, handler) = &*SHARED;
        let reply = udp_reply(live, handler, &packet);
        check_reply(&packet, reply)?;
    }

    #[test]
    fn mutated_queries_get_no_answer_or_a_well_formed_one(
        which in 0usize..10,
        mutations in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        keep_all in any::<bool>(),
    ) {
        let (live, handler) = &*SHARED;
        let mut packet = valid_queries()[which].clone();
        for (at, byte) in mutations {
            let at = at.index(packet.len());
            packet[at] = byte;
        }
        if !keep_all {
            packet.truncate(1 + cut.index(packet.len()));
        }
        let reply = udp_reply(live, handler, &packet);
        check_reply(&packet, reply)?;
    }
}
