//! Where the dictator and dnsd are: a base URL, whose host may be an SRV name
//! (as the original etcd-trigger allowed). SRV names are resolved through
//! `--nameserver` every time a topology is applied, so a moved service is followed.

use std::net::SocketAddr;

use service::resolve::{MemberResolver, ResolveError};
use topology::{Address, Member};

/// Why a `--dictator` or `--dnsd` URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?}: expected http://host[:port] or https://host[:port]")]
    NoScheme(String),
    #[error("{0:?}: only http:// and https:// are supported")]
    NotHttp(String),
    #[error("{url:?}: {source}")]
    BadHost { url: String, source: topology::AddressError },
}

/// A base URL like `http://127.0.0.1:8000` or `http://dictator.ops.cluster.local`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    scheme: String,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Endpoint {
    /// Whether requests to it use TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }

    pub fn parse(url: &str) -> Result<Endpoint, UrlError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| UrlError::NoScheme(url.to_string()))?;
        if scheme != "http" && scheme != "https" {
            return Err(UrlError::NotHttp(url.to_string()));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let member = Member::parse_host_port(authority)
            .map_err(|source| UrlError::BadHost { url: url.to_string(), source })?;
        Ok(Endpoint {
            scheme: scheme.to_string(),
            host: member.address.to_string(),
            port: member.port,
            path: path.to_string(),
        })
    }

    /// The URL of `path` (starting with `/`), resolving an SRV host when the URL
    /// gave no port.
    pub async fn url(&self, resolver: &MemberResolver, path: &str) -> Result<String, ResolveError> {
        let authority = match (Address::parse(&self.host), self.port) {
            (Ok(Address::Ip(ip)), port) => {
                SocketAddr::new(ip, port.unwrap_or(if self.scheme == "https" { 443 } else { 80 })).to_string()
            }
            (_, Some(port)) => format!("{}:{port}", self.host),
            (_, None) => {
                let srv = resolver.srv(&self.host).await?;
                match srv.first() {
                    Some(addr) => addr.to_string(),
                    None => self.host.clone(),
                }
            }
        };
        Ok(format!("{}://{authority}{}{path}", self.scheme, self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literal_urls_need_no_lookup() {
        let nowhere = MemberResolver::new(&["127.0.0.1:1".parse().unwrap()]).unwrap();
        let e = Endpoint::parse("http://127.0.0.1:8000/").unwrap();
        assert_eq!(e.url(&nowhere, "/clusters/a/master").await.unwrap(), "http://127.0.0.1:8000/clusters/a/master");
        let e = Endpoint::parse("http://[::1]:8000/base").unwrap();
        assert_eq!(e.url(&nowhere, "/x").await.unwrap(), "http://[::1]:8000/base/x");
        let e = Endpoint::parse("http://dictator.local:8000").unwrap();
        assert_eq!(e.url(&nowhere, "/x").await.unwrap(), "http://dictator.local:8000/x");
    }

    #[test]
    fn rejects_what_it_cannot_reach() {
        assert!(Endpoint::parse("127.0.0.1:8000").is_err());
        assert!(Endpoint::parse("ftp://a").is_err());
        assert!(Endpoint::parse("HTTPS://a").is_err());
        assert!(Endpoint::parse("http://a b").is_err());
        assert!(Endpoint::parse("https://a b").is_err());
        // The text operators see after `--dictator: `.
        let shown = |url: &str| Endpoint::parse(url).unwrap_err().to_string();
        assert_eq!(shown("127.0.0.1:8000"), r#""127.0.0.1:8000": expected http://host[:port] or https://host[:port]"#);
        assert_eq!(shown("ftp://a"), r#""ftp://a": only http:// and https:// are supported"#);
        assert!(shown("http://a b").starts_with(r#""http://a b": "#));
    }

    #[tokio::test]
    async fn https_urls_keep_their_scheme_and_default_to_port_443() {
        let nowhere = MemberResolver::new(&["127.0.0.1:1".parse().unwrap()]).unwrap();
        let e = Endpoint::parse("https://127.0.0.1").unwrap();
        assert_eq!(e.url(&nowhere, "/x").await.unwrap(), "https://127.0.0.1:443/x");
        let e = Endpoint::parse("https://dictator.local:8000/base/").unwrap();
        assert_eq!(e.url(&nowhere, "/x").await.unwrap(), "https://dictator.local:8000/base/x");
        let e = Endpoint::parse("http://127.0.0.1").unwrap();
        assert_eq!(e.url(&nowhere, "/x").await.unwrap(), "http://127.0.0.1:80/x");
    }
}
