//! Who may change state through an HTTP API, and the audit log of every attempt.
//!
//! Every request that is not `GET`/`HEAD` needs `Authorization: Bearer <token>`
//! with a token of `--api-token-file`; reads need one too with `--api-auth-reads`;
//! `GET /healthz` never does. A refused request gets 401 (a JSON [`ApiError`] and
//! `WWW-Authenticate: Bearer`) before any handler runs, so it changes nothing.
//! Without a token file every request passes, as before, and the service says at
//! start that its write API is open.
//!
//! The token file: one token a line, `name:token` to name the caller in the audit
//! log (else it is `line-N`), blank lines and `#` comments ignored. Several tokens
//! let an operator rotate without downtime: add the new one, move the clients, drop
//! the old one; `SIGHUP` re-reads the file ([`ApiAuth::reload_on_sighup`]). Tokens
//! are compared in constant time (`subtle`) against every entry, and never logged:
//! errors name the file and the line, not its content.
//!
//! The audit log (tracing target `audit`): one line per state-changing request,
//! with the caller's address, the token's name, method, path, cluster, topology
//! revision and the answer's status; refusals at WARN. A handler that applies to
//! a default cluster (`PUT /master`, `PUT /dns`) names it with [`AuditCluster`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use clap::Args;
use subtle::ConstantTimeEq;

use crate::http::ApiError;

/// Shortest token accepted: anything shorter is guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// `--api-token-file` and `--api-auth-reads`.
#[derive(Debug, Clone, Default, Args)]
pub struct ApiAuthArgs {
    /// File of API tokens, one a line (`name:token` names the caller in the audit log;
    /// blank lines and # comments ignored; SIGHUP re-reads it). Every request but
    /// GET/HEAD then needs `Authorization: Bearer <token>`. Without it the write API is
    /// open to anyone who reaches the port.
    #[arg(long, env = "REDIS_TOPOLOGY_API_TOKEN_FILE", value_name = "PATH")]
    pub api_token_file: Option<PathBuf>,

    /// Require a token for reads too (every endpoint but /healthz).
    #[arg(long, env = "REDIS_TOPOLOGY_API_AUTH_READS")]
    pub api_auth_reads: bool,
}

/// Why a token file cannot be used. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}, line {line}: {why}")]
    Line { path: String, line: usize, why: &'static str },
    #[error("{path}: no token in the file")]
    Empty { path: String },
}

/// One accepted token and the name the audit log gives its caller.
#[derive(Clone)]
struct Entry {
    name: String,
    secret: Vec<u8>,
}

/// The tokens of one token file. `Debug` shows names only.
#[derive(Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

/// RFC 6750's b64token: what a bearer token may be made of.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/=".contains(c)
}

impl Tokens {
    /// Parses a token file's text; `path` only names it in errors.
    pub fn parse(path: &str, text: &str) -> Result<Tokens, TokenFileError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| TokenFileError::Line { path: path.to_string(), line: line_no, why };
            let (name, secret) = match line.split_once(':') {
                Some((name, secret)) => (name.trim().to_string(), secret.trim()),
                None => (format!("line-{line_no}"), line),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
                return Err(bad("the name before ':' may only hold letters, digits, '-', '_', '.' and '@'"));
            }
            if secret.len() < MIN_TOKEN_LEN {
                return Err(bad("token shorter than 16 characters"));
            }
            if !secret.chars().all(is_token_char) {
                return Err(bad("a token may only hold letters, digits and -._~+/="));
            }
            entries.push(Entry { name, secret: secret.as_bytes().to_vec() });
        }
        if entries.is_empty() {
            return Err(TokenFileError::Empty { path: path.to_string() });
        }
        Ok(Tokens { entries })
    }

    /// Reads and parses a token file.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read { path: shown.clone(), source })?;
        Tokens::parse(&shown, &text)
    }

    /// The name of the entry `presented` matches. Every entry is compared, each in
    /// constant time, so the answer's timing says nothing about which one matched
    /// or how much of a guess was right (only whether its length is one in use).
    pub fn check(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.secret.as_slice().ct_eq(presented)) && found.is_none() {
                found = Some(entry.name.as_str());
            }
        }
        found
    }

    /// The first token: what a client (the observer) sends.
    pub fn first(&self) -> &str {
        // parse() refuses a file without a token, and tokens are ASCII.
        self.entries.first().map_or("", |e| std::str::from_utf8(&e.secret).unwrap_or(""))
    }

    /// The callers' names, in file order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }
}

/// The token in an `Authorization` header value, if it is a bearer token.
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| value[7..].trim_ascii())
}

/// Names the cluster a request acted on when its path does not (`PUT /master`,
/// `PUT /dns`): a handler puts it in its response's extensions for the audit log.
#[derive(Debug, Clone)]
pub struct AuditCluster(pub String);

/// Who sent a request, as the audit log names them: a handler may read it from
/// the request's extensions (the dictator's forced applies).
#[derive(Debug, Clone)]
pub struct Caller {
    pub address: Option<SocketAddr>,
    /// The token's name; `None` when no token file is configured.
    pub token: Option<String>,
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            Some(a) => write!(f, "{a}")?,
            None => f.write_str("?")?,
        }
        write!(f, " (token {})", self.token.as_deref().unwrap_or("none"))
    }
}

