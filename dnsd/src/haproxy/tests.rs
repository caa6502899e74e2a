use std::net::SocketAddr;

use topology::records::{NodeRecord, PublishedMember, PublishedTopology, Role};

use super::plan::{parse_servers_state, plan_read, plan_write, Command, Slot};
use super::*;
use crate::state::Change;

const HEADER: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn slot(name: &str, address: Option<&str>, op_state: u32, admin_state: u32) -> Slot {
    Slot { name: name.into(), address: address.map(addr), op_state, admin_state }
}

fn up(name: &str, address: &str) -> Slot {
    slot(name, Some(address), 2, 0x40)
}

fn names(commands: &[Command]) -> Vec<String> {
    commands.iter().map(ToString::to_string).collect()
}

#[test]
fn servers_state_is_parsed_for_the_template_slots_of_one_backend() {
    let text = format!(
        "{HEADER}3 redis_master 1 master1 10.0.0.1 2 64 1 1 5 6 3 4 6 0 0 0 node-1.redis-1.cluster.local 6379 _redis._tcp.master.redis-1.cluster.local 0 0 - - 0\n\
         3 redis_master 2 other 10.0.0.9 2 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n\
         3 redis_master 3 master10 - 0 32 1 1 0 1 0 0 14 0 0 0 - 0 _redis._tcp.master.redis-1.cluster.local 0 0 - - 0\n\
         4 redis_slaves 1 master2 10.0.0.2 2 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n\n"
    );
    let slots = parse_servers_state(&text, "redis_master", "master").expect("parsed");
    assert_eq!(slots, vec![up("master1", "10.0.0.1:6379"), slot("master10", None, 0, 32)]);
}

#[test]
fn servers_state_that_is_not_the_table_is_an_error() {
    assert!(parse_servers_state("Can't find backend.\n\n", "b", "s").is_err(), "unknown backend");
    assert!(parse_servers_state("2\n", "b", "s").is_err(), "another format version");
    assert!(parse_servers_state("", "b", "s").is_err(), "nothing");
    let short = format!("{HEADER}3 b 1 s1 10.0.0.1 2 0\n");
    assert!(parse_servers_state(&short, "b", "s").is_err(), "truncated line");
    let bad_address = format!("{HEADER}3 b 1 s1 not-an-ip 2 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n");
    assert!(parse_servers_state(&bad_address, "b", "s").is_err());
    let bad_port = format!("{HEADER}3 b 1 s1 10.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 99999 - 0 0 - - 0\n");
    assert!(parse_servers_state(&bad_port, "b", "s").is_err());
    let bad_state = format!("{HEADER}3 b 1 s1 10.0.0.1 x 0 1 1 5 6 3 4 6 0 0 0 - 6379 - 0 0 - - 0\n");
    assert!(parse_servers_state(&bad_state, "b", "s").is_err());
}

#[test]
fn a_moved_master_is_fenced_off_shut_then_pointed_at_and_readied() {
    let slots = [up("master1", "10.0.0.1:6379")];
    assert_eq!(
        names(&plan_write("w", &slots, Some(addr("10.0.0.2:6380")), None)),
        [
            "set server w/master1 state maint",
            "shutdown sessions server w/master1",
            "set server w/master1 addr 10.0.0.2 port 6380",
            "set server w/master1 health up",
            "set server w/master1 state ready",
        ]
    );
}

#[test]
fn a_master_already_in_place_needs_nothing_or_only_to_be_readied() {
    let master = Some(addr("10.0.0.1:6379"));
    assert!(plan_write("w", &[up("master1", "10.0.0.1:6379")], master, None).is_empty());
    assert!(plan_write("w", &[slot("master1", Some("10.0.0.1:6379"), 0, 0)], master, None).is_empty(), "down: checks decide");
    for maint in [0x01, 0x20] {
        assert_eq!(
            names(&plan_write("w", &[slot("master1", Some("10.0.0.1:6379"), 0, maint)], master, None)),
            ["set server w/master1 state ready"]
        );
    }
}

