//! Machine loss and control-plane partition, side by side with Redis Sentinel, on
//! the simulated hosts of the fault suite (printed, never asserted):
//!
//!     cargo build --release --bins && cargo bench -p e2e --bench faults [-- [ours|sentinel] [loss|partition]]
//!
//! Each run starts a fresh network (`harness::multihost`): three redis hosts, a
//! control host, a client host writing ~500 ids/s. redis-topology: etcd, dnsd,
//! the dictator and the observer on the control host, an agent beside each redis,
//! writes through HAProxy. Sentinel: three Sentinels (quorum 2,
//! `down-after-milliseconds 1000`) on the control host, which reach redis over
//! the control network as our control plane does; the writer finds the master by
//! asking the nodes for their `ROLE`, as the failover benchmark's does.
//!
//! The fault lasts 10 s, then heals; the run goes on 20 s more. Printed for each:
//! - writes back: from the fault to the acknowledgement that ends the longest gap
//!   without one;
//! - lost: acknowledged writes missing from the list read back at the end;
//! - one writable master: from the fault until, for good, exactly one node takes
//!   a real write (each node probed from its own host every ~100 ms);
//!   `never` if two were still writable (or none) at the end.
//!
//! Needs root and `ip netns` (prints `SKIPPED: ...` otherwise).

#[path = "../tests/multihost/mod.rs"]
mod multihost;

use std::time::{Duration, Instant};

use harness::multihost::{ControlPlane, MultiHost, Probe};
use multihost::{discover, read_back, recovery, through_haproxy, Fault, NsWriter, PACE};

const HOLD: Duration = Duration::from_secs(10);
// Sentinel converts a returning old master only after it has reported itself a
// master for 8 s, and asks a replica for INFO every 10 s.
const AFTER: Duration = Duration::from_secs(20);

struct Row {
    fault: Fault,
    plane: ControlPlane,
    writes_back: Option<Duration>,
    lost: usize,
    one_master: Option<Duration>,
    verdict: String,
}

/// Probes every node until `until`; (instant, number of writable nodes).
fn watch(sys: &MultiHost, until: Instant, samples: &mut Vec<(Instant, usize)>) {
    while Instant::now() < until {
        let writable = sys.probes().iter().filter(|p| **p == Probe::Writable).count();
        samples.push((Instant::now(), writable));
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(plane: ControlPlane, fault: Fault) -> Option<Row> {
    let mut sys = MultiHost::start(plane, &[])?;
    let target = match plane {
        ControlPlane::RedisTopology => {
            sys.bootstrap();
            through_haproxy()
        }
        ControlPlane::Sentinel => discover(&sys),
    };
    let writer = NsWriter::start(&sys.client, target.clone(), PACE);
    std::thread::sleep(Duration::from_secs(2));
    let mut samples = Vec::new();
    let at = fault.inflict(&mut sys, 0);
    watch(&sys, at + HOLD, &mut samples);
    fault.heal(&mut sys, 0);
    watch(&sys, at + HOLD + AFTER, &mut samples);
    let stopped = Instant::now();
    let tally = writer.stop();
    let verdict = tally.check(&read_back(&sys, &target));
    let last_not_one = samples.iter().rev().find(|(_, n)| *n != 1).map(|(t, _)| *t);
    let one_master = match (samples.last(), last_not_one) {
        (Some((_, 1)), Some(t)) => Some(t.saturating_duration_since(at)),
        (Some((_, 1)), None) => Some(Duration::ZERO),
        _ => None,
    };
    Some(Row { fault, plane, writes_back: recovery(&tally, at, stopped), lost: verdict.missing, one_master, verdict: verdict.to_string() })
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn main() {
    let only: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let wanted = |group: &[&str], name: &str| !only.iter().any(|o| group.contains(&o.as_str())) || only.iter().any(|o| o == name);
    let mut rows = Vec::new();
    for (fault, name) in [(Fault::MachineLoss, "loss"), (Fault::ControlPartition, "partition")] {
        if !wanted(&["loss", "partition"], name) {
            continue;
        }
        for (plane, pname) in [(ControlPlane::RedisTopology, "ours"), (ControlPlane::Sentinel, "sentinel")] {
            if !wanted(&["ours", "sentinel"], pname) {
                continue;
            }
            let Some(row) = run(plane, fault) else { return };
            println!("{} / {pname}: writes back {}, lost {}, one writable master {}; {}",
                fault.name(), ms(row.writes_back), row.lost, ms(row.one_master), row.verdict);
            rows.push(row);
        }
    }
    println!("\nfault held {} s, then healed; ~500 writes/s\n", HOLD.as_secs());
    println!("| scenario | system | writes acknowledged again after | acknowledged writes lost | one writable master after |");
    println!("|---|---|---|---|---|");
    for row in rows {
        let system = match row.plane {
            ControlPlane::RedisTopology => "redis-topology (through HAProxy)",
            ControlPlane::Sentinel => "Redis Sentinel (down-after 1000 ms)",
        };
        println!("| {} | {system} | {} | {} | {} |", row.fault.name(), ms(row.writes_back), row.lost, ms(row.one_master));
    }
}
