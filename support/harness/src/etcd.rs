//! A real etcd: one member, plain (`http://`) or secured as a production one is
//! ([`Etcd::start_secure`]: client TLS with client certificates, and auth with a
//! root user and a service user whose role may touch only one key prefix), or a
//! real cluster of several members ([`Etcd::start_cluster`]) whose members can be
//! killed and restarted one by one ([`Etcd::kill_member`], [`Etcd::leader`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use std::path::PathBuf;

use crate::free_port;
use crate::process::Process;
use crate::tls::{CertFiles, TestCa};

/// The etcd user the services run as in a secured etcd.
pub const SERVICE_USER: &str = "redis-topology";
/// Its role: readwrite on [`Secure::prefix`] and nothing else.
pub const SERVICE_ROLE: &str = "redis-topology";

/// How a secured etcd is set up, and the files a client needs.
pub struct Secure {
    /// The CA that signed the server's and the clients' certificates.
    pub ca: PathBuf,
    pub server: CertFiles,
    /// A client certificate whose common name is [`SERVICE_USER`].
    pub client: CertFiles,
    pub root_password: String,
    /// [`SERVICE_USER`]'s password, in a file (`--etcd-password-file`).
    pub password_file: PathBuf,
    /// The one prefix [`SERVICE_ROLE`] may read and write, e.g. `/redis-topology`.
    pub prefix: String,
    /// etcd's `--auth-token-ttl` (its default is 300 s).
    token_ttl_secs: u64,
}

/// etcd on loopback: one member or several, each with its own data directory.
pub struct Etcd {
    members: Vec<Member>,
    secure: Option<Secure>,
    dir: tempfile::TempDir,
}

/// One member of an [`Etcd`].
struct Member {
    name: String,
    process: Process,
    client_port: u16,
    peer_port: u16,
    /// Plain-HTTP `/health` (`--listen-metrics-urls`) of a secured member: its
    /// client port wants a certificate.
    metrics_port: Option<u16>,
}

