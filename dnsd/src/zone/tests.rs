use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::{RData, RecordType};
use topology::records::{NodeRecord, PublishedMember, PublishedTopology, Role};
use topology::Names;

use super::*;

fn config() -> ZoneConfig {
    ZoneConfig { names: Names::default(), ttl: 7, ns_address: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)) }
}

/// A healthy registration at `address:port`; the other tests of the crate use it too.
pub(crate) fn reg(address: &str, port: u16) -> NodeRecord {
    NodeRecord {
        address: address.into(),
        port,
        role: Role::Unknown,
        repl_offset: 0,
        run_id: String::new(),
        healthy: true,
        updated_ms: 0,
        upstream: None,
        fenced: false,
        upstream_down: false,
        host: None,
    }
}

fn member(host: &str, port: u16, node: Option<&str>) -> PublishedMember {
    PublishedMember { host: host.into(), port, node: node.map(String::from) }
}

/// redis-1: node-1 (master), node-2 (slave), a literal slave 10.0.0.9:6380 and an
/// IPv6 node-3; redis-2: registered but nothing published.
fn sample() -> Zone {
    let mut regs = Registrations::new();
    regs.insert(("redis-1".into(), "node-1".into()), reg("10.0.0.1", 7001));
    regs.insert(("redis-1".into(), "node-2".into()), reg("10.0.0.2", 7002));
    regs.insert(("redis-1".into(), "node-3".into()), reg("fd00::3", 7003));
    regs.insert(("redis-2".into(), "node-1".into()), reg("10.0.1.1", 6379));
    let mut published = Published::new();
    published.insert(
        "redis-1".into(),
        (
            PublishedTopology {
                master: member("10.0.0.1", 7001, Some("node-1")),
                slaves: vec![
                    member("10.0.0.2", 7002, Some("node-2")),
                    member("10.0.0.9", 6380, None),
                    member("fd00::3", 7003, Some("node-3")),
                ],
                topology_revision: None,
            },
            42,
        ),
    );
    Zone::build(&config(), &regs, &published, 43)
}

fn answer<'z>(zone: &'z Zone, name: &str, rtype: RecordType) -> &'z Answer {
    match zone.lookup_str(name, rtype) {
        Lookup::Answer(a) => a,
        other => panic!("{name} {rtype}: expected an answer, got {other:?}"),
    }
}

fn rdata(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| format!("{} {} {}", r.name, r.record_type(), r.data)).collect()
}

#[test]
fn master_srv_in_both_forms_with_glue() {
    let zone = sample();
    for name in ["master.redis-1.cluster.local", "_redis._tcp.master.redis-1.cluster.local."] {
        let a = answer(&zone, name, RecordType::SRV);
        let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
        assert_eq!(rdata(&a.answers), vec![format!("{fqdn} SRV 0 100 7001 node-1.redis-1.cluster.local.")]);
        assert_eq!(rdata(&a.additionals), vec!["node-1.redis-1.cluster.local. A 10.0.0.1"]);
        assert!(a.answers.iter().all(|r| r.ttl == 7));
    }
    let a = answer(&zone, "master.redis-1.cluster.local", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["master.redis-1.cluster.local. A 10.0.0.1"]);
    assert_eq!(zone.lookup_str("master.redis-1.cluster.local", RecordType::AAAA), Lookup::NoData);
}

#[test]
fn slaves_srv_one_per_slave_with_every_target_address() {
    let zone = sample();
    for name in ["slaves.redis-1.cluster.local", "_redis._tcp.slaves.redis-1.cluster.local"] {
        let a = answer(&zone, name, RecordType::SRV);
        let targets: Vec<String> = a
            .answers
            .iter()
            .map(|r| match &r.data {
                RData::SRV(srv) => format!("{} {} {} {}", srv.priority, srv.weight, srv.port, srv.target),
                other => panic!("not SRV: {other:?}"),
            })
            .collect();
        assert_eq!(
            targets,
            vec![
                "0 100 7002 node-2.redis-1.cluster.local.",
                "0 100 6380 addr-0a000009.redis-1.cluster.local.",
                "0 100 7003 node-3.redis-1.cluster.local.",
            ]
        );
        assert_eq!(
            rdata(&a.additionals),
            vec![
                "node-2.redis-1.cluster.local. A 10.0.0.2",
                "addr-0a000009.redis-1.cluster.local. A 10.0.0.9",
                "node-3.redis-1.cluster.local. AAAA fd00::3",
            ]
        );
    }
    // The synthesized target resolves.
    let a = answer(&zone, "addr-0a000009.redis-1.cluster.local", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["addr-0a000009.redis-1.cluster.local. A 10.0.0.9"]);
}

