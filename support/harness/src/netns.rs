//! A simulated multi-host network in Linux network namespaces, for fault tests.
//!
//! A [`Net`] owns a "switch" namespace holding one bridge per network (`data`,
//! `control`) and, per host, a namespace joined to those bridges by veth pairs.
//! The bridges and every veth's switch end live in the switch namespace, not in
//! the machine's own: deleting the test's namespaces removes everything, nothing
//! the test builds can be seen from outside, and two tests (or runs) using the
//! same addresses cannot collide.
//!
//! A link is cut by setting its switch end down: the host keeps running but
//! nothing it sends over that link arrives and nothing reaches it, as when a
//! cable or a switch port dies. Connections are not refused, they go unanswered.
//!
//! Processes run in a host with `ip netns exec` ([`Host::spawn`], killed on drop
//! like every [`Process`]); test code runs in a host on a thread moved into its
//! namespace ([`Host::run`]). Dropping the [`Net`] (also while panicking) kills
//! whatever still runs in its namespaces and deletes them. [`Net::create`] first
//! sweeps namespaces left by test processes that died (their names carry the
//! creating pid).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::process::Process;

/// Every namespace this harness creates is named `rt-<pid>-<n>-<host>`.
const PREFIX: &str = "rt-";
const NETNS_DIR: &str = "/run/netns";

/// The two networks of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Clients and replication.
    Data,
    /// etcd, and the control plane's own connections.
    Control,
}

impl Link {
    fn name(self) -> &'static str {
        match self {
            Link::Data => "data",
            Link::Control => "ctl",
        }
    }
}

/// The private ranges of the two networks: 10.77.0.0/24 and 10.78.0.0/24. Each
/// [`Net`] has its own bridges in its own namespace, so every test can use them.
pub const DATA_NET: [u8; 2] = [10, 77];
pub const CONTROL_NET: [u8; 2] = [10, 78];

/// Why namespaces cannot be used here, if they cannot: not root, or no `ip`.
pub fn unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!("`ip netns list` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Some(format!("cannot run `ip` (iproute2): {e}")),
    }
}

/// A simulated network: its switch and its hosts. Dropped: everything removed.
pub struct Net {
    /// `rt-<pid>-<n>-`: the prefix of each of its namespaces.
    stem: String,
    switch: String,
    hosts: Vec<String>,
}

/// One simulated machine: a network namespace with an address on each network
/// it is joined to.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// The namespace's name, for `ip netns exec`.
    pub ns: String,
    pub data: Option<Ipv4Addr>,
    pub control: Option<Ipv4Addr>,
    switch: String,
}

impl Net {
    /// A fresh network with empty bridges, or `None` after printing
    /// `SKIPPED: needs root / ip netns` when namespaces cannot be used here.
    pub fn create() -> Option<Net> {
        if let Some(why) = unavailable() {
            println!("SKIPPED: needs root / ip netns ({why})");
            eprintln!("SKIPPED: needs root / ip netns ({why})");
            return None;
        }
        sweep();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let stem = format!("{PREFIX}{}-{}-", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let switch = format!("{stem}sw");
        let net = Net { stem, switch: switch.clone(), hosts: Vec::new() };
        ip(&["netns", "add", &switch]);
        for link in [Link::Data, Link::Control] {
            let bridge = format!("br-{}", link.name());
            ip(&["-n", &switch, "link", "add", &bridge, "type", "bridge"]);
            ip(&["-n", &switch, "link", "set", &bridge, "up"]);
        }
        Some(net)
    }

    /// Adds host `name` (a few letters: it names interfaces) with host number
    /// `number` (its last address byte, 1..=254) on the networks in `links`.
    pub fn host(&mut self, name: &str, number: u8, links: &[Link]) -> Host {
        let ns = format!("{}{name}", self.stem);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let mut host = Host { name: name.to_string(), ns: ns.clone(), data: None, control: None, switch: self.switch.clone() };
        for link in links {
            let net = match link {
                Link::Data => DATA_NET,
                Link::Control => CONTROL_NET,
            };
            let addr = Ipv4Addr::new(net[0], net[1], 0, number);
            let (inside, outside) = (format!("{}0", link.name()), host.port(*link));
            ip(&["-n", &self.switch, "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns]);
            ip(&["-n", &self.switch, "link", "set", &outside, "master", &format!("br-{}", link.name())]);
            ip(&["-n", &self.switch, "link", "set", &outside, "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inside]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            match link {
                Link::Data => host.data = Some(addr),
                Link::Control => host.control = Some(addr),
            }
        }
        host
    }

    /// Sends traffic for the data network over this host's control link: the
    /// control plane reaches every host's data address through the control
    /// network (each host answers for all of its addresses on either link, Linux's
    /// weak host model), so that cutting a host's control link cuts it off from the
    /// control plane while clients still reach it.
    pub fn route_data_over_control(&self, host: &Host) {
        let net = format!("{}.{}.0.0/24", DATA_NET[0], DATA_NET[1]);
        ip(&["-n", &host.ns, "route", "add", &net, "dev", &format!("{}0", Link::Control.name())]);
    }
}

impl Host {
    /// The veth end in the switch namespace for `link`.
    fn port(&self, link: Link) -> String {
        format!("{}-{}", self.name, link.name())
    }

    /// Cuts (`up == false`) or heals one of this host's links.
    pub fn set_link(&self, link: Link, up: bool) {
        ip(&["-n", &self.switch, "link", "set", &self.port(link), if up { "up" } else { "down" }]);
    }

    /// Starts `program args...` inside this host, its output appended to `log`.
    pub fn spawn(&self, name: &str, program: &Path, args: &[&str], env: &[(&str, &str)], log: &Path) -> Process {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns]).arg(program).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Process::spawn(&format!("{name}@{}", self.name), cmd, log)
    }

    /// Runs `f` on a thread inside this host's network namespace: every socket it
    /// opens is this host's.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new(NETNS_DIR).join(&self.ns);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                    rustix::thread::move_into_link_name_space(
                        std::os::fd::AsFd::as_fd(&file),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .unwrap_or_else(|e| panic!("enter network namespace {}: {e}", self.ns));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Runs the future `f` makes on a runtime of its own inside this host.
    pub fn block_on<F, Fut>(&self, f: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: std::future::Future,
        Fut::Output: Send,
    {
        self.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
            runtime.block_on(f())
        })
    }

    /// Waits until a TCP connection to `addr` opens from inside this host.
    pub fn wait_tcp(&self, addr: std::net::SocketAddr, timeout: Duration) {
        self.run(|| {
            crate::wait_until(&format!("{addr} to accept connections from {}", self.name), timeout, || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
        });
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain([&self.switch]) {
            remove(ns);
        }
    }
}

/// Kills what still runs in namespace `ns` (only processes this harness started
/// there can be in it), then deletes it with its interfaces.
fn remove(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// Removes namespaces of earlier test processes that died without cleaning up:
/// `rt-<pid>-...` whose pid no longer runs.
pub fn sweep() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&name);
        }
    }
}

