#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The Debian package under a real systemd: a minimal Debian root file system
//! (mmdebstrap, cached between runs) boots in `systemd-nspawn`, the .deb of
//! scripts/build-deb.sh is installed with dpkg as an operator would, and the
//! installed units are checked: each is active only once it serves, works as a
//! `DynamicUser` with its hardening, gets the redis password through
//! `LoadCredential=`, is restarted by the watchdog when hung (SIGSTOP) and by
//! `Restart=` after kill -9, and a stopped node-agent leaves etcd at once. Then a
//! switchover through the installed units and HAProxy, with the counter writing
//! through HAProxy from outside, loses nothing; and `dpkg --purge` stops it all.
//!
//! The container shares the host's network (no `--private-network`), so every
//! port comes from the harness's free ports and the test reaches the services on
//! loopback. etcd is the harness's, on the host: no unit of the package runs it,
//! and the test reads registrations from it directly. redis-server and HAProxy are
//! Debian's, inside: the node-agent's unit binds to `redis-server@.service` and the
//! HAProxy drop-in extends `haproxy.service`, which is what is under test.
//!
//! Needs root, `mmdebstrap` and `systemd-nspawn` (scripts/install-deps.sh) and
//! takes minutes, so it is `#[ignore]`d and scripts/test.sh runs it on its own.
//! It says `SKIPPED:` and passes when not root or when the container cannot boot.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use harness::process::Process;
use harness::{free_port, Etcd};

/// The root file system: Debian's own systemd, redis-server and HAProxy.
const SUITE: &str = "bookworm";
const PACKAGES: [&str; 5] = ["systemd", "systemd-sysv", "dbus", "redis-server", "haproxy"];
/// Bumped when the way the root file system is made changes (invalidates caches).
const ROOTFS_VERSION: u32 = 1;

const CLUSTER: &str = "redis-1";
const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const REDIS_PASSWORD: &str = "systemd-test-s3cret";
/// The four services of the package, one node-agent standing for its template.
const UNITS: [&str; 4] = ["dnsd.service", "dictator.service", "observer.service", "redis-node-agent@redis-1-node-1.service"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn skip(why: &str) {
    println!("SKIPPED: {why}");
    eprintln!("SKIPPED: {why}");
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

// ---------------------------------------------------------------------------
// The root file system, built once and cached as a tarball.

/// Where built root file systems are kept between runs (and across worktrees).
fn cache_dir() -> PathBuf {
    std::env::var_os("REDIS_TOPOLOGY_ROOTFS_CACHE").map_or_else(|| PathBuf::from("/var/cache/redis-topology-test"), PathBuf::from)
}

/// The cached tarball of [`PACKAGES`], built with mmdebstrap when missing. Its
/// name is its recipe, so a changed package list builds a new one (and the stale
/// ones are deleted: the disk is not infinite).
fn rootfs_tarball() -> PathBuf {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("rootfs-{SUITE}-{}-v{ROOTFS_VERSION}.tar", PACKAGES.join("+"));
    let tarball = dir.join(&name);
    if tarball.is_file() {
        println!("root file system: cached {}", tarball.display());
        return tarball;
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with("rootfs-") && file != name {
            let _ = std::fs::remove_file(&path);
        }
    }
    let partial = dir.join(format!("{name}.{}.partial", std::process::id()));
    let started = Instant::now();
    let output = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--quiet"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        // Documentation and translations only cost space here.
        .args([
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
        ])
        // The test starts what it needs itself: Debian's default redis-server and
        // HAProxy would take ports 6379 and others on the shared network at boot.
        .arg("--customize-hook=chroot \"$1\" systemctl disable redis-server.service haproxy.service")
        .arg("--format=tar")
        .arg(SUITE)
        .arg(&partial)
        .output()
        .unwrap_or_else(|e| panic!("cannot run mmdebstrap ({e}): run scripts/install-deps.sh"));
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        panic!("mmdebstrap failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    std::fs::rename(&partial, &tarball).unwrap();
    println!("root file system: built {} in {:?}", tarball.display(), started.elapsed());
    tarball
}

// ---------------------------------------------------------------------------
// The container.

/// A booted container, powered off and deleted on drop; if the test process dies
/// instead, a reaper child (which outlives it) kills the container and deletes
/// its root file system.
struct Container {
    nspawn: Process,
    /// The container's PID 1 (its systemd), as the host sees it.
    leader: u32,
    root: PathBuf,
    reaper: Option<Child>,
}

/// Directories of containers are named after the test process, so that one left by
/// a test killed before its reaper ran can be recognised and deleted.
const DIR_PREFIX: &str = "redis-topology-systemd-";

fn sweep_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(DIR_PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path()).or_else(|_| std::fs::remove_file(entry.path()));
        }
    }
}