#[test]
fn node_names_have_address_and_srv() {
    let zone = sample();
    let a = answer(&zone, "NODE-2.redis-1.Cluster.Local.", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["node-2.redis-1.cluster.local. A 10.0.0.2"]);
    let a = answer(&zone, "node-2.redis-1.cluster.local", RecordType::SRV);
    assert_eq!(rdata(&a.answers), vec!["node-2.redis-1.cluster.local. SRV 0 100 7002 node-2.redis-1.cluster.local."]);
    assert_eq!(rdata(&a.additionals), vec!["node-2.redis-1.cluster.local. A 10.0.0.2"]);
    let a = answer(&zone, "node-3.redis-1.cluster.local", RecordType::AAAA);
    assert_eq!(rdata(&a.answers), vec!["node-3.redis-1.cluster.local. AAAA fd00::3"]);
    assert_eq!(zone.lookup_str("node-3.redis-1.cluster.local", RecordType::A), Lookup::NoData);
    // A cluster with registrations but nothing published: nodes only.
    answer(&zone, "node-1.redis-2.cluster.local", RecordType::A);
    assert_eq!(zone.lookup_str("master.redis-2.cluster.local", RecordType::SRV), Lookup::NxDomain);
    assert_eq!(zone.lookup_str("redis-2.cluster.local", RecordType::A), Lookup::NoData);
}

#[test]
fn version_txt_carries_the_revision() {
    let zone = sample();
    let a = answer(&zone, "version.redis-1.cluster.local", RecordType::TXT);
    assert_eq!(rdata(&a.answers), vec!["version.redis-1.cluster.local. TXT 42"]);
    assert_eq!(zone.lookup_str("version.redis-2.cluster.local", RecordType::TXT), Lookup::NxDomain);
}

#[test]
fn apex_has_soa_and_ns_with_glue() {
    let zone = sample();
    let a = answer(&zone, "cluster.local", RecordType::SOA);
    assert_eq!(
        rdata(&a.answers),
        vec!["cluster.local. SOA ns.cluster.local. hostmaster.cluster.local. 43 60 10 3600 7"]
    );
    assert_eq!(zone.serial(), 43);
    assert_eq!(zone.soa(), &a.answers[0]);
    let a = answer(&zone, "cluster.local", RecordType::NS);
    assert_eq!(rdata(&a.answers), vec!["cluster.local. NS ns.cluster.local."]);
    assert_eq!(rdata(&a.additionals), vec!["ns.cluster.local. A 127.0.0.1"]);
    answer(&zone, "ns.cluster.local", RecordType::A);
}

#[test]
fn unspecified_ns_address_is_not_served() {
    let mut config = config();
    config.ns_address = Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    let zone = Zone::build(&config, &Registrations::new(), &Published::new(), 1);
    assert!(answer(&zone, "cluster.local", RecordType::NS).additionals.is_empty());
    assert_eq!(zone.lookup_str("ns.cluster.local", RecordType::A), Lookup::NxDomain);
}

#[test]
fn existing_parents_are_nodata_unknown_names_nxdomain_others_refused() {
    let zone = sample();
    for name in ["redis-1.cluster.local", "_tcp.master.redis-1.cluster.local", "_redis._tcp.slaves.redis-1.cluster.local"] {
        assert_eq!(zone.lookup_str(name, RecordType::A), Lookup::NoData, "{name}");
    }
    for name in [
        "node-9.redis-1.cluster.local",
        "redis-3.cluster.local",
        "master.redis-3.cluster.local",
        "x.node-1.redis-1.cluster.local",
        "_x._tcp.master.redis-1.cluster.local",
        "a.b.c.cluster.local",
    ] {
        assert_eq!(zone.lookup_str(name, RecordType::SRV), Lookup::NxDomain, "{name}");
    }
    for name in ["example.com", "local", "xcluster.local", "."] {
        assert_eq!(zone.lookup_str(name, RecordType::A), Lookup::Refused, "{name}");
    }
}

