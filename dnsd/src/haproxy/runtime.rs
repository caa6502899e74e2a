//! A minimal client for HAProxy's runtime API (the `stats socket`), a unix socket
//! path or a `host:port`. [`Runtime::send`]: one command per connection, the answer
//! read until HAProxy closes. [`Runtime::session`]: one connection in interactive
//! (`prompt`) mode for several commands, each answer read up to the `> ` prompt (a
//! fraction of the cost of a connection per command, which matters mid-move).

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::plan::Command;

/// Answers longer than this are refused (a `show servers state` of 8 slots is ~1 KiB).
const MAX_RESPONSE: usize = 1 << 20;

/// Where an HAProxy's runtime API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl FromStr for Target {
    type Err = String;

    /// `host:port` (an IP literal) is TCP; anything else must be an absolute path.
    fn from_str(s: &str) -> Result<Target, String> {
        if let Ok(address) = s.parse::<SocketAddr>() {
            return Ok(Target::Tcp(address));
        }
        if s.starts_with('/') {
            return Ok(Target::Unix(PathBuf::from(s)));
        }
        Err(format!("{s:?} is neither an IP address with a port nor an absolute unix socket path"))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(path) => write!(f, "{}", path.display()),
            Target::Tcp(address) => write!(f, "{address}"),
        }
    }
}

/// A runtime-API exchange that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("HAProxy runtime API {target}: {source}")]
    Io { target: String, source: std::io::Error },
    #[error("HAProxy runtime API {target}: no answer to {command:?} within {timeout:?}")]
    Timeout { target: String, command: String, timeout: Duration },
    #[error("HAProxy runtime API {target}: answer to {command:?} is longer than {MAX_RESPONSE} bytes")]
    TooLong { target: String, command: String },
    #[error("HAProxy runtime API {target}: answer to {command:?} is not UTF-8")]
    NotText { target: String, command: String },
    /// HAProxy answered, but not with what the command does when it succeeds.
    #[error("HAProxy runtime API {target} refused {command:?}: {response:?}")]
    Refused { target: String, command: String, response: String },
}

/// One HAProxy's runtime API.
#[derive(Debug, Clone)]
pub struct Runtime {
    target: Target,
    timeout: Duration,
}

impl Runtime {
    pub fn new(target: Target, timeout: Duration) -> Runtime {
        Runtime { target, timeout }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Sends `line` and returns HAProxy's whole answer.
    pub async fn send(&self, line: &str) -> Result<String, RuntimeError> {
        let exchange = async {
            match &self.target {
                Target::Unix(path) => exchange(tokio::net::UnixStream::connect(path).await?, line).await,
                Target::Tcp(address) => exchange(tokio::net::TcpStream::connect(address).await?, line).await,
            }
        };
        let target = self.target.to_string();
        let bytes = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| RuntimeError::Timeout { target: target.clone(), command: line.to_string(), timeout: self.timeout })?
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::FileTooLarge => RuntimeError::TooLong { target: target.clone(), command: line.to_string() },
                _ => RuntimeError::Io { target: target.clone(), source },
            })?;
        String::from_utf8(bytes).map_err(|_| RuntimeError::NotText { target, command: line.to_string() })
    }

    /// Runs `command`; an answer other than its success answer is an error.
    pub async fn run(&self, command: &Command) -> Result<(), RuntimeError> {
        let line = command.to_string();
        let response = self.send(&line).await?;
        if command.accepts(&response) {
            Ok(())
        } else {
            Err(RuntimeError::Refused { target: self.target.to_string(), command: line, response: response.trim().to_string() })
        }
    }
}

/// An open interactive connection ([`Runtime::session`]).
pub struct Session {
    stream: Box<dyn Stream>,
    target: String,
    timeout: Duration,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What HAProxy prints after each answer in interactive mode.
const PROMPT: &[u8] = b"\n> ";

impl Runtime {
    /// Opens a connection and switches it to interactive mode.
    pub async fn session(&self) -> Result<Session, RuntimeError> {
        let target = self.target.to_string();
        let connect = async {
            let stream: Box<dyn Stream> = match &self.target {
                Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
                Target::Tcp(address) => Box::new(tokio::net::TcpStream::connect(address).await?),
            };
            Ok::<_, std::io::Error>(stream)
        };
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| RuntimeError::Timeout { target: target.clone(), command: "prompt".into(), timeout: self.timeout })?
            .map_err(|source| RuntimeError::Io { target: target.clone(), source })?;
        let mut session = Session { stream, target, timeout: self.timeout };
        session.send("prompt").await?;
        Ok(session)
    }
}

impl Session {
    /// Sends `line` and returns HAProxy's answer (without the prompt).
    pub async fn send(&mut self, line: &str) -> Result<String, RuntimeError> {
        let (target, timeout) = (self.target.clone(), self.timeout);
        let exchange = async {
            self.stream.write_all(format!("{line}\n").as_bytes()).await?;
            let mut answer = Vec::new();
            let mut buffer = [0u8; 4096];
            while !answer.ends_with(PROMPT) {
                let n = self.stream.read(&mut buffer).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "HAProxy closed the connection"));
                }
                answer.extend_from_slice(&buffer[..n]);
                if answer.len() > MAX_RESPONSE {
                    return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "answer too long"));
                }
            }
            answer.truncate(answer.len() - PROMPT.len());
            Ok(answer)
        };
        let bytes = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RuntimeError::Timeout { target: target.clone(), command: line.to_string(), timeout })?
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::FileTooLarge => RuntimeError::TooLong { target: target.clone(), command: line.to_string() },
                _ => RuntimeError::Io { target: target.clone(), source },
            })?;
        String::from_utf8(bytes).map_err(|_| RuntimeError::NotText { target, command: line.to_string() })
    }

    /// Runs `command`; an answer other than its success answer is an error.
    pub async fn run(&mut self, command: &Command) -> Result<(), RuntimeError> {
        let line = command.to_string();
        let response = self.send(&line).await?;
        if command.accepts(&response) {
            Ok(())
        } else {
            Err(RuntimeError::Refused { target: self.target.clone(), command: line, response: response.trim().to_string() })
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, line: &str) -> std::io::Result<Vec<u8>> {
    stream.write_all(format!("{line}\n").as_bytes()).await?;
    let mut response = Vec::new();
    let mut limited = (&mut stream).take(MAX_RESPONSE as u64 + 1);
    limited.read_to_end(&mut response).await?;
    if response.len() > MAX_RESPONSE {
        return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "answer too long"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_socket_addresses_or_absolute_paths() {
        assert_eq!("127.0.0.1:9999".parse(), Ok(Target::Tcp(([127, 0, 0, 1], 9999).into())));
        assert_eq!("[::1]:9999".parse::<Target>().map(|t| t.to_string()), Ok("[::1]:9999".to_string()));
        assert_eq!("/run/haproxy/admin.sock".parse(), Ok(Target::Unix("/run/haproxy/admin.sock".into())));
        assert!("admin.sock".parse::<Target>().is_err());
        assert!("localhost:9999".parse::<Target>().is_err());
        assert!("".parse::<Target>().is_err());
    }
}
