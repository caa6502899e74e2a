//! A real single-member etcd.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use crate::free_port;
use crate::process::Process;

/// One etcd member on loopback with its own data directory.
pub struct Etcd {
    process: Process,
    client_port: u16,
    peer_port: u16,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it reports healthy.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("create etcd temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let process = spawn(dir.path(), client_port, peer_port);
        let etcd = Etcd { process, client_port, peer_port, dir };
        etcd.wait_healthy();
        etcd
    }

    /// `http://127.0.0.1:<port>`, for `--etcd-endpoints`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// A connected client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint()], None).await.expect("connect to test etcd")
    }

    /// kill -9: the member vanishes without a goodbye.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts etcd again on the same ports with the same data.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn(self.dir.path(), self.client_port, self.peer_port);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        crate::wait_until("etcd /health", Duration::from_secs(30), || {
            http_get(self.client_port, "/health").is_some_and(|body| body.contains("\"true\""))
        });
    }
}

fn spawn(dir: &std::path::Path, client_port: u16, peer_port: u16) -> Process {
    let client = format!("http://127.0.0.1:{client_port}");
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