#[test]
fn any_returns_every_record_of_the_name() {
    let zone = sample();
    let a = answer(&zone, "master.redis-1.cluster.local", RecordType::ANY);
    let mut types: Vec<RecordType> = a.answers.iter().map(Record::record_type).collect();
    types.sort();
    assert_eq!(types, vec![RecordType::A, RecordType::SRV]);
}

/// Before the first etcd listing dnsd knows nothing: REFUSED (a resolver asks
/// another nameserver and caches nothing) for every name of the domain, the apex
/// included, never NXDOMAIN; other domains are refused as always. The fast path
/// leaves those to hickory's.
#[test]
fn a_zone_before_the_first_listing_is_not_loaded_rather_than_empty() {
    let zone = Zone::build(&config(), &Registrations::new(), &Published::new(), 0).before_first_listing();
    assert!(!zone.loaded());
    for (name, rtype) in [("master.redis-1.cluster.local", RecordType::SRV), ("cluster.local", RecordType::SOA)] {
        assert_eq!(zone.lookup_str(name, rtype), Lookup::NotLoaded, "{name}");
        let key = wire::wire_name(&Name::from_ascii(format!("{name}.")).unwrap());
        assert!(zone.wire_lookup(&key, rtype, false).is_none(), "{name}: the fast path must decline");
    }
    assert_eq!(zone.lookup_str("example.com", RecordType::A), Lookup::Refused);
    assert!(sample().loaded());
}

#[test]
fn empty_zone_serves_only_the_apex() {
    let zone = Zone::build(&config(), &Registrations::new(), &Published::new(), 0);
    answer(&zone, "cluster.local", RecordType::SOA);
    assert_eq!(zone.lookup_str("master.redis-1.cluster.local", RecordType::SRV), Lookup::NxDomain);
    assert_eq!(zone.lookup_str("cluster.local", RecordType::A), Lookup::NoData);
}

#[test]
fn unregistered_published_node_resolves_from_the_published_host() {
    let mut published = Published::new();
    published.insert(
        "c".into(),
        (PublishedTopology { master: member("10.0.0.5", 6379, Some("node-5")), slaves: vec![], topology_revision: None }, 3),
    );
    let zone = Zone::build(&config(), &Registrations::new(), &published, 3);
    let a = answer(&zone, "master.c.cluster.local", RecordType::SRV);
    assert_eq!(rdata(&a.additionals), vec!["node-5.c.cluster.local. A 10.0.0.5"]);
    answer(&zone, "node-5.c.cluster.local", RecordType::A);
    // Empty slaves: the names exist, without records.
    assert_eq!(zone.lookup_str("slaves.c.cluster.local", RecordType::SRV), Lookup::NoData);
}

#[test]
fn registration_overrides_the_published_host() {
    let mut regs = Registrations::new();
    regs.insert(("c".into(), "node-5".into()), reg("10.0.0.55", 6379));
    let mut published = Published::new();
    published.insert(
        "c".into(),
        (PublishedTopology { master: member("10.0.0.5", 6379, Some("node-5")), slaves: vec![], topology_revision: None }, 3),
    );
    let zone = Zone::build(&config(), &regs, &published, 3);
    let a = answer(&zone, "master.c.cluster.local", RecordType::SRV);
    assert_eq!(rdata(&a.additionals), vec!["node-5.c.cluster.local. A 10.0.0.55"]);
    let a = answer(&zone, "master.c.cluster.local", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["master.c.cluster.local. A 10.0.0.55"]);
}