enum Boot {
    Up(Container),
    /// systemd-nspawn could not run a container here: why.
    Impossible(String),
}

impl Container {
    fn boot(tarball: &Path) -> Boot {
        sweep_stale_roots();
        let root = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&root).unwrap();
        // The reaper: stdin is a pipe only this process writes; when it closes (this
        // process exited, however) the reaper kills the container and deletes it.
        let reaper = Command::new("sh")
            .arg("-c")
            .arg(r#"read -r leader; read -r _; [ -n "$leader" ] && kill -9 "$leader"; sleep 1; rm -rf "$0" "$0.log""#)
            .arg(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let status = Command::new("tar").arg("-C").arg(&root).arg("-xf").arg(tarball).status().unwrap();
        assert!(status.success(), "cannot unpack {}", tarball.display());

        let mut nspawn = Command::new("systemd-nspawn");
        nspawn
            .args(["--register=no", "--keep-unit", "--boot", "--console=read-only", "--quiet"])
            .arg(format!("--machine=rt-test-{}", std::process::id()))
            .arg("--directory")
            .arg(&root);
        let nspawn = Process::spawn("systemd-nspawn", nspawn, &root.with_extension("log"));
        let mut container = Container { nspawn, leader: 0, root, reaper: Some(reaper) };

        // Its PID 1 is systemd-nspawn's child.
        let nspawn_pid = container.nspawn.pid().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while container.leader == 0 {
            if !container.nspawn.is_running() {
                return Boot::Impossible(format!("systemd-nspawn exited:\n{}", container.nspawn.log_tail(2000)));
            }
            assert!(Instant::now() < deadline, "no container init after 30 s:\n{}", container.nspawn.log_tail(2000));
            let children = std::fs::read_to_string(format!("/proc/{nspawn_pid}/task/{nspawn_pid}/children")).unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                container.leader = pid.parse().unwrap();
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(reaper) = container.reaper.as_mut() {
            writeln!(reaper.stdin.as_mut().unwrap(), "{}", container.leader).unwrap();
        }

        // Booted: systemctl answers and the boot's jobs are done.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if !container.nspawn.is_running() {
                return Boot::Impossible(format!("the container stopped while booting:\n{}", container.nspawn.log_tail(3000)));
            }
            let out = container.run(&["systemctl", "is-system-running", "--wait"]);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                if state == "degraded" {
                    println!("container booted degraded:\n{}", container.ok(&["systemctl", "--failed", "--no-legend"]));
                }
                break;
            }
            assert!(Instant::now() < deadline, "container not booted after 120 s ({state}):\n{}", container.nspawn.log_tail(3000));
            std::thread::sleep(Duration::from_millis(200));
        }
        Boot::Up(container)
    }

    /// A command inside the container (all its namespaces), with a clean environment.
    fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("--target")
            .arg(self.leader.to_string())
            .args(["--all", "--root", "--wd"])
            .arg("--")
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// [`Container::run`] that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sh(&self, script: &str) -> String {
        self.ok(&["sh", "-c", script])
    }

    /// Writes a file of the container's file system (from the host side).
    fn write(&self, path: &str, text: &str) {
        let path = self.root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }

    /// `systemctl show` properties of a unit.
    fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&["systemctl", "show", "--value", "-p", property, unit]).trim().to_string()
    }

    fn journal(&self, unit: &str) -> String {
        String::from_utf8_lossy(&self.run(&["journalctl", "--no-pager", "-o", "cat", "-u", unit]).stdout).into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() && self.leader != 0 {
            for unit in UNITS.iter().chain(&["haproxy.service"]) {
                eprintln!("----- journal of {unit} -----\n{}", tail(&self.journal(unit), 3000));
            }
        }
        // Nothing in the container is worth a clean shutdown: killing its PID 1
        // kills everything in its PID namespace, and systemd-nspawn then exits.
        // The leader is still unreaped (nspawn waits for it), so its pid is its own.
        if self.leader != 0 && self.nspawn.is_running() {
            let _ = Command::new("kill").args(["-9", &self.leader.to_string()]).status();
        }
        let _ = self.nspawn.terminate(Duration::from_secs(10));
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_file(self.root.with_extension("log"));
    }
}