impl Etcd {
    /// Starts a one-member etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        Etcd::start_cluster(1)
    }

    /// Starts a cluster of `members` (`--initial-cluster-state new`), each on its
    /// own free ports, and waits until every member reports healthy (the cluster
    /// has a leader).
    pub fn start_cluster(members: usize) -> Etcd {
        assert!(members >= 1, "an etcd cluster has at least one member");
        let dir = tempfile::tempdir().expect("create etcd temp dir");
        let members = (0..members)
            .map(|i| Member::new(format!("etcd-{i}"), free_port(), free_port(), None))
            .collect();
        Etcd::spawn_all(members, None, dir)
    }

    fn spawn_all(mut members: Vec<Member>, secure: Option<Secure>, dir: tempfile::TempDir) -> Etcd {
        let cluster = initial_cluster(&members);
        for member in &mut members {
            member.process = spawn(dir.path(), member, &cluster, secure.as_ref());
        }
        let etcd = Etcd { members, secure, dir };
        for i in 0..etcd.members.len() {
            etcd.wait_healthy(i);
        }
        etcd
    }

    /// Starts etcd with client TLS (`--client-cert-auth`: a client needs a
    /// certificate of the test CA) and auth enabled: a `root` user, and
    /// [`SERVICE_USER`] whose role may read and write only under `prefix`.
    pub fn start_secure(prefix: &str) -> Etcd {
        Etcd::start_secure_with_token_ttl(prefix, 300)
    }

    /// [`Etcd::start_secure`] whose auth tokens expire after `ttl_secs`, to see
    /// long-lived clients through an expiry.
    pub fn start_secure_with_token_ttl(prefix: &str, ttl_secs: u64) -> Etcd {
        let dir = tempfile::tempdir().expect("create etcd temp dir");
        let ca = TestCa::new(dir.path(), "etcd");
        let password_file = dir.path().join("etcd-password");
        std::fs::write(&password_file, "service-s3cret\n").expect("write etcd password");
        let secure = Secure {
            ca: ca.cert.clone(),
            server: ca.server("server"),
            client: ca.client("client", SERVICE_USER),
            root_password: "root-s3cret".into(),
            password_file,
            prefix: prefix.to_string(),
            token_ttl_secs: ttl_secs,
        };
        let member = Member::new("etcd-0".into(), free_port(), free_port(), Some(free_port()));
        let etcd = Etcd::spawn_all(vec![member], Some(secure), dir);
        etcd.enable_auth();
        etcd
    }

    /// The TLS and auth set-up, for a secured etcd.
    pub fn secure(&self) -> Option<&Secure> {
        self.secure.as_ref()
    }

    /// Every member's client URL, `http://127.0.0.1:<port>` (`https://` when
    /// secured), comma-separated: the value of `--etcd-endpoints`.
    pub fn endpoint(&self) -> String {
        self.endpoints().join(",")
    }

    /// Every member's client URL, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.member_endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn member_endpoint(&self, i: usize) -> String {
        let scheme = if self.secure.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The first member's client port.
    pub fn client_port(&self) -> u16 {
        self.members[0].client_port
    }

    /// How many members the cluster has (running or not).
    pub fn members(&self) -> usize {
        self.members.len()
    }

    /// The key prefix the services use: empty, or the secured etcd's.
    pub fn prefix(&self) -> &str {
        self.secure.as_ref().map_or("", |s| s.prefix.as_str())
    }

    /// The etcd flags a service needs: `--etcd-endpoints`, and when secured the
    /// CA, the client certificate, [`SERVICE_USER`], its password file and the prefix.
    pub fn service_args(&self) -> Vec<String> {
        let mut args = vec!["--etcd-endpoints".to_string(), self.endpoint()];
        if let Some(s) = &self.secure {
            let path = |p: &PathBuf| p.display().to_string();
            args.extend([
                "--etcd-cacert".into(), path(&s.ca),
                "--etcd-cert".into(), path(&s.client.cert),
                "--etcd-key".into(), path(&s.client.key),
                "--etcd-user".into(), SERVICE_USER.into(),
                "--etcd-password-file".into(), path(&s.password_file),
                "--etcd-prefix".into(), s.prefix.clone(),
            ]);
        }
        args
    }

    /// A connected client (as `root` when secured, so a test may write anywhere),
    /// to the members that run now: etcd-client balances requests over all its
    /// endpoints, and would send some to a killed member.
    pub async fn client(&self) -> etcd_client::Client {
        let running: Vec<String> =
            (0..self.members.len()).filter(|&i| self.members[i].process.pid().is_some()).map(|i| self.member_endpoint(i)).collect();
        let endpoints = if running.is_empty() { self.endpoints() } else { running };
        self.client_to(&endpoints).await
    }

    /// A client of member `i` alone.
    pub async fn member_client(&self, i: usize) -> etcd_client::Client {
        self.client_to(&[self.member_endpoint(i)]).await
    }

    async fn client_to(&self, endpoints: &[String]) -> etcd_client::Client {
        let options = self.secure.as_ref().map(|s| {
            let read = |p: &PathBuf| std::fs::read(p).expect("read test certificate");
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&s.ca)))
                .identity(etcd_client::Identity::from_pem(read(&s.client.cert), read(&s.client.key)));
            etcd_client::ConnectOptions::new().with_tls(tls).with_user("root", s.root_password.clone())
        });
        etcd_client::Client::connect(endpoints, options).await.expect("connect to test etcd")
    }

    /// Creates the users and roles with etcdctl, then turns auth on.
    fn enable_auth(&self) {
        let Some(s) = &self.secure else { return };
        let role_range = format!("{}/", s.prefix.trim_end_matches('/'));
        let service_password = std::fs::read_to_string(&s.password_file).expect("read etcd password");
        let steps: Vec<Vec<String>> = vec![
            vec!["role".into(), "add".into(), "root".into()],
            vec!["user".into(), "add".into(), format!("root:{}", s.root_password)],
            vec!["user".into(), "grant-role".into(), "root".into(), "root".into()],
            vec!["role".into(), "add".into(), SERVICE_ROLE.into()],
            vec!["role".into(), "grant-permission".into(), SERVICE_ROLE.into(), "--prefix=true".into(), "readwrite".into(), role_range],
            vec!["user".into(), "add".into(), format!("{SERVICE_USER}:{}", service_password.trim_end())],
            vec!["user".into(), "grant-role".into(), SERVICE_USER.into(), SERVICE_ROLE.into()],
            vec!["auth".into(), "enable".into()],
        ];
        for step in steps {
            let output = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                // Not --endpoints: etcdctl refuses it beside an ETCDCTL_ENDPOINTS in our environment.
                .env("ETCDCTL_ENDPOINTS", self.endpoint())
                .arg(format!("--cacert={}", s.ca.display()))
                .arg(format!("--cert={}", s.server.cert.display()))
                .arg(format!("--key={}", s.server.key.display()))
                .args(&step)
                .output()
                .expect("run etcdctl (scripts/install-deps.sh installs etcd-client)");
            assert!(
                output.status.success(),
                "etcdctl {}: {}",
                step.first().map_or("", String::as_str),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// kill -9 of every member: etcd vanishes without a goodbye.
    pub fn kill(&mut self) {
        for member in &mut self.members {
            member.process.kill();
        }
    }

    /// Starts every member again on the same ports with the same data, and waits
    /// until all report healthy.
    pub fn restart(&mut self) {
        self.kill();
        let cluster = initial_cluster(&self.members);
        for member in &mut self.members {
            member.process = spawn(self.dir.path(), member, &cluster, self.secure.as_ref());
        }
        for i in 0..self.members.len() {
            self.wait_healthy(i);
        }
    }

    /// kill -9 of member `i` alone.
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].process.kill();
    }

    /// Starts member `i` again on its ports with its data, and waits until it
    /// reports healthy (it rejoined a cluster with a leader).
    pub fn restart_member(&mut self, i: usize) {
        self.members[i].process.kill();
        let cluster = initial_cluster(&self.members);
        self.members[i].process = spawn(self.dir.path(), &self.members[i], &cluster, self.secure.as_ref());
        self.wait_healthy(i);
    }

    /// Whether member `i` runs (it was not killed).
    pub fn member_running(&mut self, i: usize) -> bool {
        self.members[i].process.is_running()
    }

    /// The member that leads now, as etcd's maintenance status API tells: the one
    /// whose own id is the leader id it reports. `None` while there is no leader
    /// (an election runs, or too few members are up).
    pub async fn leader(&self) -> Option<usize> {
        for i in 0..self.members.len() {
            if self.members[i].process.pid().is_none() {
                continue;
            }
            let mut client = self.member_client(i).await;
            let status = tokio::time::timeout(Duration::from_secs(2), client.status()).await;
            if let Ok(Ok(status)) = status
                && status.header().is_some_and(|h| h.member_id() == status.leader())
            {
                return Some(i);
            }
        }
        None
    }

    /// Waits until a member leads, and returns it.
    pub async fn wait_leader(&self) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(leader) = self.leader().await {
                return leader;
            }
            assert!(std::time::Instant::now() < deadline, "no etcd member leads after 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn wait_healthy(&self, i: usize) {
        let member = &self.members[i];
        let port = member.metrics_port.unwrap_or(member.client_port);
        crate::wait_until(&format!("{} /health", member.name), Duration::from_secs(30), || {
            http_get(port, "/health").is_some_and(|body| body.contains("\"true\""))
        });
    }
}

