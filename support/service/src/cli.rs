//! Flags every service shares, and logging set-up.

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
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
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

/// Where etcd is and which key prefix this installation uses.
#[derive(Debug, Clone, Args)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated.
    #[arg(
        long,
        env = "ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd_endpoints: Vec<String>,

    /// Prefix put in front of every etcd key (e.g. `/staging`).
    #[arg(long, env = "ETCD_PREFIX", default_value = "")]
    pub etcd_prefix: String,
}

impl EtcdArgs {
    pub fn keys(&self) -> topology::Keys {
        topology::Keys::new(&self.etcd_prefix)
    }

    /// Connects to etcd. The client reconnects by itself afterwards; this only fails
    /// when no endpoint answers now.
    pub async fn connect(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(std::time::Duration::from_secs(2))
            .with_timeout(std::time::Duration::from_secs(5))
            // etcd answers pings more often than its --grpc-keepalive-min-time
            // (5 s by default) with GOAWAY, which breaks every watch and lease.
            .with_keep_alive(std::time::Duration::from_secs(10), std::time::Duration::from_secs(5));
        etcd_client::Client::connect(&self.etcd_endpoints, Some(options)).await
    }
}
