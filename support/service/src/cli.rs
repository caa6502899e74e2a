//! Flags every service shares, and logging set-up.

use std::fmt;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `--log-format`; the level comes from `RUST_LOG` (default `info`).
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "REDIS_TOPOLOGY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber. Call once, first thing in `main`.
    pub fn init(&self) {
        self.init_quieting(&[]);
    }

    /// Like [`LogArgs::init`], with the `noisy` targets (crates that log a line per
    /// request) at `warn` unless `RUST_LOG` names their family (`hickory` for
    /// `hickory_server`).
    pub fn init_quieting(&self, noisy: &[&str]) {
        let rust_log = std::env::var("RUST_LOG").unwrap_or_default();
        let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let named = |target: &str| rust_log.contains(target.split('_').next().unwrap_or(target));
        for target in noisy.iter().filter(|target| !named(target)) {
            if let Ok(directive) = format!("{target}=warn").parse() {
                filter = filter.add_directive(directive);
            }
        }
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder.json().flatten_event(true).init(),
        }
    }
}

/// Where etcd is, which key prefix this installation uses, and how to prove who
/// we are to it: TLS (`https://` endpoints, a CA, a client certificate) and an etcd
/// user. The TLS and user flags also read etcdctl's own `ETCDCTL_*` variables, so
/// one environment serves both. No secret is held here, only where to read it:
/// the password is read from its file at each connect (so a rotated file is picked
/// up at the next reconnection), and `Debug` and `--help` never show it.
#[derive(Clone, Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated; `https://` for TLS.
    #[arg(
        long,
        env = "ETCDCTL_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// Prefix put in front of every etcd key (e.g. `/staging`).
    #[arg(long, env = "REDIS_TOPOLOGY_ETCD_PREFIX", default_value = "")]
    pub etcd_prefix: String,

    /// PEM file of the CA that signed etcd's server certificate (https endpoints;
    /// default: the system's CAs).
    #[arg(long, env = "ETCDCTL_CACERT")]
    pub etcd_cacert: Option<PathBuf>,

    /// PEM client certificate, for an etcd started with --client-cert-auth (needs --etcd-key).
    #[arg(long, env = "ETCDCTL_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,

    /// PEM private key of --etcd-cert.
    #[arg(long, env = "ETCDCTL_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,

    /// etcd user (etcd auth enabled). Needs --etcd-password-file or ETCDCTL_PASSWORD;
    /// etcdctl's `user:password` form is accepted too, but leaves the password in the environment.
    #[arg(long, env = "ETCDCTL_USER", hide_env_values = true)]
    pub etcd_user: Option<String>,

    /// File holding the etcd user's password (first line; ETCDCTL_PASSWORD is the fallback).
    #[arg(long, env = "REDIS_TOPOLOGY_ETCD_PASSWORD_FILE")]
    pub etcd_password_file: Option<PathBuf>,
}

impl fmt::Debug for EtcdArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `--etcd-user user:password` carries a secret: show the user alone.
        let user = self.etcd_user.as_deref().map(|u| u.split_once(':').map_or(u, |(user, _)| user));
        f.debug_struct("EtcdArgs")
            .field("etcd_endpoints", &self.etcd_endpoints)
            .field("etcd_prefix", &self.etcd_prefix)
            .field("etcd_cacert", &self.etcd_cacert)
            .field("etcd_cert", &self.etcd_cert)
            .field("etcd_key", &self.etcd_key)
            .field("etcd_user", &user)
            .field("etcd_password_file", &self.etcd_password_file)
            .finish()
    }
}

impl EtcdArgs {
    pub fn keys(&self) -> topology::Keys {
        topology::Keys::new(&self.etcd_prefix)
    }

    /// The endpoints, for an error message.
    pub fn endpoints(&self) -> String {
        self.etcd_endpoints.join(",")
    }

    /// Whether TLS or an etcd user is configured.
    pub fn secured(&self) -> bool {
        self.tls() || self.etcd_user.is_some()
    }

