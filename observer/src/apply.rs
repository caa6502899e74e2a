//! Applying a topology to one cluster: PUT it to the dictator and, only after it
//! answered 2xx, to dnsd. A failure stops there: DNS never points at a master
//! the dictator did not make.

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use service::resolve::{MemberResolver, ResolveError};

use crate::endpoint::Endpoint;

/// Where applying failed; `/status/<cluster>` records it as the `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Dictator,
    Dnsd,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dictator => "dictator",
            Stage::Dnsd => "dnsd",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed apply: the stage, and what went wrong there.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {cause}")]
pub struct ApplyError {
    pub stage: Stage,
    /// Recorded as the status's `error`, without the stage.
    pub cause: PutError,
}

/// Why one PUT failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The endpoint's SRV name did not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("PUT {url}: {source}")]
    Send { url: String, source: reqwest::Error },
    #[error("PUT {url}: reading the answer: {source}")]
    Answer { url: String, source: reqwest::Error },
    /// A non-2xx answer, with the service's own `error` when it sent one.
    #[error("PUT {url}: {status}: {error}")]
    Rejected { url: String, status: reqwest::StatusCode, error: String },
}

#[derive(Debug, thiserror::Error)]
#[error("HTTP client: {0}")]
pub struct HttpClientError(#[from] reqwest::Error);

/// What applying needs to talk to the dictator and dnsd.
pub struct Targets {
    pub http: reqwest::Client,
    pub resolver: MemberResolver,
    pub dictator: Endpoint,
    pub dnsd: Endpoint,
}

impl Targets {
    pub fn new(resolver: MemberResolver, dictator: Endpoint, dnsd: Endpoint, timeout: Duration) -> Result<Targets, HttpClientError> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Targets { http, resolver, dictator, dnsd })
    }

    /// Applies `topology` (the JSON as stored in etcd at `mod_revision` `revision`) to
    /// `cluster`. Returns the dictator's report. Both PUTs carry `?revision=`, so
    /// the dictator and dnsd refuse this apply if a newer one reached them first.
    pub async fn apply_and_publish(&self, cluster: &str, topology: &[u8], revision: i64) -> Result<Value, ApplyError> {
        let at = |stage| move |cause| ApplyError { stage, cause };
        let report = self.put(&self.dictator, &format!("/clusters/{cluster}/master?revision={revision}"), topology).await.map_err(at(Stage::Dictator))?;
        self.put(&self.dnsd, &format!("/clusters/{cluster}/dns?revision={revision}"), topology).await.map_err(at(Stage::Dnsd))?;
        Ok(report)
    }

    async fn put(&self, endpoint: &Endpoint, path: &str, body: &[u8]) -> Result<Value, PutError> {
        let url = endpoint.url(&self.resolver, path).await?;
        let response = self
            .http
            .put(&url)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(source) => return Err(PutError::Send { url, source }),
        };
        let status = response.status();
        let text = match response.text().await {
            Ok(text) => text,
            Err(source) => return Err(PutError::Answer { url, source }),
        };
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(json)
        } else {
            let error = json.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| json.to_string());
            Err(PutError::Rejected { url, status, error })
        }
    }
}