/// Runs `ip args...`, panicking with its error output if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("run ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn echo_once(host: &Host, port: u16) -> std::thread::JoinHandle<()> {
        let listener = host.run(|| TcpListener::bind(("0.0.0.0", port)).expect("bind in the namespace"));
        std::thread::spawn(move || {
            while let Ok((mut s, _)) = listener.accept() {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
            }
        })
    }

    fn talks(from: &Host, to: SocketAddr) -> bool {
        from.run(|| {
            let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
            let mut buf = [0u8; 4];
            s.write_all(b"ping").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"ping"
        })
    }

    #[test]
    fn the_sweep_removes_namespaces_of_dead_test_processes_only() {
        if unavailable().is_some() {
            println!("SKIPPED: needs root / ip netns");
            return;
        }
        let mut done = std::process::Command::new("true").spawn().expect("run true");
        done.wait().expect("reap true");
        let (dead, alive) = (format!("{PREFIX}{}-0-x", done.id()), format!("{PREFIX}{}-999-x", std::process::id()));
        ip(&["netns", "add", &dead]);
        ip(&["netns", "add", &alive]);
        sweep();
        let exists = |ns: &str| Path::new(NETNS_DIR).join(ns).exists();
        let (dead_left, alive_left) = (exists(&dead), exists(&alive));
        remove(&alive);
        remove(&dead);
        assert!(!dead_left, "{dead} survived the sweep");
        assert!(alive_left, "the sweep removed {alive}, which belongs to a live process");
    }

    #[test]
    fn a_cut_link_goes_silent_and_heals_and_everything_goes_on_drop() {
        let Some(mut net) = Net::create() else { return };
        let a = net.host("a", 1, &[Link::Data, Link::Control]);
        let b = net.host("b", 2, &[Link::Data]);
        let c = net.host("c", 3, &[Link::Control]);
        net.route_data_over_control(&c);
        let _server = echo_once(&a, 7000);
        let a_data = SocketAddr::from((a.data.unwrap(), 7000));
        assert!(talks(&b, a_data), "b reaches a over the data network");
        assert!(talks(&c, a_data), "c reaches a's data address over the control network");
        assert!(!talks(&b, SocketAddr::from(([127, 0, 0, 1], 7000))), "b's loopback is its own");

        a.set_link(Link::Control, false);
        assert!(talks(&b, a_data), "the data link still works");
        assert!(!talks(&c, a_data), "the control link is cut");
        a.set_link(Link::Data, false);
        assert!(!talks(&b, a_data), "the data link is cut");
        a.set_link(Link::Data, true);
        a.set_link(Link::Control, true);
        crate::wait_until("the links to carry traffic again", Duration::from_secs(10), || talks(&b, a_data) && talks(&c, a_data));

        let mut sleeper = a.spawn("sleep", Path::new("sleep"), &["600"], &[], &std::env::temp_dir().join("rt-netns-test.log"));
        assert!(sleeper.is_running());
        // `ip netns exec` enters the namespace a moment after it starts.
        let pid = sleeper.pid().expect("the sleeper's pid").to_string();
        crate::wait_until("the process to enter its namespace", Duration::from_secs(5), || {
            Command::new("ip").args(["netns", "pids", &a.ns]).output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().any(|p| p == pid))
        });
        let names: Vec<String> = [&a, &b, &c].iter().map(|h| h.ns.clone()).chain([net.switch.clone()]).collect();
        drop(net);
        for ns in names {
            assert!(!Path::new(NETNS_DIR).join(&ns).exists(), "{ns} left behind");
        }
        crate::wait_until("the process in a removed namespace to die", Duration::from_secs(5), || !sleeper.is_running());
    }
}