impl Member {
    /// A member not started yet.
    fn new(name: String, client_port: u16, peer_port: u16, metrics_port: Option<u16>) -> Member {
        Member { name, process: Process::not_started(), client_port, peer_port, metrics_port }
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }
}

/// `--initial-cluster`: `name=peer-url` of every member.
fn initial_cluster(members: &[Member]) -> String {
    members.iter().map(|m| format!("{}={}", m.name, m.peer_url())).collect::<Vec<_>>().join(",")
}

fn spawn(dir: &std::path::Path, member: &Member, cluster: &str, secure: Option<&Secure>) -> Process {
    let scheme = if secure.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
    let peer = member.peer_url();
    // A token of this temp dir: members of two test clusters never take each other in.
    let token = dir.file_name().map_or_else(|| "test".into(), |n| n.to_string_lossy().into_owned());
    let mut cmd = Command::new("etcd");
    cmd.arg("--name").arg(&member.name)
        .arg("--data-dir").arg(dir.join(&member.name))
        .arg("--listen-client-urls").arg(&client)
        .arg("--advertise-client-urls").arg(&client)
        .arg("--listen-peer-urls").arg(&peer)
        .arg("--initial-advertise-peer-urls").arg(&peer)
        .arg("--initial-cluster").arg(cluster)
        .arg("--initial-cluster-state").arg("new")
        .arg("--initial-cluster-token").arg(token)
        .arg("--log-level").arg("warn");
    if let Some(s) = secure {
        cmd.arg("--cert-file").arg(&s.server.cert)
            .arg("--key-file").arg(&s.server.key)
            .arg("--trusted-ca-file").arg(&s.ca)
            .arg("--client-cert-auth")
            .arg("--auth-token-ttl").arg(s.token_ttl_secs.to_string());
    }
    if let Some(port) = member.metrics_port {
        cmd.arg("--listen-metrics-urls").arg(format!("http://127.0.0.1:{port}"));
    }
    Process::spawn(&member.name, cmd, &dir.join(format!("{}.log", member.name)))
}