#[test]
fn a_move_under_way_takes_the_old_master_out_of_service_until_it_is_published() {
    let (old, new) = (Some(addr("10.0.0.1:6379")), Some(addr("10.0.0.2:6379")));
    let serving = [up("master1", "10.0.0.1:6379")];
    assert_eq!(names(&plan_write("w", &serving, old, new)), ["set server w/master1 state maint"]);
    let held = [slot("master1", Some("10.0.0.1:6379"), 2, 1)];
    assert!(plan_write("w", &held, old, new).is_empty(), "already held");
    assert!(plan_write("w", &[slot("master1", Some("10.0.0.1:6379"), 0, 0x21)], None, new).is_empty());
    // Resolution maintenance alone comes and goes with DNS: the hold forces its own.
    assert_eq!(
        names(&plan_write("w", &[slot("master1", Some("10.0.0.1:6379"), 0, 0x20)], old, new)),
        ["set server w/master1 state maint"]
    );
    assert_eq!(names(&plan_write("w", &[up("master1", "10.0.0.1:6379")], None, new)), ["set server w/master1 state maint"]);
    // Published: the ordinary switch, less the maint the hold already did.
    assert_eq!(plan_write("w", &held, new, new), plan_write("w", &serving, new, None)[1..]);
    // A lapsed hold (None) on the old master readies it again.
    assert_eq!(names(&plan_write("w", &held, old, None)), ["set server w/master1 state ready"]);
}

#[test]
fn nothing_is_pushed_without_an_address_or_a_slot() {
    assert!(plan_write("w", &[up("master1", "10.0.0.1:6379")], None, None).is_empty());
    assert!(plan_write("w", &[], Some(addr("10.0.0.1:6379")), None).is_empty());
}

#[test]
fn a_slot_that_never_resolved_is_left_to_dns() {
    // HAProxy would refuse the address (no family yet).
    assert!(plan_write("w", &[slot("master1", None, 0, 32)], Some(addr("10.0.0.2:6379")), None).is_empty());
    // A hold still takes it out of service.
    assert_eq!(
        names(&plan_write("w", &[slot("master1", None, 0, 32)], None, Some(addr("10.0.0.2:6379")))),
        ["set server w/master1 state maint"]
    );
}

#[test]
fn the_read_pool_in_place_needs_nothing() {
    let slots = [up("slave1", "10.0.0.2:6379"), up("slave2", "10.0.0.3:6379"), slot("slave3", None, 0, 32)];
    assert!(plan_read("r", &slots, &[addr("10.0.0.3:6379"), addr("10.0.0.2:6379")]).is_empty());
}

#[test]
fn a_leaving_slave_stops_taking_sessions() {
    let slots = [up("slave1", "10.0.0.2:6379"), up("slave2", "10.0.0.3:6379")];
    assert_eq!(
        names(&plan_read("r", &slots, &[addr("10.0.0.3:6379")])),
        ["set server r/slave1 state maint", "shutdown sessions server r/slave1"]
    );
    let already_out = [slot("slave1", Some("10.0.0.2:6379"), 2, 1), up("slave2", "10.0.0.3:6379")];
    assert!(plan_read("r", &already_out, &[addr("10.0.0.3:6379")]).is_empty());
}

#[test]
fn a_joining_slave_takes_a_free_slot_that_has_an_address_family() {
    let slots = [up("slave1", "10.0.0.2:6379"), slot("slave2", None, 0, 32), slot("slave3", Some("10.0.0.9:6379"), 0, 1)];
    assert_eq!(
        names(&plan_read("r", &slots, &[addr("10.0.0.2:6379"), addr("10.0.0.4:6379")])),
        [
            "set server r/slave3 addr 10.0.0.4 port 6379",
            "set server r/slave3 health up",
            "set server r/slave3 state ready",
        ]
    );
}

#[test]
fn a_slave_back_at_a_held_slot_is_readied_in_place() {
    let slots = [slot("slave1", Some("10.0.0.2:6379"), 2, 1), up("slave2", "10.0.0.3:6379")];
    assert_eq!(
        names(&plan_read("r", &slots, &[addr("10.0.0.2:6379"), addr("10.0.0.3:6379")])),
        ["set server r/slave1 state ready"]
    );
}

#[test]
fn a_slave_replacing_another_reuses_its_slot_after_shutting_it() {
    let slots = [up("slave1", "10.0.0.2:6379")];
    assert_eq!(
        names(&plan_read("r", &slots, &[addr("10.0.0.5:6379")])),
        [
            "set server r/slave1 state maint",
            "shutdown sessions server r/slave1",
            "set server r/slave1 addr 10.0.0.5 port 6379",
            "set server r/slave1 health up",
            "set server r/slave1 state ready",
        ]
    );
}

