//! `service::etcd` against a real 3-member etcd whose members die: requests move
//! on to a live member, and a kept lease outlives the member it was renewed on.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use clap::Parser;
use harness::Etcd;
use service::cli::EtcdArgs;
use service::etcd::KeptLease;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    etcd: EtcdArgs,
}

fn args(endpoints: &str) -> EtcdArgs {
    Cli::try_parse_from(["t", "--etcd-endpoints", endpoints]).unwrap().etcd
}

/// `gets` reads through one client; how many failed.
async fn failed_reads(client: &mut etcd_client::Client, gets: usize) -> usize {
    let mut failed = 0;
    for _ in 0..gets {
        if client.get("/k", None).await.is_err() {
            failed += 1;
        }
    }
    failed
}

/// With one member of three dead, a client fails the request that found it dead
/// (its caller retries) and sends every later one to a live member; a client made
/// after the death connects to a live one. etcd-client's own balancing failed
/// about a third of them for as long as the member stayed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_member_dead_requests_move_on_to_a_live_one() {
    let mut etcd = Etcd::start_cluster(3);
    etcd.client().await.put("/k", "v", None).await.unwrap();
    let args = args(&etcd.endpoint());
    let mut client = args.connect().await.unwrap();
    assert_eq!(failed_reads(&mut client, 20).await, 0);

    for dead in 0..3 {
        if dead > 0 {
            etcd.restart_member(dead - 1);
        }
        etcd.kill_member(dead);
        // Requests fail while the survivors elect a leader (when the dead one led):
        // that is etcd's, not the client's.
        etcd.wait_leader().await;
        // A client made before the death, and one made after it.
        let failed_before = failed_reads(&mut client, 200).await;
        let mut fresh = args.connect().await.unwrap();
        let failed_fresh = failed_reads(&mut fresh, 200).await;
        println!("member {dead} dead: {failed_before} of 200 reads failed on the old client, {failed_fresh} on a new one");
        assert!(failed_before <= 1, "{failed_before} of 200 reads failed with member {dead} dead");
        // Connecting found a live member: not one read fails.
        assert_eq!(failed_fresh, 0, "reads failed on a client made after member {dead} died");
    }
}

/// The lease lives in the cluster: killing the member that renews it (even the
/// leader) reopens the keep-alive on another member, and the lease is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_survives_the_death_of_its_member_and_of_the_leader() {
    let mut etcd = Etcd::start_cluster(3);
    let args = args(&etcd.endpoint());
    let mut client = args.connect().await.unwrap();
    // A TTL long enough to outlast an election (etcd's election timeout is 1 s),
    // and whose 3 s answer deadline a busy machine meets.
    let mut lease = KeptLease::grant(&mut client, Duration::from_secs(9)).await.unwrap();
    lease.renewed_or_lost().await.unwrap();

    // Which member the client talks to: the one whose death breaks its streams.
    // Killing each member in turn kills it at some point; the leader too.
    let leader = etcd.wait_leader().await;
    let mut order: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    order.push(leader);
    for member in order {
        etcd.kill_member(member);
        // Renewals after the death (the first meets the broken stream), answered.
        for _ in 0..2 {
            let renewed = tokio::time::timeout(Duration::from_secs(10), lease.renewed_or_lost()).await;
            assert!(matches!(renewed, Ok(Ok(()))), "lease lost after member {member} died: {renewed:?}");
        }
        etcd.restart_member(member);
    }
    // etcd still holds it.
    let ttl = etcd.client().await.lease_time_to_live(lease.id(), None).await.unwrap();
    assert!(ttl.ttl() > 0, "etcd let the lease expire");
}
