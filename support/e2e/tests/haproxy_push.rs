#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! dnsd's push to HAProxy's runtime API (`--haproxy-runtime`), on the shipped
//! config with real HAProxy instances. Timings are the benchmark's business.

use std::time::{Duration, Instant};

use counter::{read_list, Destination, Pace, Writer};
use harness::stack::{ready_addresses, Haproxy, Stack, StackOptions};

const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_secs(5) };
const WAIT: Duration = Duration::from_secs(20);

fn push_stack() -> Stack {
    Stack::start(StackOptions { haproxy: true, haproxy_push: true, ..StackOptions::default() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_through_haproxy_with_push_lose_nothing() {
    let stack = push_stack();
    let socket = stack.runtime.clone().unwrap();
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;

    let target = Destination::Fixed(stack.write.unwrap());
    let writer = Writer::start(target.clone(), "push-ids", PACE);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 1..=6 {
        let m = round % 3;
        let revision = stack.define(m, &[(m + 1) % 3, (m + 2) % 3]).await;
        stack.wait_applied(revision).await;
        let master = stack.nodes[m].redis.addr();
        harness::wait_until("HAProxy's write slot at the new master", WAIT, || {
            ready_addresses(&socket, "redis_master") == [master]
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let tally = writer.stop().await.unwrap();
    let verdict = tally.check(&read_list(&target, "push-ids", Duration::from_secs(10)).await.unwrap());
    assert!(verdict.acked > 500, "writes went through: {verdict}");
    assert_eq!((verdict.missing, verdict.phantom), (0, 0), "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_haproxy_that_missed_the_push_converges_through_dns() {
    let stack = push_stack();
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    // Started late, with a runtime API dnsd does not push to.
    let missed = Haproxy::start(&stack.nameservers, true);
    let socket = missed.runtime.clone().unwrap();
    let revision = stack.define(1, &[0, 2]).await;
    stack.wait_applied(revision).await;
    let master = stack.nodes[1].redis.addr();
    harness::wait_until("the missed HAProxy's write slot at the new master", WAIT, || {
        ready_addresses(&socket, "redis_master") == [master]
    });
    let mut slaves = vec![stack.nodes[0].redis.addr(), stack.nodes[2].redis.addr()];
    slaves.sort();
    harness::wait_until("the missed HAProxy's read slots at the slaves", WAIT, || {
        ready_addresses(&socket, "redis_slaves") == slaves
    });
    let through = Destination::Fixed(missed.write);
    let tally = Writer::start(through.clone(), "missed-ids", Pace { count: Some(50), ..PACE }).finish().await.unwrap();
    let verdict = tally.check(&read_list(&through, "missed-ids", Duration::from_secs(10)).await.unwrap());
    assert_eq!((verdict.acked, verdict.missing, verdict.phantom), (50, 0, 0), "{verdict}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_backend_follows_a_slave_leaving_and_joining() {
    let stack = push_stack();
    let socket = stack.runtime.clone().unwrap();
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let (one, two) = (stack.nodes[1].redis.addr(), stack.nodes[2].redis.addr());
    let both = if one < two { vec![one, two] } else { vec![two, one] };
    harness::wait_until("both slaves in the read backend", WAIT, || ready_addresses(&socket, "redis_slaves") == both);

    let revision = stack.define(0, &[1]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("the slave that left out of the read backend", WAIT, || {
        ready_addresses(&socket, "redis_slaves") == [one]
    });
    let read = stack.read.unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(300) {
        assert_eq!(read_port(read).await, one.port(), "reads go only to the slave still in the pool");
    }

    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    harness::wait_until("the slave that joined back in the read backend", WAIT, || {
        ready_addresses(&socket, "redis_slaves") == both
    });
}

/// The port of the redis a new read connection reaches.
async fn read_port(read: std::net::SocketAddr) -> u16 {
    let client = redis::Client::open(harness::redis::client_url(read)).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let port: String = redis::cmd("CONFIG").arg("GET").arg("port").query_async::<Vec<String>>(&mut conn).await.unwrap().remove(1);
    port.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_is_never_published_gives_the_old_master_back() {
    let mut stack = push_stack();
    let socket = stack.runtime.clone().unwrap();
    stack.wait_registered().await;
    let revision = stack.define(0, &[1, 2]).await;
    stack.wait_applied(revision).await;
    let old = stack.nodes[0].redis.addr();
    harness::wait_until("the write slot at the master", WAIT, || ready_addresses(&socket, "redis_master") == [old]);

    // No observer applies the new topology: nothing is published.
    for (observer, _) in &mut stack.observers {
        observer.process().kill();
    }
    stack.define(1, &[0, 2]).await;
    harness::wait_until("the write slot held out of service", WAIT, || ready_addresses(&socket, "redis_master").is_empty());
    harness::wait_until("the hold to lapse back to the old master", WAIT, || {
        ready_addresses(&socket, "redis_master") == [old]
    });
    assert_eq!(stack.nodes[0].redis.role(), "master");
    let through = Destination::Fixed(stack.write.unwrap());
    let tally = Writer::start(through.clone(), "lapsed-ids", Pace { count: Some(50), ..PACE }).finish().await.unwrap();
    let verdict = tally.check(&read_list(&through, "lapsed-ids", Duration::from_secs(10)).await.unwrap());
    assert_eq!((verdict.acked, verdict.missing, verdict.phantom), (50, 0, 0), "{verdict}");
}