#[test]
fn a_duplicate_slot_is_taken_out_and_more_slaves_than_slots_are_left_out() {
    let slots = [up("slave1", "10.0.0.2:6379"), up("slave2", "10.0.0.2:6379")];
    assert_eq!(
        names(&plan_read("r", &slots, &[addr("10.0.0.2:6379")])),
        ["set server r/slave2 state maint", "shutdown sessions server r/slave2"]
    );
    let commands = plan_read("r", &[up("slave1", "10.0.0.2:6379")], &[addr("10.0.0.2:6379"), addr("10.0.0.3:6379")]);
    assert!(commands.is_empty(), "no slot left for the second slave: {commands:?}");
}

#[test]
fn success_answers_are_told_from_refusals() {
    let addr_cmd = Command::Addr { backend: "w".into(), server: "master1".into(), address: addr("10.0.0.2:6379") };
    assert!(addr_cmd.accepts("IP changed from '10.0.0.1' to '10.0.0.2', port changed from '6380' to '6379' by 'stats socket command'\n\n"));
    assert!(addr_cmd.accepts("no need to change the addr, port changed from '6380' to '6379' by 'stats socket command'\n"));
    assert!(!addr_cmd.accepts("No such server.\n\n"));
    assert!(!addr_cmd.accepts("Update for the current server address family is only supported through configuration file by 'stats socket command'\n"));
    assert!(!addr_cmd.accepts(""), "an empty answer to addr is not a change");
    let ready = Command::Ready { backend: "w".into(), server: "master1".into() };
    assert!(ready.accepts("\n"));
    assert!(!ready.accepts("No such backend.\n\n"));
    assert!(!ready.accepts("Permission denied\n"));
}

fn node(address: &str, port: u16, healthy: bool) -> NodeRecord {
    NodeRecord {
        address: address.into(),
        port,
        role: Role::Slave,
        repl_offset: 0,
        run_id: "r".into(),
        healthy,
        updated_ms: 0,
        upstream: None,
        fenced: false,
        upstream_down: false,
        host: None,
    }
}

fn member(host: &str, port: u16, node: Option<&str>) -> PublishedMember {
    PublishedMember { host: host.into(), port, node: node.map(Into::into) }
}

#[test]
fn wanted_follows_what_the_zone_serves() {
    let mut records = Records::default();
    assert_eq!(wanted(&records, "c"), Wanted::default(), "nothing published");
    records.apply(Change::Registration { cluster: "c".into(), node: "n1".into(), record: Some(node("10.0.0.11", 7001, true)) }, 1);
    records.apply(Change::Registration { cluster: "c".into(), node: "n2".into(), record: Some(node("10.0.0.12", 7002, true)) }, 2);
    records.apply(Change::Registration { cluster: "c".into(), node: "n3".into(), record: Some(node("10.0.0.13", 7003, false)) }, 3);
    let topology = PublishedTopology {
        // The registration's address wins over the host recorded at publication.
        master: member("10.0.0.1", 7001, Some("n1")),
        slaves: vec![
            member("10.0.0.12", 7002, Some("n2")),
            member("10.0.0.13", 7003, Some("n3")),        // unhealthy: out of the pool
            member("10.0.0.14", 7004, Some("gone")),      // not registered: out
            member("10.0.0.20", 6379, None),              // an IP literal: in
            member("redis.example.com", 6379, None),      // a host name: no address to push
        ],
        topology_revision: None,
    };
    records.apply(Change::Published { cluster: "c".into(), topology: Some(topology) }, 4);
    assert_eq!(
        wanted(&records, "c"),
        Wanted { master: Some(addr("10.0.0.11:7001")), slaves: vec![addr("10.0.0.12:7002"), addr("10.0.0.20:6379")], hold: None }
    );
    assert_eq!(wanted(&records, "other"), Wanted::default());
    let named = PublishedTopology { master: member("redis.example.com", 6379, None), slaves: vec![], topology_revision: None };
    records.apply(Change::Published { cluster: "c".into(), topology: Some(named) }, 5);
    assert_eq!(wanted(&records, "c").master, None, "a host name is left to DNS");
}
