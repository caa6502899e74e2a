//! Free loopback ports, reserved across test processes.
//!
//! A port is probed free now and bound by a child later; in between, another test
//! process (nextest runs each test in its own, several at once) could probe the same
//! port and hand it to its own child. So every port handed out is also locked: an
//! exclusive `flock` on a per-port file in a directory all test processes of this
//! user share, held until this process exits (the kernel releases it then, even on
//! SIGKILL). No harness hands out a locked port, so a test's servers can bind, die
//! and be restarted on their ports for the whole test.
//!
//! Ports come from 15000..32000, below Linux's ephemeral range where outgoing
//! connections get their source ports, and each is checked free for both TCP and UDP
//! (dnsd serves both on one port); the probe is what keeps other programs' ports out.

use std::fs::{File, TryLockError};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

const FIRST: u32 = 15000;
const COUNT: u32 = 17000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
/// The locks of every port this process handed out: never released before exit.
static HELD: Mutex<Vec<File>> = Mutex::new(Vec::new());

/// A port on 127.0.0.1, free for TCP and UDP now and handed to no other caller in
/// any test process (of this user) until this process exits.
pub fn free_port() -> u16 {
    // Start processes at different points of the range so they rarely contend for
    // the same locks; the locks, not the offsets, are what keeps them apart.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let candidates = (0..COUNT).map(|_| (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16);
    let Some((port, lock)) = reserve(lock_dir(), candidates) else {
        panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
    };
    HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(lock);
    port
}

/// The first of `candidates` whose lock in `dir` is free and that is free for TCP and
/// UDP, with its lock (held while the `File` lives).
fn reserve(dir: &Path, candidates: impl IntoIterator<Item = u16>) -> Option<(u16, File)> {
    candidates.into_iter().find_map(|port| {
        let path = dir.join(format!("{port}.lock"));
        // Lock files stay: removing one while another process holds its lock would
        // let a third lock a new file of the same name.
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open port lock {}: {e}", path.display()));
        match file.try_lock() {
            Ok(()) => bindable(port).then_some((port, file)),
            Err(TryLockError::WouldBlock) => None,
            Err(TryLockError::Error(e)) => panic!("cannot lock {}: {e}", path.display()),
        }
    })
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok()
}

/// `<temp dir>/redis-topology-ports-<uid>`: per user, so that no one needs write
/// access to another user's lock files.
fn lock_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let uid = std::fs::metadata("/proc/self").expect("stat /proc/self for the user id").uid();
        let dir = std::env::temp_dir().join(format!("redis-topology-ports-{uid}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
}

/// A nameserver address on loopback that takes queries and never answers, for the
/// lifetime of this process: lookups time out, and never reach the machine's own
/// resolver or another test's dnsd. One socket pair serves every caller.
pub fn silent_nameserver() -> SocketAddr {
    static SILENT: OnceLock<(SocketAddr, UdpSocket, TcpListener)> = OnceLock::new();
    SILENT
        .get_or_init(|| {
            let port = free_port();
            // Bound and never read (UDP) or accepted (TCP): the kernel queues the
            // query and no one replies, not even with "port unreachable".
            let udp = UdpSocket::bind(("127.0.0.1", port)).expect("bind the silent nameserver (UDP)");
            let tcp = TcpListener::bind(("127.0.0.1", port)).expect("bind the silent nameserver (TCP)");
            (SocketAddr::from(([127, 0, 0, 1], port)), udp, tcp)
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    #[test]
    fn ports_in_one_process_never_collide_and_are_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "a port was handed out twice: {ports:?}");
        for port in ports {
            TcpListener::bind(("127.0.0.1", port)).expect("a handed-out port is free for TCP");
            UdpSocket::bind(("127.0.0.1", port)).expect("a handed-out port is free for UDP");
        }
    }

    #[test]
    fn a_reserved_port_is_not_reserved_again() {
        let dir = tempfile::tempdir().expect("temp lock dir");
        let (a, b) = (free_port(), free_port());
        let (first, _lock) = reserve(dir.path(), [a, b]).expect("a free port");
        assert_eq!(first, a);
        assert_eq!(reserve(dir.path(), [a, b]).map(|(port, _)| port), Some(b));
        assert!(reserve(dir.path(), [a]).is_none(), "{a} handed out while its lock is held");
    }

    #[test]
    fn a_port_locked_by_another_process_is_skipped_until_it_exits() {
        let dir = tempfile::tempdir().expect("temp lock dir");
        let (a, b) = (free_port(), free_port());
        let path = dir.path().join(format!("{a}.lock"));
        // Another process holding the lock, as another test would: the shell locks its
        // own fd 9 with util-linux flock(1), then becomes `sleep`, which keeps it.
        let mut holder = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 9>"$0" && flock 9 && echo locked && exec sleep 60"#)
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("run sh");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read from flock");
        assert_eq!(line.trim(), "locked");

        assert_eq!(reserve(dir.path(), [a, b]).map(|(port, _)| port), Some(b));

        holder.kill().expect("kill the lock holder");
        holder.wait().expect("reap the lock holder");
        crate::wait_until("the dead holder's lock to be released", Duration::from_secs(5), || {
            reserve(dir.path(), [a]).is_some()
        });
    }

    #[test]
    fn the_silent_nameserver_never_answers() {
        let ns = silent_nameserver();
        assert_eq!(ns, silent_nameserver(), "one per process");
        let client = UdpSocket::bind(("127.0.0.1", 0)).expect("client socket");
        client.set_read_timeout(Some(Duration::from_millis(300))).expect("set timeout");
        // Connected, so that "port unreachable" would show up as an error here.
        client.connect(ns).expect("connect");
        client.send(b"not really a query").expect("send");
        let mut buf = [0u8; 512];
        let err = client.recv(&mut buf).expect_err("no answer, not even port unreachable");
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
        assert!(!bindable(ns.port()), "the silent nameserver holds its port");
    }
}
