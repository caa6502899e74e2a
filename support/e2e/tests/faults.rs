#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The fault suite of issue 16, on simulated hosts in network namespaces
//! (`harness::multihost`): three redis hosts, a control host, a client host with
//! HAProxy and a writer at ~500 writes/s through it.
//!
//! Each scenario fails the master's host under writes, heals it, and asserts:
//! - while the fault lasts (cuts only), and again after the heal, within 30 s:
//!   exactly one node takes a real write (a fenced master answers `NOREPLICAS`, a
//!   slave `READONLY`), and DNS publishes that node as the master;
//! - after the heal, every other node is a slave or a fenced (quarantined) master;
//! - no phantom write, and at most [`lost_bound`] acknowledged writes lost (none).
//!
//! Needs root and `ip netns`; elsewhere each test prints `SKIPPED: ...` and returns.

mod multihost;

use std::time::{Duration, Instant};

use harness::multihost::{ControlPlane, MultiHost, Probe};
use multihost::{read_back, recovery, through_haproxy, Fault, NsWriter, PACE, PATIENT};

/// Acknowledged writes a scenario may lose. None for every fault (issue 16): a
/// master cut off from etcd fences itself before its lease can expire; a frozen
/// one is failed over while its clients' HAProxy sessions are shut by dnsd's push,
/// so what it answers after the thaw reaches no client; and an AOF keeps every
/// write redis answered.
fn lost_bound(fault: Fault) -> usize {
    match fault {
        Fault::MachineLoss | Fault::ControlPartition | Fault::Freeze | Fault::AofRestart => 0,
    }
}
/// How long one writable master, published by DNS, may take.
const CONVERGE: Duration = Duration::from_secs(30);

/// Waits until exactly one node takes writes, it is not `failed`, DNS names it,
/// and (when `settled`) every other node refuses writes as a slave or a fenced
/// master; returns it.
fn wait_one_published_master(sys: &MultiHost, what: &str, failed: Option<usize>, settled: bool) -> usize {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let probes = sys.probes();
        let dns = sys.dns_master();
        let writable: Vec<usize> = (0..probes.len()).filter(|i| probes[*i] == Probe::Writable).collect();
        if let [only] = writable[..]
            && Some(only) != failed
        {
            let others_refuse = probes.iter().all(|p| matches!(p, Probe::Writable | Probe::Fenced | Probe::ReadOnly));
            if dns.as_deref() == Some(sys.redis[only].node.as_str()) && (!settled || others_refuse) {
                return only;
            }
        }
        let last = format!("probes {probes:?}, DNS master {dns:?}");
        if Instant::now() > deadline {
            let logs: String = ["observer", "dictator"]
                .iter()
                .map(|s| format!("----- {s} -----\n{}\n", sys.log_tail(s, 4000)))
                .collect();
            panic!("{what}: no single writable master published by DNS within {CONVERGE:?}: {last}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the old master (node 0) is re-pointed (a slave) or quarantined:
/// fenced, and named as quarantined in the observer's status.
fn wait_old_master_settled(sys: &MultiHost, fault: Fault) {
    let old_addr = sys.redis[0].addr().to_string();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let (probe, status) = (sys.redis[0].probe(), sys.status().unwrap_or_default());
        let reported = status["error"].as_str().is_some_and(|e| e.contains("quarantined") && e.contains(&old_addr));
        match probe {
            Probe::ReadOnly => return println!("{}: the old master is re-pointed (a slave)", fault.name()),
            Probe::Fenced if reported => return println!("{}: the old master is quarantined: {status}", fault.name()),
            _ if Instant::now() > deadline => {
                panic!("the old master is neither re-pointed nor reported quarantined within {CONVERGE:?}: {probe:?}; status {status}")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn scenario(fault: Fault) {
    let Some(mut sys) = MultiHost::start(ControlPlane::RedisTopology, &[]) else { return };
    sys.bootstrap();
    let target = through_haproxy();
    let writer = NsWriter::start(&sys.client, target.clone(), PACE);
    // Under a freeze, also a client whose write outlasts it (through its own
    // HAProxy session): what the thawed redis does with it is the bound's test.
    let patient = (fault == Fault::Freeze).then(|| NsWriter::start(&sys.client, target.clone(), PATIENT));
    std::thread::sleep(Duration::from_secs(2));

    let at = fault.inflict(&mut sys, 0);
    match fault {
        Fault::MachineLoss | Fault::ControlPartition => {
            let new = wait_one_published_master(&sys, "during the fault", Some(0), false);
            println!("{}: one writable master ({}) published after {:?}", fault.name(), sys.redis[new].node, at.elapsed());
            std::thread::sleep(Duration::from_secs(3)); // writes on the new master, the old one still cut off
        }
        Fault::Freeze => std::thread::sleep(Duration::from_secs(6).saturating_sub(at.elapsed())),
        Fault::AofRestart => std::thread::sleep(Duration::from_secs(1)),
    }
    let healed = Instant::now();
    fault.heal(&mut sys, 0);
    let master = wait_one_published_master(&sys, "after the heal", None, true);
    println!("{}: converged {:?} after the heal; probes {:?}", fault.name(), healed.elapsed(), sys.probes());
    std::thread::sleep(Duration::from_secs(1));

    let stopped = Instant::now();
    let tally = writer.stop();
    let patient = patient.map(NsWriter::stop);
    let patient_acked = patient.as_ref().map(|t| t.acked.clone());
    let list = read_back(&sys, &target);
    let verdict = tally.check(&list);
    println!("{}: {verdict}; writes back {:?} after the fault", fault.name(), recovery(&tally, at, stopped));
    assert_eq!(verdict.phantom, 0, "{verdict}");
    let mut lost = verdict.missing;
    if let Some(patient) = patient {
        let slow = patient.check(&list);
        println!("{}: the patient client (10 s timeout): {slow}", fault.name());
        assert_eq!(slow.phantom, 0, "the patient client: {slow}");
        lost += slow.missing;
    }
    if lost > lost_bound(fault) {
        // Where the lost writes are: on the old master, which the group gave up?
        let present: std::collections::HashSet<&str> = list.iter().map(String::as_str).collect();
        let missing: Vec<&str> = tally.acked.iter().chain(patient_acked.iter().flatten())
            .map(|(id, _)| id.as_str()).filter(|id| !present.contains(id)).collect();
        let found: Vec<String> = sys.redis.iter().map(|r| {
            let on = r.list(multihost::KEY).unwrap_or_default();
            format!("{}: {} of them", r.node, missing.iter().filter(|id| on.iter().any(|x| x == *id)).count())
        }).collect();
        panic!("{lost} acknowledged writes lost ({}): {verdict}", found.join(", "));
    }
    let after = tally.acked.iter().filter(|(_, t)| *t > healed).count();
    assert!(after > 100, "writes go on after the heal: {after} acknowledged; {verdict}");
    if master != 0 {
        wait_old_master_settled(&sys, fault);
    }
}

#[test]
fn machine_loss_fails_over_and_the_returning_master_does_not_take_writes() {
    scenario(Fault::MachineLoss);
}

#[test]
fn a_master_cut_from_the_control_plane_loses_no_acknowledged_write() {
    scenario(Fault::ControlPartition);
}

#[test]
fn a_frozen_master_thawed_leaves_one_writable_master() {
    scenario(Fault::Freeze);
}

#[test]
fn a_master_restarted_on_its_aof_converges_to_one_writable_master() {
    scenario(Fault::AofRestart);
}
