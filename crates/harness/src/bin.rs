//! The project's own binaries, started as real processes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::Process;

/// Path of a workspace binary (`dictator`, `dnsd`, ...) next to the running test.
/// Test executables live in `target/<profile>/deps/`, binaries one level up;
/// `scripts/test.sh` builds them first.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "{} not found: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// One of the project's services, running with its log in a temp dir.
pub struct Service {
    process: Process,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `name` with `args` and extra environment (`RUST_LOG=info` unless
    /// `env` says otherwise; a failing test prints the log's tail).
    pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Service {
        let dir = tempfile::tempdir().expect("create service temp dir");
        let mut cmd = Command::new(binary(name));
        cmd.args(args).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let process = Process::spawn(name, cmd, &dir.path().join(format!("{name}.log")));
        Service { process, _dir: dir }
    }

    /// Waits until `GET /healthz` on `port` answers.
    pub fn wait_http(&mut self, port: u16) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            assert!(self.process.is_running(), "service exited:\n{}", self.process.log_tail(3000));
            if crate::etcd::http_get(port, "/healthz").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("service not healthy on port {port}:\n{}", self.process.log_tail(3000));
    }

    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    pub fn log(&self) -> String {
        self.process.log_tail(1 << 20)
    }
}
