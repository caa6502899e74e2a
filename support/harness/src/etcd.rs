//! A real single-member etcd: plain (`http://`), or secured as a production one
//! is ([`Etcd::start_secure`]): client TLS with client certificates, and auth
//! with a root user and a service user whose role may touch only one key prefix.

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
    /// Plain-HTTP `/health` (`--listen-metrics-urls`): the client port wants a certificate.
    metrics_port: u16,
    /// etcd's `--auth-token-ttl` (its default is 300 s).
    token_ttl_secs: u64,
}

/// One etcd member on loopback with its own data directory.
pub struct Etcd {
    process: Process,
    client_port: u16,
    peer_port: u16,
    secure: Option<Secure>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("create etcd temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let process = spawn(dir.path(), client_port, peer_port, None);
        let etcd = Etcd { process, client_port, peer_port, secure: None, dir };
        etcd.wait_healthy();
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
            metrics_port: free_port(),
            token_ttl_secs: ttl_secs,
        };
        let (client_port, peer_port) = (free_port(), free_port());
        let process = spawn(dir.path(), client_port, peer_port, Some(&secure));
        let etcd = Etcd { process, client_port, peer_port, secure: Some(secure), dir };
        etcd.wait_healthy();
        etcd.enable_auth();
        etcd
    }

    /// The TLS and auth set-up, for a secured etcd.
    pub fn secure(&self) -> Option<&Secure> {
        self.secure.as_ref()
    }

    /// `http://127.0.0.1:<port>` (`https://` when secured), for `--etcd-endpoints`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.secure.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
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

    /// A connected client (as `root` when secured, so a test may write anywhere).
    pub async fn client(&self) -> etcd_client::Client {
        let options = self.secure.as_ref().map(|s| {
            let read = |p: &PathBuf| std::fs::read(p).expect("read test certificate");
            let tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(&s.ca)))
                .identity(etcd_client::Identity::from_pem(read(&s.client.cert), read(&s.client.key)));
            etcd_client::ConnectOptions::new().with_tls(tls).with_user("root", s.root_password.clone())
        });
        etcd_client::Client::connect([self.endpoint()], options).await.expect("connect to test etcd")
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

    /// kill -9: the member vanishes without a goodbye.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts etcd again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(self.dir.path(), self.client_port, self.peer_port, self.secure.as_ref());
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let port = self.secure.as_ref().map_or(self.client_port, |s| s.metrics_port);
        crate::wait_until("etcd /health", Duration::from_secs(30), || {
            http_get(port, "/health").is_some_and(|body| body.contains("\"true\""))
        });
    }
}

fn spawn(dir: &std::path::Path, client_port: u16, peer_port: u16, secure: Option<&Secure>) -> Process {
    let scheme = if secure.is_some() { "https" } else { "http" };
    let client = format!("{scheme}://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let mut cmd = Command::new("etcd");
    cmd.arg("--name").arg("test")
        .arg("--data-dir").arg(dir.join("data"))
        .arg("--listen-client-urls").arg(&client)
        .arg("--advertise-client-urls").arg(&client)
        .arg("--listen-peer-urls").arg(&peer)
        .arg("--initial-advertise-peer-urls").arg(&peer)
        .arg("--initial-cluster").arg(format!("test={peer}"))
        .arg("--log-level").arg("warn");
    if let Some(s) = secure {
        cmd.arg("--cert-file").arg(&s.server.cert)
            .arg("--key-file").arg(&s.server.key)
            .arg("--trusted-ca-file").arg(&s.ca)
            .arg("--client-cert-auth")
            .arg("--listen-metrics-urls").arg(format!("http://127.0.0.1:{}", s.metrics_port))
            .arg("--auth-token-ttl").arg(s.token_ttl_secs.to_string());
    }
    Process::spawn("etcd", cmd, &dir.join("etcd.log"))
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