fn tail(text: &str, bytes: usize) -> &str {
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[start..]
}

// ---------------------------------------------------------------------------
// The package.

/// Builds the .deb from the binaries the tests use (already built, and checked
/// fresh by `harness::binary`): a release build here would cost minutes.
fn build_deb(out: &Path) -> PathBuf {
    let bin_dir = harness::binary("dictator").parent().unwrap().to_path_buf();
    for binary in ["dnsd", "observer", "node-agent", "counter", "redis-topology"] {
        harness::binary(binary);
    }
    let output = Command::new(repo().join("scripts/build-deb.sh"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--fast", "--output"])
        .arg(out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "build-deb.sh failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim().to_string());
    assert!(deb.is_file() && deb.extension().is_some_and(|e| e == "deb"), "build-deb.sh printed {deb:?}");
    deb
}

// ---------------------------------------------------------------------------
// Checks.

fn etcd_get(etcd: &Etcd, key: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut client = etcd.client().await;
        let got = client.get(key, None).await.unwrap();
        got.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    })
}

fn serves_http(port: u16) -> bool {
    harness::etcd::http_get(port, "/healthz").is_some()
}

/// How each service shows that it serves.
struct Ports {
    etcd: String,
    dnsd_http: u16,
    dns: u16,
    dictator: u16,
    observer: u16,
    agents: Vec<u16>,
    redis: Vec<u16>,
    write: u16,
    read: u16,
    stats: u16,
    runtime: u16,
}

impl Ports {
    fn new(etcd: &Etcd) -> Ports {
        Ports {
            etcd: etcd.endpoint(),
            dnsd_http: free_port(),
            dns: free_port(),
            dictator: free_port(),
            observer: free_port(),
            agents: NODES.iter().map(|_| free_port()).collect(),
            redis: NODES.iter().map(|_| free_port()).collect(),
            write: free_port(),
            read: free_port(),
            stats: free_port(),
            runtime: free_port(),
        }
    }
}

/// Does `unit` serve now? (HTTP for the services; a node-agent also its registration.)
fn serves(unit: &str, ports: &Ports, etcd: &Etcd) -> bool {
    match unit {
        "dnsd.service" => serves_http(ports.dnsd_http) && std::net::TcpStream::connect(("127.0.0.1", ports.dns)).is_ok(),
        "dictator.service" => serves_http(ports.dictator),
        "observer.service" => serves_http(ports.observer),
        agent => {
            let i = NODES.iter().position(|n| agent.ends_with(&format!("-{n}.service"))).unwrap();
            serves_http(ports.agents[i]) && etcd_get(etcd, &format!("/nodes/{CLUSTER}/{}", NODES[i])).is_some()
        }
    }
}

/// The settings an operator writes after installing, for this test's ports.
fn configure(c: &Container, ports: &Ports) {
    let etcd = &ports.etcd;
    let dns = format!("127.0.0.1:{}", ports.dns);
    c.write("/etc/redis-topology/redis-password", &format!("{REDIS_PASSWORD}\n"));
    c.write(
        "/etc/redis-topology/dnsd.env",
        &format!(
            "ETCDCTL_ENDPOINTS={etcd}\nREDIS_TOPOLOGY_DNS_LISTEN={dns}\nREDIS_TOPOLOGY_LISTEN=127.0.0.1:{}\nREDIS_TOPOLOGY_CLUSTER={CLUSTER}\nREDIS_TOPOLOGY_HAPROXY_RUNTIME=127.0.0.1:{}\nRUST_LOG=info\n",
            ports.dnsd_http, ports.runtime
        ),
    );
    c.write(
        "/etc/redis-topology/dictator.env",
        &format!(
            "REDIS_TOPOLOGY_LISTEN=127.0.0.1:{}\nREDIS_TOPOLOGY_NAMESERVER={dns}\nETCDCTL_ENDPOINTS={etcd}\nRUST_LOG=info\n\
             REDIS_TOPOLOGY_REDIS_PASSWORD_FILE=/run/credentials/dictator.service/redis-password\n",
            ports.dictator
        ),
    );
    c.write(
        "/etc/redis-topology/observer.env",
        &format!(
            "ETCDCTL_ENDPOINTS={etcd}\nREDIS_TOPOLOGY_DICTATOR=http://127.0.0.1:{}\nREDIS_TOPOLOGY_DNSD=http://127.0.0.1:{}\nREDIS_TOPOLOGY_NAMESERVER={dns}\n\
             REDIS_TOPOLOGY_LISTEN=127.0.0.1:{}\nRUST_LOG=info\nREDIS_TOPOLOGY_REDIS_PASSWORD_FILE=/run/credentials/observer.service/redis-password\n",
            ports.dictator, ports.dnsd_http, ports.observer
        ),
    );
    c.write("/etc/redis-topology/node-agent.env", &format!("ETCDCTL_ENDPOINTS={etcd}\nREDIS_TOPOLOGY_ADVERTISE_ADDRESS=127.0.0.1\nRUST_LOG=info\n"));
    // The agents' password, as deploy/README.md says: the unit's commented line, by a drop-in.
    c.write(
        "/etc/systemd/system/redis-node-agent@.service.d/credentials.conf",
        "[Service]\nEnvironment=REDIS_TOPOLOGY_REDIS_PASSWORD_FILE=%d/redis-password\n",
    );
    for (i, node) in NODES.iter().enumerate() {
        let instance = format!("{CLUSTER}-{node}");
        c.write(
            &format!("/etc/redis-topology/node-agent-{instance}.env"),
            &format!("REDIS_TOPOLOGY_CLUSTER={CLUSTER}\nREDIS_TOPOLOGY_NODE={node}\nREDIS_TOPOLOGY_REDIS=127.0.0.1:{}\nREDIS_TOPOLOGY_LISTEN=127.0.0.1:{}\n", ports.redis[i], ports.agents[i]),
        );
        // Debian's redis-server@<instance>.service reads /etc/redis/redis-<instance>.conf.
        c.write(
            &format!("/etc/redis/redis-{instance}.conf"),
            &format!(
                "bind 127.0.0.1\nport {}\npidfile /run/redis-{instance}/redis-server.pid\n\
                 logfile /var/log/redis/redis-server-{instance}.log\ndir /var/lib/redis\n\
                 dbfilename dump-{instance}.rdb\nsave \"\"\nappendonly no\n\
                 requirepass {REDIS_PASSWORD}\nmasterauth {REDIS_PASSWORD}\n",
                ports.redis[i]
            ),
        );
        c.sh(&format!("chown redis:redis /etc/redis/redis-{instance}.conf && chmod 0640 /etc/redis/redis-{instance}.conf"));
    }
    c.write(
        "/etc/redis-topology/haproxy.env",
        &format!(
            "REDIS_TOPOLOGY_DNSD_DNS={dns}\nREDIS_TOPOLOGY_CLUSTER={CLUSTER}\nREDIS_TOPOLOGY_DOMAIN=cluster.local\nREDIS_TOPOLOGY_WRITE_BIND=127.0.0.1:{}\nREDIS_TOPOLOGY_READ_BIND=127.0.0.1:{}\n\
             REDIS_TOPOLOGY_STATS_BIND=127.0.0.1:{}\nREDIS_TOPOLOGY_RUNTIME_SOCKET=ipv4@127.0.0.1:{}\nREDIS_TOPOLOGY_HAPROXY_LUA=/etc/redis-topology/wait-for-server.lua\n\
             REDIS_TOPOLOGY_REDIS_CHECK_PASSWORD={REDIS_PASSWORD}\n",
            ports.write, ports.read, ports.stats, ports.runtime
        ),
    );
    c.sh("chmod 0600 /etc/redis-topology/redis-password /etc/redis-topology/haproxy.env");
    // HAProxy's drop-in is an example in the package: enabling it is the operator's choice.
    c.sh(
        "mkdir -p /etc/systemd/system/haproxy.service.d && \
         cp /usr/share/redis-topology/examples/haproxy.service.d/redis-topology.conf /etc/systemd/system/haproxy.service.d/ && \
         systemctl daemon-reload",
    );
}

/// `systemctl start` returns once the unit is active, which for Type=notify is
/// READY=1: the service must serve at that moment, not some time later.
fn start_and_check_serving(c: &Container, unit: &str, ports: &Ports, etcd: &Etcd) {
    let started = Instant::now();
    c.ok(&["systemctl", "start", unit]);
    println!("{unit}: active after {:?}, status {:?}", started.elapsed(), c.show(unit, "StatusText"));
    assert_eq!(c.show(unit, "ActiveState"), "active", "{unit}");
    assert!(serves(unit, ports, etcd), "{unit} is active (READY=1) but does not serve yet:\n{}", c.journal(unit));
    assert_eq!(c.show(unit, "Type"), "notify", "{unit}");
}

/// The service runs as a dynamic user, not root, with its sandbox in force.
fn check_dynamic_user(c: &Container, unit: &str) {
    let pid = c.show(unit, "MainPID");
    let status = c.ok(&["cat", &format!("/proc/{pid}/status")]);
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap().split_whitespace().next().unwrap().to_string();
    assert_ne!(uid, "0", "{unit} runs as root");
    assert_eq!(c.show(unit, "DynamicUser"), "yes", "{unit}");
    assert_eq!(c.show(unit, "ProtectSystem"), "strict", "{unit}");
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    if unit == "dnsd.service" {
        // CAP_NET_BIND_SERVICE (bit 10) and nothing else.
        assert_eq!(caps, "0000000000000400", "{unit}: effective capabilities");
    } else {
        assert_eq!(caps, "0000000000000000", "{unit}: effective capabilities");
    }
}

/// Waits until `unit` has been restarted after `restarts` restarts, with a new main
/// process, and serves again.
fn wait_restarted(c: &Container, unit: &str, restarts: u32, old_pid: &str, ports: &Ports, etcd: &Etcd) {
    harness::wait_until(&format!("{unit} restarted and serving"), Duration::from_secs(120), || {
        let now: u32 = c.show(unit, "NRestarts").parse().unwrap_or(0);
        now > restarts
            && c.show(unit, "ActiveState") == "active"
            && c.show(unit, "MainPID") != old_pid
            && serves(unit, ports, etcd)
    });
}

// ---------------------------------------------------------------------------

#[test]
#[ignore = "boots a Debian container under systemd-nspawn (root, minutes): scripts/test.sh runs it on its own"]
fn the_debian_package_runs_under_systemd_and_switches_over_losslessly() {
    let started = Instant::now();
    if std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) != 0 {
        return skip("needs root (systemd-nspawn boots a container)");
    }
    for (program, package) in [("systemd-nspawn", "systemd-container"), ("mmdebstrap", "mmdebstrap"), ("nsenter", "util-linux")] {
        assert!(on_path(program), "{program} missing: install the Debian package {package} (scripts/install-deps.sh)");
    }
    let work = tempfile::tempdir().unwrap();
    let deb = build_deb(work.path());
    println!("package: {} ({} bytes) after {:?}", deb.display(), std::fs::metadata(&deb).unwrap().len(), started.elapsed());
    let tarball = rootfs_tarball();
    let c = match Container::boot(&tarball) {
        Boot::Up(c) => c,
        Boot::Impossible(why) => return skip(&format!("systemd-nspawn cannot boot a container here: {why}")),
    };
    println!("container booted after {:?}", started.elapsed());

    // Installed as an operator does: the package, then the settings.
    std::fs::copy(&deb, c.root.join("root/redis-topology.deb")).unwrap();
    c.ok(&["dpkg", "-i", "/root/redis-topology.deb"]);
    let files = c.ok(&["dpkg", "-L", "redis-topology"]);
    for path in [
        "/usr/bin/redis-topology",
        "/usr/bin/redis-topology-dictator",
        "/usr/bin/redis-topology-dnsd",
        "/usr/bin/redis-topology-observer",
        "/usr/bin/redis-topology-node-agent",
        "/usr/lib/systemd/system/dnsd.service",
        "/usr/lib/systemd/system/redis-node-agent@.service",
        "/etc/redis-topology/dnsd.env",
        "/etc/redis-topology/haproxy.cfg",
    ] {
        assert!(files.lines().any(|l| l == path), "the package lacks {path}:\n{files}");
    }
    let conffiles = c.ok(&["dpkg-query", "--control-show", "redis-topology", "conffiles"]);
    for env in ["dnsd.env", "dictator.env", "observer.env", "node-agent.env", "haproxy.env", "haproxy.cfg"] {
        assert!(conffiles.contains(&format!("/etc/redis-topology/{env}")), "{env} is not a conffile:\n{conffiles}");
    }
    let unit = c.ok(&["systemctl", "cat", "dnsd.service"]);
    assert!(unit.contains("ExecStart=/usr/bin/redis-topology-dnsd --api-token-file ${CREDENTIALS_DIRECTORY}/api-token\n"), "{unit}");
    let secret = c.ok(&["stat", "-c", "%a %U", "/etc/redis-topology/redis-password"]);
    assert_eq!(secret.trim(), "600 root", "postinst creates the secret files root-only");
    // The APIs' bearer token every unit loads: one random token, root-only.
    let token = c.ok(&["stat", "-c", "%a %U", "/etc/redis-topology/api-token"]);
    assert_eq!(token.trim(), "600 root", "postinst makes the api-token root-only");
    let token = c.ok(&["cat", "/etc/redis-topology/api-token"]);
    assert!(token.starts_with("observer:") && token.trim().len() == "observer:".len() + 64, "one random token: {token:?}");

    let etcd = Etcd::start();
    let ports = Ports::new(&etcd);
    configure(&c, &ports);
    // Reinstalling (what an upgrade does to unchanged files) keeps the operator's settings.
    let mine = std::fs::read_to_string(c.root.join("etc/redis-topology/dnsd.env")).unwrap();
    c.ok(&["dpkg", "-i", "/root/redis-topology.deb"]);
    assert_eq!(std::fs::read_to_string(c.root.join("etc/redis-topology/dnsd.env")).unwrap(), mine, "an upgrade overwrote dnsd.env");

    // Each unit is active only once it serves, and runs as a dynamic user.
    for node in NODES {
        c.ok(&["systemctl", "start", &format!("redis-server@{CLUSTER}-{node}.service")]);
    }
    for node in NODES {
        start_and_check_serving(&c, &format!("redis-node-agent@{CLUSTER}-{node}.service"), &ports, &etcd);
    }
    for unit in ["dnsd.service", "dictator.service", "observer.service"] {
        start_and_check_serving(&c, unit, &ports, &etcd);
    }
    for unit in UNITS {
        check_dynamic_user(&c, unit);
    }

    // The redis password reached the agents through LoadCredential=: redis refuses
    // anyone without it, and every agent reports its redis healthy.
    let anonymous = redis_command(ports.redis[0], None, &["PING"]);
    assert!(anonymous.is_err_and(|e| e.contains("NOAUTH")), "redis must require the password");
    for node in NODES {
        let key = format!("/nodes/{CLUSTER}/{node}");
        harness::wait_until(&format!("{node} registered healthy"), Duration::from_secs(30), || {
            etcd_get(&etcd, &key)
                .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
                .is_some_and(|v| v["healthy"] == true)
        });
    }
    let credential = c.ok(&["cat", &format!("/run/credentials/redis-node-agent@{CLUSTER}-node-1.service/redis-password")]);
    assert_eq!(credential.trim(), REDIS_PASSWORD, "the credential the agent reads");
    println!("units active, serving, authenticated after {:?}", started.elapsed());

    // The watchdog restarts hung services: all four frozen at once.
    let before: Vec<(u32, String)> =
        UNITS.iter().map(|u| (c.show(u, "NRestarts").parse().unwrap(), c.show(u, "MainPID"))).collect();
    for unit in UNITS {
        c.ok(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", unit]);
    }
    let frozen = Instant::now();
    for (unit, (restarts, pid)) in UNITS.iter().zip(&before) {
        wait_restarted(&c, unit, *restarts, pid, &ports, &etcd);
        assert!(c.journal(unit).contains("Watchdog timeout"), "{unit} restarted, but not by its watchdog:\n{}", c.journal(unit));
    }
    println!("watchdog: the four hung services restarted and serving {:?} after SIGSTOP", frozen.elapsed());

    // Restart= brings them back after kill -9.
    let before: Vec<(u32, String)> =
        UNITS.iter().map(|u| (c.show(u, "NRestarts").parse().unwrap(), c.show(u, "MainPID"))).collect();
    for unit in UNITS {
        c.ok(&["systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", unit]);
    }
    for (unit, (restarts, pid)) in UNITS.iter().zip(&before) {
        wait_restarted(&c, unit, *restarts, pid, &ports, &etcd);
    }
    println!("kill -9: the four services restarted after {:?}", started.elapsed());

    // `systemctl stop` deregisters a node-agent: its key is gone when stop returns
    // (the lease is revoked on SIGTERM, not left to expire).
    let agent3 = format!("redis-node-agent@{CLUSTER}-node-3.service");
    let key3 = format!("/nodes/{CLUSTER}/node-3");
    assert!(etcd_get(&etcd, &key3).is_some());
    c.ok(&["systemctl", "stop", &agent3]);
    assert_eq!(etcd_get(&etcd, &key3), None, "node-3 still registered after systemctl stop");
    start_and_check_serving(&c, &agent3, &ports, &etcd);

    switchover_through_haproxy(&c, &ports, &etcd);

    // An upgrade over settings still using a name from before the REDIS_TOPOLOGY_
    // prefix restarts nothing (the services would come up on defaults) and says
    // what to rename; once renamed with migrate-env, the next one restarts them.
    let pids: Vec<String> = UNITS.iter().map(|u| c.show(u, "MainPID")).collect();
    c.sh("echo LOG_FORMAT=text >> /etc/redis-topology/observer.env");
    let upgrade = c.run(&["dpkg", "-i", "/root/redis-topology.deb"]);
    let said = String::from_utf8_lossy(&upgrade.stderr).into_owned();
    assert!(upgrade.status.success(), "{said}");
    assert!(said.contains("rename LOG_FORMAT to REDIS_TOPOLOGY_LOG_FORMAT") && said.contains("services not restarted"), "{said}");
    assert_eq!(UNITS.iter().map(|u| c.show(u, "MainPID")).collect::<Vec<_>>(), pids, "an upgrade over old names restarted a service");
    c.ok(&["redis-topology", "migrate-env", "--write", "/etc/redis-topology/observer.env"]);
    assert!(c.ok(&["cat", "/etc/redis-topology/observer.env"]).contains("\nREDIS_TOPOLOGY_LOG_FORMAT=text\n"));
    c.ok(&["dpkg", "-i", "/root/redis-topology.deb"]);
    for (unit, pid) in UNITS.iter().zip(&pids) {
        harness::wait_until(&format!("{unit} restarted by the upgrade"), Duration::from_secs(30), || {
            c.show(unit, "ActiveState") == "active" && c.show(unit, "MainPID") != *pid
        });
    }
    println!("upgrade: held back over an old name, restarted after migrate-env, at {:?}", started.elapsed());

    // Purging stops the services first (prerm; the agents deregister) and keeps
    // only a secret file that holds a secret.
    c.ok(&["dpkg", "--purge", "redis-topology"]);
    for unit in UNITS {
        let state = c.run(&["systemctl", "is-active", unit]);
        assert_ne!(String::from_utf8_lossy(&state.stdout).trim(), "active", "{unit} still runs after purge");
    }
    for node in NODES {
        assert_eq!(etcd_get(&etcd, &format!("/nodes/{CLUSTER}/{node}")), None, "{node} still registered after purge");
    }
    let etc = c.root.join("etc/redis-topology");
    assert!(etc.join("redis-password").is_file(), "purge deleted a secret");
    assert!(!etc.join("etcd-password").exists(), "purge left the empty secret file postinst created");
    assert!(!etc.join("dnsd.env").exists() && !c.root.join("usr/bin/redis-topology-dnsd").exists(), "purge left files");
    println!("the systemd test took {:?}", started.elapsed());
}

/// One RESP command to redis on loopback: the reply as text, or the error.
fn redis_command(port: u16, password: Option<&str>, args: &[&str]) -> Result<String, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let mut connection = client.get_connection_with_timeout(Duration::from_secs(2)).map_err(|e| e.to_string())?;
    if let Some(password) = password {
        redis::cmd("AUTH").arg(password).query::<String>(&mut connection).map_err(|e| e.to_string())?;
    }
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query::<redis::Value>(&mut connection).map(|v| format!("{v:?}")).map_err(|e| e.to_string())
}

