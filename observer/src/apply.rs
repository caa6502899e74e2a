//! Applying a topology to one cluster: PUT it to the dictator and, only after it
//! answered 2xx, to dnsd. A failure stops there: DNS never points at a master
//! the dictator did not make. A 2xx whose report lists `failed` members means the
//! new master takes writes but some members are not in place yet: DNS must follow
//! the master all the same (the old one answers READONLY or NOREPLICAS), and the
//! apply counts as failed so that it is retried for those members. A 2xx whose
//! report lists members `unreachable` or `lagging` is a success that is recorded
//! as partial ([`skipped_members`]): those members rejoin on their own trigger. A
//! 2xx that lists `quarantined` members (masters holding writes the master lacks,
//! fenced and left out) is published too, and counts as failed until an operator
//! decides: retrying cannot change it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use service::resolve::{MemberResolver, ResolveError};

use crate::endpoint::Endpoint;

/// Where applying failed; `/status/<cluster>` records it as the `result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Dictator,
    Dnsd,
    /// Applied to the master and published, but members are still to fix.
    Partial,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Dictator => "dictator",
            Stage::Dnsd => "dnsd",
            Stage::Partial => "partial",
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
    /// The dictator's report, when it sent one: with a refusal (the `report`
    /// of its error body), or the 2xx report of an apply dnsd then failed or
    /// that left members `failed`.
    pub report: Option<Value>,
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
    /// The dictator put the master in place, but not these members (from its
    /// report's `failed`: node, action and error of each).
    #[error("the master is in place and published; not done on: {failed}")]
    Incomplete { failed: String },
    /// The dictator left these members out (from its report's `quarantined`):
    /// they hold writes the master lacks. Only an operator can decide.
    #[error("the master is in place and published; quarantined until an operator decides (recover their keys, then apply with force=true): {members}")]
    Quarantined { members: String },
    /// A non-2xx answer, with the service's own `error` when it sent one.
    #[error("PUT {url}: {status}: {error}")]
    Rejected { url: String, status: reqwest::StatusCode, error: String, report: Option<Value> },
}

#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    #[error("HTTP client: {0}")]
    Build(#[from] reqwest::Error),
    #[error(transparent)]
    Tls(#[from] service::tls::TlsError),
}

/// How long an idle connection to the dictator or dnsd is kept for the next PUT:
/// below the services' smallest sensible --http-header-timeout-ms.
pub const POOL_IDLE: Duration = Duration::from_secs(2);

/// What applying needs to talk to the dictator and dnsd.
pub struct Targets {
    pub http: reqwest::Client,
    pub resolver: MemberResolver,
    pub dictator: Endpoint,
    pub dnsd: Endpoint,
    /// Sent as `Authorization: Bearer` (the first of `--api-token-file`).
    token: Option<String>,
}

impl Targets {
    pub fn new(
        resolver: MemberResolver,
        dictator: Endpoint,
        dnsd: Endpoint,
        timeout: Duration,
        token: Option<String>,
        tls: &service::tls::ClientTlsArgs,
    ) -> Result<Targets, HttpClientError> {
        // The services close a connection idle for --http-header-timeout-ms (5 s by
        // default); dropping ours first means a PUT never races that close on a
        // pooled connection (a failed PUT would cost the round a retry).
        let mut builder = reqwest::Client::builder().timeout(timeout).pool_idle_timeout(POOL_IDLE);
        if !dictator.is_https() && !dnsd.is_https() && tls.tls_ca.is_none() {
            // Plain HTTP: no system CA store needed (a minimal host has none, and
            // reqwest's platform verifier refuses to start without one).
            builder = builder.tls_certs_only(Vec::new());
        }
        let http = tls.apply(builder)?.build()?;
        Ok(Targets { http, resolver, dictator, dnsd, token })
    }

    /// Applies `topology` (the JSON as stored in etcd at `mod_revision` `revision`) to
    /// `cluster`. Returns the dictator's report. Both PUTs carry `?revision=`, so
    /// the dictator and dnsd refuse this apply if a newer one reached them first.
    /// `down`, the master a failover found down, is passed on (`?down=`): the
    /// dictator gives it only a short connect timeout.
    pub async fn apply_and_publish(
        &self,
        cluster: &str,
        topology: &[u8],
        revision: i64,
        down: Option<SocketAddr>,
    ) -> Result<Value, ApplyError> {
        let down = down.map(|a| format!("&down={}", a.to_string().replace('[', "%5B").replace(']', "%5D"))).unwrap_or_default();
        let path = format!("/clusters/{cluster}/master?revision={revision}{down}");
        let report = match self.put(&self.dictator, &path, topology).await {
            Ok(report) => report,
            Err(cause) => {
                let report = match &cause {
                    PutError::Rejected { report, .. } => report.clone(),
                    _ => None,
                };
                return Err(ApplyError { stage: Stage::Dictator, cause, report });
            }
        };
        if let Err(cause) = self.put(&self.dnsd, &format!("/clusters/{cluster}/dns?revision={revision}"), topology).await {
            return Err(ApplyError { stage: Stage::Dnsd, cause, report: Some(report) });
        }
        if let Some(failed) = failed_members(&report) {
            return Err(ApplyError { stage: Stage::Partial, cause: PutError::Incomplete { failed }, report: Some(report) });
        }
        if let Some(members) = quarantined_members(&report) {
            return Err(ApplyError { stage: Stage::Partial, cause: PutError::Quarantined { members }, report: Some(report) });
        }
        Ok(report)
    }

    async fn put(&self, endpoint: &Endpoint, path: &str, body: &[u8]) -> Result<Value, PutError> {
        let url = endpoint.url(&self.resolver, path).await?;
        let mut request = self.http.put(&url).header("content-type", "application/json").body(body.to_vec());
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await;
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
            let report = json.get("report").filter(|r| !r.is_null()).cloned();
            Err(PutError::Rejected { url, status, error, report })
        }
    }
}

