//! The project's own binaries, started as real processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::process::Process;

const BUILD: &str = "cargo build --workspace --bins";

/// Path of a workspace binary (`dictator`, `dnsd`, ...) next to the running test.
/// Test executables live in `target/<profile>/deps/`, binaries one level up;
/// `scripts/test.sh` builds them first.
///
/// Panics when the binary is missing or older than its sources: `cargo test -p X`
/// builds X's tests but not the binaries of the crates they start, and a test of
/// old code passes or fails for the wrong reason.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = profile_dir.join(name);
    assert!(path.exists(), "{} not found: run `{BUILD}` before these tests", path.display());
    let sources = crate_sources(workspace_root(), name);
    if let Some(newer) = newer_source(&path, &sources) {
        panic!(
            "{} is older than {}, which changed after it was built: run `{BUILD}` before these tests",
            path.display(),
            newer.display()
        );
    }
    path
}

/// The newest of `sources` modified after `binary` was, if any. Equal times count
/// as built: cargo, which writes the binary after reading its sources, agrees.
fn newer_source(binary: &Path, sources: &[PathBuf]) -> Option<PathBuf> {
    let built = modified(binary);
    sources
        .iter()
        .map(|source| (modified(source), source))
        .filter(|(changed, _)| *changed > built)
        .max()
        .map(|(_, source)| source.clone())
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("mtime of {}: {e}", path.display()))
}

fn workspace_root() -> &'static Path {
    let harness = Path::new(env!("CARGO_MANIFEST_DIR"));
    harness.ancestors().nth(2).expect("the harness lives in <workspace>/support/harness")
}

/// The Rust sources (`src/**/*.rs`, `build.rs`) of workspace package `package` and
/// of every workspace package it depends on. Manifests and `Cargo.lock` are left
/// out on purpose: an edit to them alone (a dev-dependency, another crate's lock
/// entry) does not make cargo rebuild the binary, so counting them would make
/// `binary` refuse to run even after the build it asks for.
fn crate_sources(root: &Path, package: &str) -> Vec<PathBuf> {
    let packages = workspace_packages(root);
    let mut seen = BTreeSet::from([package.to_string()]);
    let mut todo = vec![package.to_string()];
    let mut sources = Vec::new();
    while let Some(package) = todo.pop() {
        let (dir, dependencies) = packages
            .get(&package)
            .unwrap_or_else(|| panic!("no workspace package named {package} in {}", root.display()));
        rust_files(&dir.join("src"), &mut sources);
        let build = dir.join("build.rs");
        if build.exists() {
            sources.push(build);
        }
        for dep in dependencies {
            if packages.contains_key(dep) && seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    sources
}

/// Each workspace package's directory and the workspace packages it is built
/// from (normal and build dependencies, not dev-dependencies), as `cargo metadata`
/// reads the manifests.
fn workspace_packages(root: &Path) -> BTreeMap<String, (PathBuf, Vec<String>)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(root)
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let packages = metadata["packages"].as_array().expect("cargo metadata lists packages");
    packages
        .iter()
        .filter_map(|package| {
            let name = text(&package["name"])?;
            let dir = PathBuf::from(text(&package["manifest_path"])?).parent()?.to_path_buf();
            let dependencies = package["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|dep| dep["path"].is_string() && dep["kind"].as_str() != Some("dev"))
                .filter_map(|dep| text(&dep["name"]))
                .collect();
            Some((name, (dir, dependencies)))
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("list {}: {e}", dir.display())).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn file_at(dir: &Path, name: &str, mtime: SystemTime) -> PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).expect("create file");
        file.set_modified(mtime).expect("set mtime");
        path
    }

    #[test]
    fn a_binary_is_stale_when_a_source_changed_after_it_was_built() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t = SystemTime::now() - Duration::from_secs(3600);
        let bin = file_at(dir.path(), "bin", t);
        let older = file_at(dir.path(), "older.rs", t - Duration::from_secs(60));
        let same = file_at(dir.path(), "same.rs", t);
        assert_eq!(newer_source(&bin, &[older.clone(), same.clone()]), None);

        let newer = file_at(dir.path(), "newer.rs", t + Duration::from_secs(1));
        let newest = file_at(dir.path(), "newest.rs", t + Duration::from_secs(60));
        assert_eq!(newer_source(&bin, &[older, newest.clone(), same, newer]), Some(newest));
    }

    #[test]
    fn a_binary_s_sources_include_the_workspace_crates_it_depends_on() {
        let sources = crate_sources(workspace_root(), "dictator");
        let has = |suffix: &str| sources.iter().any(|s| s.ends_with(suffix));
        assert!(has("dictator/src/main.rs") && has("dictator/src/plan.rs"), "{sources:?}");
        assert!(has("support/service/src/lib.rs") && has("support/topology/src/lib.rs"), "{sources:?}");
        assert!(!has("support/harness/src/lib.rs"), "a dev-dependency is not built into the binary");
        assert!(!sources.iter().any(|s| s.components().any(|c| c.as_os_str() == "tests")), "{sources:?}");
    }
}