/// A minimal HTTP/1.0 GET, so the harness needs no HTTP client of its own.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_get_a_key() {
        let etcd = Etcd::start();
        let mut client = etcd.client().await;
        client.put("/harness/key", "value", None).await.unwrap();
        let resp = client.get("/harness/key", None).await.unwrap();
        assert_eq!(resp.kvs()[0].value_str().unwrap(), "value");
    }

    #[tokio::test]
    async fn a_cluster_survives_its_leader_and_a_restarted_member_catches_up() {
        let mut etcd = Etcd::start_cluster(3);
        assert_eq!(etcd.endpoint().split(',').count(), 3);
        let leader = etcd.wait_leader().await;
        etcd.kill_member(leader);
        assert!(!etcd.member_running(leader));
        let next = etcd.wait_leader().await;
        assert_ne!(next, leader, "a killed member cannot lead");
        etcd.client().await.put("/k", "while-down", None).await.unwrap();
        etcd.restart_member(leader);
        // The restarted member serves what was written while it was down.
        let got = etcd.member_client(leader).await.get("/k", None).await.unwrap();
        assert_eq!(got.kvs()[0].value_str().unwrap(), "while-down");
        etcd.kill();
        assert!((0..3).all(|i| !etcd.member_running(i)));
        etcd.restart();
        let got = etcd.client().await.get("/k", None).await.unwrap();
        assert_eq!(got.kvs()[0].value_str().unwrap(), "while-down");
    }

    #[tokio::test]
    async fn restart_keeps_data_and_port() {
        let mut etcd = Etcd::start();
        etcd.client().await.put("/k", "v", None).await.unwrap();
        etcd.kill();
        assert!(http_get(etcd.client_port(), "/health").is_none(), "killed etcd still answers");
        etcd.restart();
        let resp = etcd.client().await.get("/k", None).await.unwrap();
        assert_eq!(resp.kvs()[0].value_str().unwrap(), "v");
    }
}