/// The operator's command inside the container, against the test's etcd.
fn cli(c: &Container, ports: &Ports, args: &[&str]) -> String {
    let mut command = vec![
        "env".to_string(),
        format!("ETCDCTL_ENDPOINTS={}", ports.etcd),
        format!("REDIS_TOPOLOGY_NAMESERVER=127.0.0.1:{}", ports.dns),
        "REDIS_TOPOLOGY_REDIS_PASSWORD_FILE=/etc/redis-topology/redis-password".to_string(),
        "redis-topology".to_string(),
    ];
    command.extend(args.iter().map(|a| a.to_string()));
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    c.ok(&command)
}

fn switchover_through_haproxy(c: &Container, ports: &Ports, etcd: &Etcd) {
    // --force: the three instances share the container's host, which placement refuses otherwise.
    cli(c, ports, &["define", CLUSTER, "--master", "node-1", "--slave", "node-2", "--slave", "node-3", "--force"]);
    harness::wait_until("the first topology applied", Duration::from_secs(60), || {
        etcd_get(etcd, &format!("/status/{CLUSTER}"))
            .and_then(|v| serde_json::from_str::<serde_json::Value>(&v).ok())
            .is_some_and(|s| s["result"] == "ok")
    });
    c.ok(&["systemctl", "start", "haproxy.service"]);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ports.write)).is_ok(),
        "haproxy.service active but its write frontend does not listen:\n{}",
        c.journal("haproxy.service")
    );
    harness::wait_until("writes through HAProxy", Duration::from_secs(30), || {
        redis_command(ports.write, Some(REDIS_PASSWORD), &["SET", "systemd-test", "1"]).is_ok()
    });

    // The counter writes through HAProxy from the host while the master moves.
    let log = c.root.with_extension("counter.log");
    let mut counter = Command::new(harness::binary("counter"));
    counter
        .args(["--redis", &format!("127.0.0.1:{}", ports.write), "--rate", "200", "--duration-secs", "12", "--json"])
        .env("REDIS_TOPOLOGY_REDIS_PASSWORD", REDIS_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut counter = counter.spawn().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let report = cli(c, ports, &["switchover", CLUSTER, "--to", "node-2", "--wait"]);
    println!("switchover:\n{report}");
    assert!(counter.try_wait().unwrap().is_none(), "the counter stopped before the switchover was done: it proves nothing");
    let output = counter.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let _ = std::fs::remove_file(&log);
    let tally: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("counter printed no JSON ({e}): {stdout}"));
    println!("counter: {}", tally["tally"]);
    assert!(tally["acked"].as_u64().unwrap() > 0, "nothing acknowledged: {tally}");
    assert_eq!(tally["missing"], 0, "acknowledged writes lost: {tally}");
    assert_eq!(tally["phantom"], 0, "refused writes that landed: {tally}");
    assert!(output.status.success(), "counter: {tally}");
    // And HAProxy now writes to node-2.
    let role = redis_command(ports.redis[1], Some(REDIS_PASSWORD), &["ROLE"]).unwrap();
    assert!(role.contains("master"), "node-2 is not master: {role}");
}