#[test]
fn host_names_become_srv_targets_without_glue() {
    let mut regs = Registrations::new();
    regs.insert(("c".into(), "node-1".into()), reg("redis.example.com", 6379));
    let mut published = Published::new();
    published.insert(
        "c".into(),
        (PublishedTopology { master: member("redis.example.com", 6379, Some("node-1")), slaves: vec![], topology_revision: None }, 3),
    );
    regs.insert(("c".into(), "node-2".into()), reg("not a host!", 6379));
    let zone = Zone::build(&config(), &regs, &published, 3);
    let a = answer(&zone, "master.c.cluster.local", RecordType::SRV);
    assert_eq!(rdata(&a.answers), vec!["master.c.cluster.local. SRV 0 100 6379 redis.example.com."]);
    assert!(a.additionals.is_empty());
    assert_eq!(zone.lookup_str("master.c.cluster.local", RecordType::A), Lookup::NoData);
    assert_eq!(zone.lookup_str("node-1.c.cluster.local", RecordType::A), Lookup::NoData);
    answer(&zone, "node-1.c.cluster.local", RecordType::SRV);
    assert_eq!(zone.warnings(), ["\"not a host!\" is neither an IP address nor a host name; not served"]);
    assert_eq!(zone.lookup_str("node-2.c.cluster.local", RecordType::A), Lookup::NoData);
}

#[test]
fn a_mistyped_ip_is_no_host_name_even_though_dns_would_take_it() {
    // "10.0.0.256" is a valid DNS name syntactically; topology's rule refuses it.
    let mut regs = Registrations::new();
    regs.insert(("c".into(), "node-1".into()), reg("10.0.0.256", 6379));
    let mut published = Published::new();
    published.insert("c".into(), (PublishedTopology { master: member("10.0.0.256", 6379, Some("node-1")), slaves: vec![], topology_revision: None }, 3));
    let zone = Zone::build(&config(), &regs, &published, 3);
    let a = answer(&zone, "master.c.cluster.local", RecordType::SRV);
    assert_eq!(rdata(&a.answers), vec!["master.c.cluster.local. SRV 0 100 6379 node-1.c.cluster.local."], "not served as a host name");
    assert_eq!(zone.lookup_str("node-1.c.cluster.local", RecordType::A), Lookup::NoData);
    assert!(zone.warnings().iter().all(|w| w.contains("10.0.0.256")) && !zone.warnings().is_empty(), "{:?}", zone.warnings());
}

#[test]
fn any_gathers_every_type_of_a_name_with_each_glue_record_once() {
    let zone = sample();
    let any = answer(&zone, "node-1.redis-1.cluster.local", RecordType::ANY);
    let srv = answer(&zone, "node-1.redis-1.cluster.local", RecordType::SRV);
    let a = answer(&zone, "node-1.redis-1.cluster.local", RecordType::A);
    let mut want = rdata(&a.answers);
    want.extend(rdata(&srv.answers));
    let mut got = rdata(&any.answers);
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // The SRV's glue is the node's own A record: present, and only once.
    assert_eq!(rdata(&any.additionals), rdata(&srv.additionals));
    assert_eq!(rdata(&any.additionals), vec!["node-1.redis-1.cluster.local. A 10.0.0.1"]);
}

#[test]
fn an_empty_zone_holds_the_apex_and_its_nameserver_only() {
    let empty = Zone::build(&config(), &Registrations::new(), &Published::new(), 1);
    assert_eq!(empty.name_count(), 2, "the apex and ns.<domain>");
    assert!(empty.warnings().is_empty());
    assert!(sample().name_count() > empty.name_count());
}

#[test]
fn other_domains_work_too() {
    let mut config = config();
    config.names = Names::new("Redis.Example.ORG.").unwrap();
    let mut published = Published::new();
    published.insert("c".into(), (PublishedTopology { master: member("10.0.0.5", 6379, None), slaves: vec![], topology_revision: None }, 3));
    let zone = Zone::build(&config, &Registrations::new(), &published, 3);
    let a = answer(&zone, "_redis._tcp.master.c.redis.example.org", RecordType::SRV);
    assert_eq!(rdata(&a.additionals), vec!["addr-0a000005.c.redis.example.org. A 10.0.0.5"]);
    assert_eq!(zone.lookup_str("master.c.cluster.local", RecordType::SRV), Lookup::Refused);
}

#[test]
fn synthesized_labels() {
    assert_eq!(synthesized_label("10.0.0.3".parse().unwrap()), "addr-0a000003");
    assert_eq!(synthesized_label("::1".parse().unwrap()), format!("addr-{}01", "0".repeat(30)));
}

