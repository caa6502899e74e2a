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

/// Asserts that `name --help` documents every flag with its environment variable
/// (as clap prints it: `[env: NAME=...]`, or `[env: NAME]` when unset); returns the
/// help text for further checks.
pub fn assert_documents_flags(name: &str, flags: &[(&str, &str)]) -> String {
    let out = Command::new(binary(name)).arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{name} --help failed");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    for (flag, env) in flags {
        assert!(help.contains(flag), "{name} --help lacks {flag}:\n{help}");
        assert!(
            help.contains(&format!("[env: {env}=")) || help.contains(&format!("[env: {env}]")),
            "{name} --help lacks the environment variable {env}:\n{help}"
        );
    }
    help
}

/// PUTs `body` to `url`; returns the status and the JSON answer (panics if the
/// answer is not JSON: every answer of our APIs is).
pub async fn put_json(url: &str, body: impl Into<reqwest::Body>) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new().put(url).body(body).send().await.expect("PUT");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("read the answer");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text:?}"));
    (status, json)
}

/// For each `(what, body, status, named)`: PUT `body` to `url`, expect `status` and a
/// JSON `error` whose text contains `named` (the field or thing at fault).
pub async fn assert_json_errors(url: &str, cases: Vec<(&str, String, u16, &str)>) {
    for (what, body, status, named) in cases {
        let (got, err) = put_json(url, body).await;
        assert_eq!(got, status, "{what}: {err}");
        let message = err["error"].as_str().unwrap_or_else(|| panic!("{what}: no error text: {err}"));
        assert!(message.contains(named), "{what}: {message}");
    }
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