/// The authentication of one HTTP API: its tokens (re-readable) and whether reads
/// need one. Cheap to clone.
#[derive(Clone, Default)]
pub struct ApiAuth {
    tokens: Option<Arc<ArcSwap<Tokens>>>,
    file: Option<PathBuf>,
    reads: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("tokens", &self.tokens.as_ref().map(|t| t.load().names().join(",")))
            .field("file", &self.file)
            .field("reads", &self.reads)
            .finish()
    }
}

impl ApiAuth {
    /// No token file: every request passes (audit lines are still written).
    pub fn open() -> ApiAuth {
        ApiAuth::default()
    }

    /// Requires one of `tokens` for writes (and reads with `reads`).
    pub fn with_tokens(tokens: Tokens, reads: bool) -> ApiAuth {
        ApiAuth { tokens: Some(Arc::new(ArcSwap::from_pointee(tokens))), file: None, reads }
    }

    /// From the flags: reads the token file now (an unusable file is an error at
    /// start, never an open API), or warns that the write API is open.
    pub fn from_args(args: &ApiAuthArgs) -> Result<ApiAuth, TokenFileError> {
        match &args.api_token_file {
            Some(path) => {
                let tokens = Tokens::load(path)?;
                tracing::info!(file = %path.display(), callers = ?tokens.names(), reads = args.api_auth_reads,
                    "HTTP API: writes need a bearer token");
                let mut auth = ApiAuth::with_tokens(tokens, args.api_auth_reads);
                auth.file = Some(path.clone());
                Ok(auth)
            }
            None => {
                tracing::warn!("HTTP API: no --api-token-file, so anyone who reaches the port can change state");
                Ok(ApiAuth { reads: false, ..ApiAuth::default() })
            }
        }
    }

    /// Whether a token file is in use.
    pub fn enabled(&self) -> bool {
        self.tokens.is_some()
    }

    /// Re-reads the token file. On error the tokens in use stay.
    pub fn reload(&self) -> Result<(), TokenFileError> {
        let (Some(tokens), Some(path)) = (&self.tokens, &self.file) else { return Ok(()) };
        let fresh = Tokens::load(path)?;
        tracing::info!(file = %path.display(), callers = ?fresh.names(), "HTTP API tokens re-read");
        tokens.store(Arc::new(fresh));
        Ok(())
    }

    /// Re-reads the token file on every SIGHUP (rotation without a restart).
    pub fn reload_on_sighup(&self) {
        if self.file.is_none() {
            return;
        }
        let auth = self.clone();
        crate::shutdown::on_sighup("the token file", "the tokens read before stay", move || auth.reload());
    }

    /// Wraps every route of `app` (its fallbacks included): authentication, then
    /// the audit line of each state-changing request.
    pub fn layer(&self, app: Router) -> Router {
        app.layer(axum::middleware::from_fn_with_state(self.clone(), guard))
    }

    /// Decides one request: `Ok(token name)` (None without a token file, or when
    /// the request needs none) or the refusal.
    fn decide(&self, method: &Method, path: &str, authorization: Option<&HeaderValue>) -> Result<Option<String>, Refusal> {
        let Some(tokens) = &self.tokens else { return Ok(None) };
        let read = method == Method::GET || method == Method::HEAD;
        if read && (path == "/healthz" || !self.reads) {
            return Ok(None);
        }
        let Some(value) = authorization else { return Err(Refusal::Missing) };
        let Some(presented) = bearer(value) else { return Err(Refusal::NotBearer) };
        match tokens.load().check(presented) {
            Some(name) => Ok(Some(name.to_string())),
            None => Err(Refusal::Invalid),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Missing,
    NotBearer,
    Invalid,
}

impl Refusal {
    fn message(self) -> &'static str {
        match self {
            Refusal::Missing => "this endpoint needs a token: send Authorization: Bearer <token>",
            Refusal::NotBearer => "the Authorization header is not a bearer token (Authorization: Bearer <token>)",
            Refusal::Invalid => "the bearer token is not one this service accepts",
        }
    }

    fn challenge(self) -> &'static str {
        match self {
            Refusal::Missing | Refusal::NotBearer => "Bearer realm=\"redis-topology\"",
            Refusal::Invalid => "Bearer realm=\"redis-topology\", error=\"invalid_token\"",
        }
    }
}

/// The `cluster` of `/clusters/{cluster}/…`, and `revision` from the query.
fn audit_fields(path: &str, query: Option<&str>) -> (Option<String>, Option<String>) {
    let cluster = path.strip_prefix("/clusters/").and_then(|rest| rest.split('/').next()).map(str::to_string);
    let revision = query.and_then(|q| {
        q.split('&').find_map(|pair| pair.strip_prefix("revision=")).map(|r| r.chars().take(32).collect())
    });
    (cluster, revision)
}

