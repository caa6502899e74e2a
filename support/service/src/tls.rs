//! TLS for the HTTP APIs (rustls, aws-lc-rs provider): the server side
//! (`--tls-cert`, `--tls-key`, and `--tls-client-ca` to require client
//! certificates) served by [`crate::http::serve_with`], and the client side
//! (`--tls-ca`, `--tls-client-cert`, `--tls-client-key`) for a service that calls
//! another's API (the observer).
//!
//! Files are PEM. Errors name the file and the flag, and never hold key material.
//! The server's files are read again on SIGHUP ([`ServerTls::reload_on_sighup`]):
//! a renewed certificate is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Why a TLS set-up cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {path}: {why}")]
    File { flag: &'static str, path: String, why: String },
    #[error("{0} needs {1} too")]
    Pair(&'static str, &'static str),
    #[error("TLS: {0}")]
    Config(String),
}

fn file_error(flag: &'static str, path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::File { flag, path: path.display().to_string(), why: why.to_string() }
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(flag, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(flag, path, e))?;
    if certs.is_empty() {
        return Err(file_error(flag, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn private_key(flag: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    // The parser's error names the PEM problem, never the key's bytes.
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(flag, path, e))
}

fn roots(flag: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(flag, path)? {
        store.add(cert).map_err(|e| file_error(flag, path, e))?;
    }
    Ok(store)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `--tls-cert`, `--tls-key`, `--tls-client-ca`: TLS on the HTTP listener.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this certificate chain (PEM; needs --tls-key). SIGHUP re-reads
    /// it, the key and the client CA.
    #[arg(long, env = "REDIS_TOPOLOGY_TLS_CERT", value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "REDIS_TOPOLOGY_TLS_KEY", value_name = "PATH")]
    pub tls_key: Option<PathBuf>,

    /// Require client certificates signed by this CA (PEM; mutual TLS; needs --tls-cert).
    #[arg(long, env = "REDIS_TOPOLOGY_TLS_CLIENT_CA", value_name = "PATH")]
    pub tls_client_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The server configuration, or `None` for plain HTTP. HTTP/1.1 only (ALPN).
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>, TlsError> {
        let (cert, key) = match (&self.tls_cert, &self.tls_key) {
            (None, None) if self.tls_client_ca.is_some() => return Err(TlsError::Pair("--tls-client-ca", "--tls-cert")),
            (None, None) => return Ok(None),
            (Some(_), None) => return Err(TlsError::Pair("--tls-cert", "--tls-key")),
            (None, Some(_)) => return Err(TlsError::Pair("--tls-key", "--tls-cert")),
            (Some(cert), Some(key)) => (cert, key),
        };
        let chain = certificates("--tls-cert", cert)?;
        let key = private_key("--tls-key", key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match &self.tls_client_ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots("--tls-client-ca", ca)?), provider())
                    .build()
                    .map_err(|e| file_error("--tls-client-ca", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(format!("--tls-cert/--tls-key: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// The listener's TLS configuration, replaced whole when its files are read again:
/// connections accepted afterwards get the new certificate (and client CA), open
/// ones keep theirs. A file that cannot be used leaves the one before in place.
#[derive(Clone)]
pub struct ServerTls {
    args: TlsArgs,
    current: Arc<arc_swap::ArcSwap<ServerConfig>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("tls_cert", &self.args.tls_cert).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads the files now (a bad one stops the start), or `None` for plain HTTP.
    pub fn load(args: &TlsArgs) -> Result<Option<ServerTls>, TlsError> {
        Ok(args.server_config()?.map(|config| ServerTls {
            args: args.clone(),
            current: Arc::new(arc_swap::ArcSwap::new(config)),
        }))
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; on an error the configuration before stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.args.server_config()?.ok_or(TlsError::Pair("--tls-cert", "--tls-key"))?;
        self.current.store(fresh);
        tracing::info!(cert = ?self.args.tls_cert, "TLS certificate re-read");
        Ok(())
    }

    /// Re-reads the files on every SIGHUP (needs a tokio runtime).
    pub fn reload_on_sighup(&self) {
        let tls = self.clone();
        crate::shutdown::on_sighup("the TLS files", "the certificate read before stays", move || tls.reload());
    }
}

/// `--tls-ca`, `--tls-client-cert`, `--tls-client-key`: how a service calls
/// another's `https://` API.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// Trust only this CA (PEM) for https:// URLs; default: the system's CAs.
    #[arg(long, env = "REDIS_TOPOLOGY_TLS_CA", value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) sent to https:// APIs that require one (--tls-client-ca there).
    #[arg(long, env = "REDIS_TOPOLOGY_TLS_CLIENT_CERT", value_name = "PATH")]
    pub tls_client_cert: Option<PathBuf>,

    /// The private key of --tls-client-cert (PEM).
    #[arg(long, env = "REDIS_TOPOLOGY_TLS_CLIENT_KEY", value_name = "PATH")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    /// Applies the flags to a reqwest client builder.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, TlsError> {
        let mut builder = builder;
        if let Some(ca) = &self.tls_ca {
            let pem = std::fs::read(ca).map_err(|e| file_error("--tls-ca", ca, e))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| file_error("--tls-ca", ca, e))?;
            if certs.is_empty() {
                return Err(file_error("--tls-ca", ca, "no PEM certificate in the file"));
            }
            builder = builder.tls_certs_only(certs);
        }
        match (&self.tls_client_cert, &self.tls_client_key) {
            (None, None) => {}
            (Some(_), None) => return Err(TlsError::Pair("--tls-client-cert", "--tls-client-key")),
            (None, Some(_)) => return Err(TlsError::Pair("--tls-client-key", "--tls-client-cert")),
            (Some(cert), Some(key)) => {
                let mut pem = std::fs::read(cert).map_err(|e| file_error("--tls-client-cert", cert, e))?;
                pem.push(b'\n');
                pem.extend(std::fs::read(key).map_err(|e| file_error("--tls-client-key", key, e))?);
                // reqwest's error would not show the key, but say only which files.
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|_| file_error("--tls-client-cert", cert, "not a PEM certificate with the PEM key of --tls-client-key"))?;
                builder = builder.identity(identity);
            }
        }
        Ok(builder)
    }
}