    fn tls(&self) -> bool {
        self.etcd_endpoints.iter().any(|e| e.starts_with("https://"))
    }

    /// The user and password to authenticate with, if any: `--etcd-user` with the
    /// password file, else `ETCDCTL_PASSWORD`, else the `user:password` form.
    fn user(&self) -> Result<Option<(String, String)>, String> {
        let Some(user) = &self.etcd_user else {
            if self.etcd_password_file.is_some() {
                return Err("--etcd-password-file needs --etcd-user (ETCDCTL_USER)".into());
            }
            return Ok(None);
        };
        let password = match &self.etcd_password_file {
            Some(path) => Some(crate::secret::read_secret_file(path, "etcd password").map_err(|e| e.to_string())?),
            None => std::env::var("ETCDCTL_PASSWORD").ok().filter(|p| !p.is_empty()),
        };
        match (password, user.split_once(':')) {
            (Some(password), _) => Ok(Some((user.split_once(':').map_or(user.as_str(), |(u, _)| u).to_string(), password))),
            (None, Some((user, password))) if !user.is_empty() && !password.is_empty() => {
                Ok(Some((user.to_string(), password.to_string())))
            }
            (None, _) => Err(format!(
                "etcd user {} has no password: give --etcd-password-file (REDIS_TOPOLOGY_ETCD_PASSWORD_FILE) or ETCDCTL_PASSWORD",
                user.split_once(':').map_or(user.as_str(), |(u, _)| u)
            )),
        }
    }

    fn options(&self) -> Result<etcd_client::ConnectOptions, String> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(std::time::Duration::from_secs(5))
            // etcd answers pings more often than its --grpc-keepalive-min-time
            // (5 s by default) with GOAWAY, which breaks every watch and lease.
            .with_keep_alive(std::time::Duration::from_secs(10), std::time::Duration::from_secs(5))
            // A member cut off from the others' quorum refuses ("no leader") rather
            // than serving a stale view, and the client moves on to another member.
            .with_require_leader(true);
        if let Some((user, password)) = self.user()? {
            // etcd's tokens expire (--auth-token-ttl, 5 min): fetch a new one then.
            options = options.with_user(user, password).with_auto_token_refresh(true);
        }
        let files = self.etcd_cacert.is_some() || self.etcd_cert.is_some();
        if !self.tls() {
            if files {
                return Err("--etcd-cacert/--etcd-cert need https:// endpoints".into());
            }
            return Ok(options);
        }
        if self.etcd_endpoints.iter().any(|e| !e.starts_with("https://")) {
            return Err("endpoints mix https:// and others: use https:// for all".into());
        }
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
        };
        let mut tls = etcd_client::TlsOptions::new().timeout(CONNECT_TIMEOUT);
        tls = match &self.etcd_cacert {
            Some(path) => tls.ca_certificate(etcd_client::Certificate::from_pem(read(path, "etcd CA file")?)),
            None => tls.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read(cert, "etcd client certificate")?,
                read(key, "etcd client key")?,
            ));
        }
        Ok(options.with_tls(tls))
    }

    /// Connects to etcd. The client reconnects by itself afterwards, using one
    /// endpoint at a time and moving on to the next when that one fails
    /// ([`crate::etcd::members`]); this only fails when no endpoint answers now.
    ///
    /// With TLS or a user, one read of a key under the prefix proves now that the CA,
    /// the certificate, the password and the role's permissions all hold, so a wrong
    /// one is an error naming the endpoints within the connect timeout, not a
    /// service that waits for ever. With several endpoints that read also finds a
    /// member that answers, so a dead one costs no failed first request. Every
    /// error names the endpoints.
    pub async fn connect(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let failed = |reason: String| etcd_client::Error::EndpointError(format!("etcd at {}: {reason}", self.endpoints()));
        let options = self.options().map_err(failed)?;
        let connected = async {
            let members = crate::etcd::members::Failover;
            let mut client = etcd_client::Client::connect_with_balanced_channel(&self.etcd_endpoints, Some(options), members)
                .await
                .map_err(|e| self.explain(&e))?;
            if self.secured() || self.etcd_endpoints.len() > 1 {
                let key = self.keys().domain();
                // A member that is down fails the read and the client moves on to
                // the next: one try per member finds one that answers.
                let mut failure = None;
                for _ in 0..self.etcd_endpoints.len() {
                    let probe = etcd_client::GetOptions::new().with_count_only();
                    match client.get(key.as_str(), Some(probe)).await {
                        Ok(_) => {
                            failure = None;
                            break;
                        }
                        Err(e) => failure = Some(e),
                    }
                }
                if let Some(e) = failure {
                    let hint = if self.secured() { " (does the etcd user's role cover --etcd-prefix?)" } else { "" };
                    return Err(format!("reading {key}{hint}: {}", self.explain(&e)));
                }
            }
            Ok::<_, String>(client)
        };
        // The handshake of a TLS endpoint that never answers is bounded too.
        match tokio::time::timeout(CONNECT_TIMEOUT * 3, connected).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(reason)) => Err(failed(reason)),
            Err(_) => Err(failed(format!("no answer within {} s", (CONNECT_TIMEOUT * 3).as_secs()))),
        }
    }
}