async fn guard(State(auth): State<ApiAuth>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let address = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let writes = method != Method::GET && method != Method::HEAD;
    let (cluster, revision) = audit_fields(&path, request.uri().query());
    let decision = auth.decide(&method, &path, request.headers().get(header::AUTHORIZATION));
    let token = match decision {
        Ok(token) => token,
        Err(refusal) => {
            tracing::warn!(target: "audit", caller = %address.map_or("?".to_string(), |a| a.to_string()),
                method = %method, path, cluster, revision, status = 401, reason = ?refusal, "refused: not authenticated");
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, refusal.message()).into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(refusal.challenge()));
            return response;
        }
    };
    let caller = Caller { address, token };
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    if writes {
        let cluster = response.extensions().get::<AuditCluster>().map(|c| c.0.clone()).or(cluster);
        tracing::info!(target: "audit", caller = %address.map_or("?".to_string(), |a| a.to_string()),
            token = caller.token.as_deref().unwrap_or("none"), method = %method, path, cluster, revision,
            status = response.status().as_u16(), "state-changing request");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn two() -> Tokens {
        Tokens::parse("t", &format!("# rotation\n\nobserver:{A}\n  {B}  \n")).unwrap()
    }

    #[test]
    fn a_token_file_names_its_callers_and_skips_comments_and_blank_lines() {
        let tokens = two();
        assert_eq!(tokens.names(), ["observer", "line-4"]);
        assert_eq!(tokens.check(A.as_bytes()), Some("observer"));
        assert_eq!(tokens.check(B.as_bytes()), Some("line-4"));
        assert_eq!(tokens.first(), A);
    }

    #[test]
    fn a_wrong_token_a_prefix_or_an_extension_matches_nothing() {
        let tokens = two();
        for wrong in ["", "a", &A[..A.len() - 1], &format!("{A}a"), &A.to_uppercase(), "observer", &format!("observer:{A}")] {
            assert_eq!(tokens.check(wrong.as_bytes()), None, "{wrong:?}");
        }
    }

    #[test]
    fn bad_files_name_the_line_and_never_the_token() {
        let cases = [
            ("short:abc\n", 1, "shorter"),
            (&format!("\n\n{A} x\n") as &str, 3, "may only hold"),
            (&format!(":{A}\n"), 1, "name"),
            (&format!("bad name:{A}\n"), 1, "name"),
        ];
        for (text, line, why) in cases {
            let err = Tokens::parse("/etc/t", text).unwrap_err();
            let shown = err.to_string();
            assert!(shown.contains(&format!("line {line}")) && shown.contains(why), "{shown}");
            assert!(!shown.contains(A) && !shown.contains("abc"), "a token in an error: {shown}");
        }
        assert!(matches!(Tokens::parse("t", "# only a comment\n\n"), Err(TokenFileError::Empty { .. })));
    }

    #[test]
    fn debug_shows_names_only() {
        let shown = format!("{:?}", two());
        assert!(shown.contains("observer") && !shown.contains(A) && !shown.contains(B), "{shown}");
    }

    #[test]
    fn bearer_takes_the_scheme_in_any_case() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer(&v(&format!("Bearer {A}"))), Some(A.as_bytes()));
        assert_eq!(bearer(&v(&format!("bearer  {A} "))), Some(A.as_bytes()));
        assert_eq!(bearer(&v(&format!("Basic {A}"))), None);
        assert_eq!(bearer(&v("Bearer")), None);
    }

    #[test]
    fn writes_need_a_token_reads_only_when_asked_and_healthz_never() {
        let header = HeaderValue::from_str(&format!("Bearer {B}")).unwrap();
        let wrong = HeaderValue::from_static("Bearer cccccccccccccccccccccc");
        let basic = HeaderValue::from_static("Basic dXNlcjpwYXNz");
        for reads in [false, true] {
            let auth = ApiAuth::with_tokens(two(), reads);
            for method in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS] {
                for path in ["/master", "/clusters/x/dns", "/healthz", "/nowhere"] {
                    assert_eq!(auth.decide(&method, path, None), Err(Refusal::Missing), "{method} {path}");
                    assert_eq!(auth.decide(&method, path, Some(&wrong)), Err(Refusal::Invalid));
                    assert_eq!(auth.decide(&method, path, Some(&basic)), Err(Refusal::NotBearer));
                    assert_eq!(auth.decide(&method, path, Some(&header)), Ok(Some("line-4".to_string())));
                }
            }
            for method in [Method::GET, Method::HEAD] {
                assert_eq!(auth.decide(&method, "/healthz", None), Ok(None));
                let read = auth.decide(&method, "/dns", None);
                assert_eq!(read, if reads { Err(Refusal::Missing) } else { Ok(None) }, "{method} reads={reads}");
                assert!(auth.decide(&method, "/dns", Some(&header)).is_ok());
            }
        }
        assert_eq!(ApiAuth::open().decide(&Method::PUT, "/master", None), Ok(None));
    }

    #[test]
    fn the_audit_names_the_cluster_of_the_path_and_the_revision() {
        assert_eq!(audit_fields("/clusters/redis-1/master", Some("force=true&revision=42")),
            (Some("redis-1".to_string()), Some("42".to_string())));
        assert_eq!(audit_fields("/master", None), (None, None));
    }
}
