//! What the fault suite (`tests/faults.rs`) and its benchmark (`benches/faults.rs`)
//! share: the faults of issue 16 on `harness::multihost`, and a writer that runs on
//! the client host.

#![allow(dead_code)] // each of the two targets uses a part

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use counter::{read_list, Destination, Pace, Tally, Writer, WriterDied};
use harness::multihost::{MultiHost, WRITE_PORT};
use harness::netns::{Host, Link};

pub const KEY: &str = "fault-ids";
/// ~500 writes/s as in the issue. A write waits at most 500 ms: a client on a
/// silent link should measure the failover more than its own timeout.
pub const PACE: Pace = Pace { per_second: 500, count: None, timeout: Duration::from_millis(500) };
/// A client that waits out a 6 s freeze: its write queued in the frozen redis's
/// socket is answered after the thaw, by whatever redis is by then.
pub const PATIENT: Pace = Pace { per_second: 50, count: None, timeout: Duration::from_secs(10) };

/// How the master fails, and how it comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Both links of the master's host cut (data first), later healed.
    MachineLoss,
    /// The master's control link cut: clients and its replicas still reach it.
    ControlPartition,
    /// SIGSTOP of the master's redis, SIGCONT later.
    Freeze,
    /// kill -9 of the master's redis, started again on its AOF.
    AofRestart,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::MachineLoss => "machine loss (both links cut)",
            Fault::ControlPartition => "control-plane partition (control link cut)",
            Fault::Freeze => "freeze (SIGSTOP)",
            Fault::AofRestart => "restart on AOF",
        }
    }

    pub fn inflict(self, sys: &mut MultiHost, node: usize) -> Instant {
        let at = Instant::now();
        let host = &mut sys.redis[node];
        match self {
            Fault::MachineLoss => {
                host.host.set_link(Link::Data, false);
                host.host.set_link(Link::Control, false);
            }
            Fault::ControlPartition => host.host.set_link(Link::Control, false),
            Fault::Freeze => assert!(host.redis.signal(libc_sig::STOP), "SIGSTOP the master's redis"),
            Fault::AofRestart => host.kill_redis(),
        }
        at
    }

    pub fn heal(self, sys: &mut MultiHost, node: usize) {
        let host = &mut sys.redis[node];
        match self {
            Fault::MachineLoss => {
                host.host.set_link(Link::Control, true);
                host.host.set_link(Link::Data, true);
            }
            Fault::ControlPartition => host.host.set_link(Link::Control, true),
            Fault::Freeze => assert!(host.redis.signal(libc_sig::CONT), "SIGCONT the master's redis"),
            Fault::AofRestart => host.start_redis(),
        }
    }
}

/// Signal numbers (Linux), without a libc dependency for two constants.
mod libc_sig {
    pub const STOP: i32 = 19;
    pub const CONT: i32 = 18;
}

/// A counter writer running on a thread inside a host's network namespace.
pub struct NsWriter {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Tally, WriterDied>>,
}

impl NsWriter {
    pub fn start(host: &Host, target: Destination, pace: Pace) -> NsWriter {
        let (tx, rx) = mpsc::channel();
        let host = host.clone();
        let thread = std::thread::spawn(move || {
            host.block_on(|| async move {
                let writer = Writer::start(target, KEY, pace);
                tx.send(writer.stopper()).expect("the test waits for the writer");
                writer.finish().await
            })
        });
        let stop = rx.recv().expect("the writer started");
        NsWriter { stop, thread }
    }

    pub fn stop(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let tally = self.thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        tally.expect("the writer ran to the end")
    }
}

/// HAProxy's write frontend, as the client host sees it.
pub fn through_haproxy() -> Destination {
    Destination::Fixed(SocketAddr::from(([127, 0, 0, 1], WRITE_PORT)))
}

/// The writable master among the redis hosts, found by asking each (Sentinel's clients).
pub fn discover(sys: &MultiHost) -> Destination {
    Destination::Discover(sys.redis.iter().map(|r| r.addr()).collect())
}

/// The whole list, read from the client host through `target`.
pub fn read_back(sys: &MultiHost, target: &Destination) -> Vec<String> {
    sys.client
        .block_on(|| read_list(target, KEY, Duration::from_secs(20)))
        .unwrap_or_else(|e| panic!("read the list back: {e}"))
}

/// Time from `failure` to the acknowledgement that ends the longest gap after it
/// (before `until`); `None` if no write was acknowledged after it.
pub fn recovery(tally: &Tally, failure: Instant, until: Instant) -> Option<Duration> {
    let after: Vec<Instant> = tally.acked.iter().map(|(_, at)| *at).filter(|at| *at > failure && *at < until).collect();
    let last_before = tally.acked.iter().map(|(_, at)| *at).take_while(|at| *at <= failure).last();
    let first = *after.first()?;
    let gaps = std::iter::once((last_before.unwrap_or(failure), first)).chain(after.windows(2).map(|w| (w[0], w[1])));
    gaps.max_by_key(|(a, b)| *b - *a).map(|(_, end)| end - failure)
}