impl EtcdArgs {
    /// The error with its causes, and what to check where etcd does not say.
    fn explain(&self, error: &etcd_client::Error) -> String {
        let mut reason = error_chain(error);
        // etcd refuses a client certificate it does not trust with a bare TLS
        // alert, or just shuts the connection (which a client writing its first
        // request sees as a broken pipe or a reset): say what to check.
        let refused = ["connection closed", "BadCertificate", "CertificateRequired", "UnknownCA", "broken pipe", "connection reset"];
        if self.tls() && refused.iter().any(|r| reason.contains(r)) {
            reason.push_str(" (etcd refused the TLS connection: does it trust the CA of --etcd-cert?)");
        }
        reason
    }
}

/// How long a connection to etcd may take (TCP and TLS handshake).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// An etcd error with its causes: tonic keeps the TLS reason ("invalid peer
/// certificate: UnknownIssuer") in `source()`, out of its `Display`.
fn error_chain(error: &etcd_client::Error) -> String {
    let inner: Option<&(dyn std::error::Error + 'static)> = match error {
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::GRpcStatus(status) => Some(status),
        _ => None,
    };
    let mut text = error.to_string();
    let mut source = inner.and_then(std::error::Error::source);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        etcd: EtcdArgs,
    }

    #[test]
    fn the_etcd_user_never_shows_its_password() {
        let cli = Cli::try_parse_from(["t", "--etcd-user", "topology:hunter2", "--etcd-endpoints", "https://e:2379"]).unwrap();
        let shown = format!("{:?}", cli.etcd);
        assert!(shown.contains("topology") && !shown.contains("hunter2"), "{shown}");
        assert_eq!(cli.etcd.user().unwrap(), Some(("topology".to_string(), "hunter2".to_string())));
        // --help shows no value of ETCDCTL_USER, which may be `user:password`.
        let command = Cli::command();
        let user = command.get_arguments().find(|a| a.get_id() == "etcd_user").unwrap();
        assert!(user.is_hide_env_values_set());
    }

    #[test]
    fn a_user_needs_a_password_and_a_password_file_needs_a_user() {
        let cli = Cli::try_parse_from(["t", "--etcd-user", "topology"]).unwrap();
        // ETCDCTL_PASSWORD is not set in the test environment.
        if std::env::var_os("ETCDCTL_PASSWORD").is_none() {
            let err = cli.etcd.user().unwrap_err();
            assert!(err.contains("topology") && err.contains("--etcd-password-file"), "{err}");
        }
        let cli = Cli::try_parse_from(["t", "--etcd-password-file", "/nowhere"]).unwrap();
        assert!(cli.etcd.user().unwrap_err().contains("--etcd-user"));
        let cli = Cli::try_parse_from(["t", "--etcd-cert", "/c.pem"]);
        assert!(cli.is_err(), "a certificate without its key is refused by clap");
    }
}
