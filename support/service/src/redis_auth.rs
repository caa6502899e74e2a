//! Redis AUTH, shared by every service that talks to redis: an optional ACL user
//! and a password read from a file (never from the command line, where `ps` shows
//! it), or from `REDIS_TOPOLOGY_REDIS_PASSWORD`. The password is never printed, not even by `Debug`.
//! [`connect`] opens an authenticated connection to one instance, within [`Timeouts`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};

/// `--redis-user`, `--redis-password-file` (global, so subcommands take them too).
#[derive(Debug, Clone, Args)]
pub struct RedisAuthArgs {
    /// ACL user to authenticate to redis as (needs --redis-password-file or REDIS_TOPOLOGY_REDIS_PASSWORD).
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS_USER", global = true)]
    pub redis_user: Option<String>,

    /// File holding the redis password (read once at start; REDIS_TOPOLOGY_REDIS_PASSWORD is the fallback).
    #[arg(long, env = "REDIS_TOPOLOGY_REDIS_PASSWORD_FILE", global = true)]
    pub redis_password_file: Option<PathBuf>,
}

impl RedisAuthArgs {
    /// Reads the password (file first, then `REDIS_TOPOLOGY_REDIS_PASSWORD`).
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        let password = match &self.redis_password_file {
            Some(path) => {
                if std::env::var_os("REDIS_TOPOLOGY_REDIS_PASSWORD").is_some() {
                    tracing::warn!("both REDIS_TOPOLOGY_REDIS_PASSWORD and --redis-password-file are set; using the file");
                }
                Some(Credentials::read_password_file(path)?)
            }
            None => std::env::var("REDIS_TOPOLOGY_REDIS_PASSWORD").ok().filter(|p| !p.is_empty()),
        };
        if self.redis_user.is_some() && password.is_none() {
            anyhow::bail!("--redis-user needs a password (--redis-password-file or REDIS_TOPOLOGY_REDIS_PASSWORD)");
        }
        Ok(Credentials::new(self.redis_user.clone(), password))
    }
}

/// Redis AUTH: an optional ACL user and an optional password. The password is
/// never printed, not even by `Debug`.
#[derive(Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    password: Option<String>,
}

impl Credentials {
    pub fn new(user: Option<String>, password: Option<String>) -> Credentials {
        Credentials { user, password }
    }

    /// Reads the password from `path` (its first line; a trailing newline is not
    /// part of it).
    pub fn read_password_file(path: &Path) -> anyhow::Result<String> {
        Ok(crate::secret::read_secret_file(path, "redis password")?)
    }

    /// `REDIS_TOPOLOGY_REDIS_USER` and `REDIS_TOPOLOGY_REDIS_PASSWORD` from the environment (none when unset):
    /// for tools and tests that take no flags.
    pub fn from_env() -> Credentials {
        let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        Credentials::new(var("REDIS_TOPOLOGY_REDIS_USER"), var("REDIS_TOPOLOGY_REDIS_PASSWORD"))
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// A client for `host:port` that authenticates with these credentials.
    pub fn client(&self, host: &str, port: u16) -> redis::RedisResult<redis::Client> {
        let mut settings = RedisConnectionInfo::default();
        if let Some(user) = &self.user {
            settings = settings.set_username(user);
        }
        if let Some(password) = self.password() {
            settings = settings.set_password(password);
        }
        let info = ConnectionAddr::Tcp(host.to_string(), port).into_connection_info()?.set_redis_settings(settings);
        redis::Client::open(info)
    }

    /// [`Credentials::client`] for a socket address.
    pub fn client_for(&self, addr: SocketAddr) -> redis::RedisResult<redis::Client> {
        self.client(&addr.ip().to_string(), addr.port())
    }
}

/// Timeouts for talking to redis.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect: Duration::from_millis(1000), command: Duration::from_millis(2000) }
    }
}

/// Why [`connect`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectError {
    /// The address and credentials make no client.
    #[error("{0}")]
    Client(redis::RedisError),
    /// Refused, timed out, or AUTH failed.
    #[error("cannot connect: {0}")]
    Connect(redis::RedisError),
}

/// Connects to one instance, authenticating with `credentials` (if any).
pub async fn connect(
    addr: SocketAddr,
    timeouts: Timeouts,
    credentials: &Credentials,
) -> Result<MultiplexedConnection, ConnectError> {
    connect_host(&addr.ip().to_string(), addr.port(), timeouts, credentials).await
}

/// [`connect`] to `host` (a name, or an IP without brackets) and `port`.
pub async fn connect_host(
    host: &str,
    port: u16,
    timeouts: Timeouts,
    credentials: &Credentials,
) -> Result<MultiplexedConnection, ConnectError> {
    let client = credentials.client(host, port).map_err(ConnectError::Client)?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.command));
    client.get_multiplexed_async_connection_with_config(&config).await.map_err(ConnectError::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_file_loses_only_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for (content, expected) in [("s3cret\n", "s3cret"), ("s3cret", "s3cret"), ("s3cret\r\n", "s3cret"), (" sp ace \n", " sp ace ")] {
            std::fs::write(&path, content).unwrap();
            assert_eq!(Credentials::read_password_file(&path).unwrap(), expected);
        }
        for bad in ["", "\n", "a\nb\n"] {
            std::fs::write(&path, bad).unwrap();
            assert!(Credentials::read_password_file(&path).is_err(), "{bad:?}");
        }
        let err = Credentials::read_password_file(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("missing"), "{err:#}");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new(Some("agent".into()), Some("hunter2".into()));
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && shown.contains("agent") && shown.contains("redacted"), "{shown}");
    }
}
