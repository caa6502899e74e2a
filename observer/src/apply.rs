//! Applying a topology to one cluster: PUT it to the dictator and, only after it
//! answered 2xx, to dnsd. A failure stops there: DNS never points at a master
//! the dictator did not make.

use std::time::Duration;

use serde_json::Value;
use service::resolve::MemberResolver;

use crate::endpoint::Endpoint;

/// Where applying failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Read,
    Dictator,
    Dnsd,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Dictator => "dictator",
            Stage::Dnsd => "dnsd",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", .stage.as_str())]
pub struct ApplyError {
    pub stage: Stage,
    pub message: String,
}

/// What applying needs to talk to the dictator and dnsd.
pub struct Targets {
    pub http: reqwest::Client,
    pub resolver: MemberResolver,
    pub dictator: Endpoint,
    pub dnsd: Endpoint,
}

impl Targets {
    pub fn new(resolver: MemberResolver, dictator: Endpoint, dnsd: Endpoint, timeout: Duration) -> Result<Targets, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Targets { http, resolver, dictator, dnsd })
    }

    /// Applies `topology` (the JSON as stored in etcd) to `cluster`. Returns the
    /// dictator's report.
    pub async fn apply_and_publish(&self, cluster: &str, topology: &[u8]) -> Result<Value, ApplyError> {
        let report = self.put(Stage::Dictator, &self.dictator, &format!("/clusters/{cluster}/master"), topology).await?;
        self.put(Stage::Dnsd, &self.dnsd, &format!("/clusters/{cluster}/dns"), topology).await?;
        Ok(report)
    }

    async fn put(&self, stage: Stage, endpoint: &Endpoint, path: &str, body: &[u8]) -> Result<Value, ApplyError> {
        let fail = |message: String| ApplyError { stage, message };
        let url = endpoint.url(&self.resolver, path).await.map_err(fail)?;
        let response = self
            .http
            .put(&url)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| fail(format!("PUT {url}: {e}")))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| fail(format!("PUT {url}: reading the answer: {e}")))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            Ok(json)
        } else {
            let error = json.get("error").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| json.to_string());
            Err(fail(format!("PUT {url}: {status}: {error}")))
        }
    }
}