/// redis-1 with master node-1 and slaves node-2, node-3 and the literal 10.0.0.9,
/// node-2's registration as given.
fn with_node_2(node_2: Option<NodeRecord>) -> Zone {
    let mut regs = Registrations::new();
    regs.insert(("redis-1".into(), "node-1".into()), reg("10.0.0.1", 7001));
    if let Some(r) = node_2 {
        regs.insert(("redis-1".into(), "node-2".into()), r);
    }
    regs.insert(("redis-1".into(), "node-3".into()), reg("10.0.0.3", 7003));
    let topology = PublishedTopology {
        master: member("10.0.0.1", 7001, Some("node-1")),
        slaves: vec![
            member("10.0.0.2", 7002, Some("node-2")),
            member("10.0.0.3", 7003, Some("node-3")),
            member("10.0.0.9", 6380, None),
        ],
        topology_revision: None,
    };
    Zone::build(&config(), &regs, &Published::from([("redis-1".into(), (topology, 5))]), 6)
}

fn slave_targets(zone: &Zone) -> Vec<String> {
    let a = answer(zone, "_redis._tcp.slaves.redis-1.cluster.local", RecordType::SRV);
    let mut targets: Vec<String> = a.answers.iter().map(|r| r.data.to_string()).collect();
    targets.sort();
    targets
}

#[test]
fn an_unhealthy_slave_leaves_the_read_pool_and_keeps_its_node_record() {
    let mut sick = reg("10.0.0.2", 7002);
    sick.healthy = false;
    let zone = with_node_2(Some(sick));
    assert_eq!(
        slave_targets(&zone),
        vec!["0 100 6380 addr-0a000009.redis-1.cluster.local.", "0 100 7003 node-3.redis-1.cluster.local."]
    );
    let a = answer(&zone, "node-2.redis-1.cluster.local", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["node-2.redis-1.cluster.local. A 10.0.0.2"]);
}

#[test]
fn a_deregistered_slave_leaves_the_read_pool_and_keeps_its_node_record() {
    let zone = with_node_2(None);
    assert_eq!(
        slave_targets(&zone),
        vec!["0 100 6380 addr-0a000009.redis-1.cluster.local.", "0 100 7003 node-3.redis-1.cluster.local."]
    );
    let a = answer(&zone, "node-2.redis-1.cluster.local", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["node-2.redis-1.cluster.local. A 10.0.0.2"], "from the published host");
}

#[test]
fn a_slave_registered_as_a_master_leaves_the_read_pool_and_keeps_its_node_record() {
    let mut rogue = reg("10.0.0.2", 7002);
    rogue.role = Role::Master;
    let zone = with_node_2(Some(rogue));
    assert_eq!(
        slave_targets(&zone),
        vec!["0 100 6380 addr-0a000009.redis-1.cluster.local.", "0 100 7003 node-3.redis-1.cluster.local."]
    );
    let a = answer(&zone, "node-2.redis-1.cluster.local", RecordType::A);
    assert_eq!(rdata(&a.answers), vec!["node-2.redis-1.cluster.local. A 10.0.0.2"]);
    let mut slave = reg("10.0.0.2", 7002);
    slave.role = Role::Slave;
    assert_eq!(slave_targets(&with_node_2(Some(slave))).len(), 3, "a registered slave is in it");
}

#[test]
fn a_healthy_slave_is_in_the_read_pool() {
    let zone = with_node_2(Some(reg("10.0.0.2", 7002)));
    assert_eq!(
        slave_targets(&zone),
        vec![
            "0 100 6380 addr-0a000009.redis-1.cluster.local.",
            "0 100 7002 node-2.redis-1.cluster.local.",
            "0 100 7003 node-3.redis-1.cluster.local."
        ]
    );
}

#[test]
fn a_pool_with_no_live_slave_is_nodata() {
    let mut regs = Registrations::new();
    regs.insert(("redis-1".into(), "node-1".into()), reg("10.0.0.1", 7001));
    let topology = PublishedTopology {
        master: member("10.0.0.1", 7001, Some("node-1")),
        slaves: vec![member("10.0.0.2", 7002, Some("node-2"))],
        topology_revision: None,
    };
    let zone = Zone::build(&config(), &regs, &Published::from([("redis-1".into(), (topology, 5))]), 6);
    assert_eq!(zone.lookup_str("slaves.redis-1.cluster.local", RecordType::SRV), Lookup::NoData);
    assert!(matches!(zone.lookup_str("master.redis-1.cluster.local", RecordType::SRV), Lookup::Answer(_)));
}