/// The members a 2xx report says are not in place, as one line; `None` when the
/// apply is complete (or the report is not the dictator's).
fn failed_members(report: &Value) -> Option<String> {
    let failed = report.get("failed")?.as_array().filter(|f| !f.is_empty())?;
    let line = failed
        .iter()
        .map(|f| {
            let field = |name| f.get(name).and_then(Value::as_str).unwrap_or("?");
            format!("{} ({}: {})", field("node"), field("action"), field("error"))
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(line)
}

/// The members a 2xx report says were quarantined, with why, as one line.
fn quarantined_members(report: &Value) -> Option<String> {
    let quarantined = report.get("quarantined")?.as_array().filter(|q| !q.is_empty())?;
    let line = quarantined
        .iter()
        .map(|q| {
            let field = |name| q.get(name).and_then(Value::as_str).unwrap_or("?");
            format!("{} ({})", field("node"), field("reason"))
        })
        .collect::<Vec<_>>()
        .join(", ");
    Some(line)
}

/// The members a 2xx report says were skipped (`unreachable`) or did not show
/// the verification marker in time (`lagging`), as one line; `None` when there
/// are none. The apply stands: the round is recorded as partial, not retried.
pub fn skipped_members(report: &Value) -> Option<String> {
    let list = |field: &str| {
        let members: Vec<String> = report
            .get(field)
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string)).collect())
            .unwrap_or_default();
        (!members.is_empty()).then(|| format!("{field}: {}", members.join(", ")))
    };
    let parts: Vec<String> = ["unreachable", "lagging"].into_iter().filter_map(list).collect();
    (!parts.is_empty()).then(|| format!("applied and published; not in place: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_with_failed_members_is_incomplete() {
        let report = json!({"changed": true, "promoted": true,
            "failed": [{"node": "10.0.0.3:6379", "action": "replicate", "error": "NOPERM"}]});
        assert_eq!(failed_members(&report).as_deref(), Some("10.0.0.3:6379 (replicate: NOPERM)"));
        assert_eq!(failed_members(&json!({"changed": true, "failed": []})), None);
        assert_eq!(failed_members(&json!({"changed": true})), None, "an older dictator's report");
    }

    #[test]
    fn a_report_with_unreachable_or_lagging_members_is_partial() {
        let report = json!({"changed": true, "unreachable": ["127.0.0.1:7000"], "lagging": [], "failed": []});
        assert_eq!(skipped_members(&report).as_deref(), Some("applied and published; not in place: unreachable: 127.0.0.1:7000"));
        let report = json!({"unreachable": ["a:1"], "lagging": ["b:2", "c:3"]});
        assert_eq!(skipped_members(&report).as_deref(), Some("applied and published; not in place: unreachable: a:1; lagging: b:2, c:3"));
        assert_eq!(skipped_members(&json!({"unreachable": [], "lagging": [], "forced": ["x"]})), None, "forced is done, not partial");
        assert_eq!(skipped_members(&json!({})), None);
    }

    #[test]
    fn a_report_with_quarantined_members_names_them_and_why() {
        let report = json!({"changed": true, "failed": [],
            "quarantined": [{"node": "10.0.0.1:6379", "reason": "holding 3 keys with no replication history"}]});
        assert_eq!(quarantined_members(&report).as_deref(), Some("10.0.0.1:6379 (holding 3 keys with no replication history)"));
        assert_eq!(quarantined_members(&json!({"quarantined": []})), None);
        assert_eq!(quarantined_members(&json!({"changed": true})), None, "an older dictator's report");
    }
}
