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
    /// `prompt` was sent (it goes out with the first commands, saving a round trip).
    prompting: bool,
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
        Ok(Session { stream, target, timeout: self.timeout, prompting: false })
    }
}

impl Session {
    /// Sends `line` and returns HAProxy's answer (without the prompt).
    pub async fn send(&mut self, line: &str) -> Result<String, RuntimeError> {
        let mut answers = self.send_all(&[line.to_string()]).await?;
        Ok(answers.pop().unwrap_or_default())
    }

    /// Sends `lines` in one write (HAProxy runs them in order) and returns their
    /// answers, in order. Mid-move this is one round trip instead of one per command.
    pub async fn send_all(&mut self, lines: &[String]) -> Result<Vec<String>, RuntimeError> {
        let (target, timeout) = (self.target.clone(), self.timeout);
        let what = lines.join("; ");
        let mut out = String::new();
        let mut expected = lines.len();
        if !self.prompting {
            out.push_str("prompt\n");
            expected += 1;
        }
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        let exchange = async {
            self.stream.write_all(out.as_bytes()).await?;
            let mut answer = Vec::new();
            let mut buffer = [0u8; 4096];
            while count(&answer, PROMPT) < expected {
                let n = self.stream.read(&mut buffer).await?;
                if n == 0 {
                    return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "HAProxy closed the connection"));
                }
                answer.extend_from_slice(&buffer[..n]);
                if answer.len() > MAX_RESPONSE {
                    return Err(std::io::Error::new(std::io::ErrorKind::FileTooLarge, "answer too long"));
                }
            }
            Ok(answer)
        };
        let bytes = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| RuntimeError::Timeout { target: target.clone(), command: what.clone(), timeout })?
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::FileTooLarge => RuntimeError::TooLong { target: target.clone(), command: what.clone() },
                _ => RuntimeError::Io { target: target.clone(), source },
            })?;
        let text = String::from_utf8(bytes).map_err(|_| RuntimeError::NotText { target, command: what })?;
        let mut answers: Vec<String> = text.split("\n> ").map(str::to_string).collect();
        answers.pop(); // after the last prompt: nothing
        if !self.prompting {
            answers.remove(0); // the answer to `prompt`
            self.prompting = true;
        }
        Ok(answers)
    }

    /// Runs `command`; an answer other than its success answer is an error.
    pub async fn run(&mut self, command: &Command) -> Result<(), RuntimeError> {
        self.run_all(std::slice::from_ref(command)).await
    }

    /// Runs `commands` in one round trip; the first whose answer is not its success
    /// answer is the error. HAProxy runs the later ones all the same, so callers only
    /// batch commands that are safe whatever an earlier one did ([`batches`]).
    pub async fn run_all(&mut self, commands: &[Command]) -> Result<(), RuntimeError> {
        if commands.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = commands.iter().map(ToString::to_string).collect();
        let answers = self.send_all(&lines).await?;
        for (i, (command, line)) in commands.iter().zip(lines).enumerate() {
            let response = answers.get(i).map_or("", String::as_str);
            if !command.accepts(response) {
                return Err(RuntimeError::Refused { target: self.target.clone(), command: line, response: response.trim().to_string() });
            }
        }
        Ok(())
    }
}

/// `commands` cut after every address change: what follows one (`health up`,
/// `state ready`) must not run if HAProxy refused the address, or the slot would be
/// readied at its old one.
pub fn batches(commands: &[Command]) -> Vec<&[Command]> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, command) in commands.iter().enumerate() {
        if matches!(command, Command::Addr { .. }) {
            out.push(&commands[start..=i]);
            start = i + 1;
        }
    }
    if start < commands.len() {
        out.push(&commands[start..]);
    }
    out
}

/// Non-overlapping occurrences of `needle` in `haystack`.
fn count(haystack: &[u8], needle: &[u8]) -> usize {
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= haystack.len() {
        if &haystack[i..i + needle.len()] == needle {
            n += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    n
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
    fn batches_end_at_each_address_change() {
        let (b, s) = ("w".to_string(), "master1".to_string());
        let maint = Command::Maint { backend: b.clone(), server: s.clone() };
        let addr = Command::Addr { backend: b.clone(), server: s.clone(), address: ([10, 0, 0, 2], 6379).into() };
        let ready = Command::Ready { backend: b, server: s };
        let commands = [maint.clone(), addr.clone(), ready.clone(), addr.clone(), ready.clone()];
        let cut = batches(&commands);
        assert_eq!(cut, [&[maint.clone(), addr.clone()][..], &[ready.clone(), addr.clone()][..], &[ready.clone()][..]]);
        assert_eq!(batches(&[maint.clone(), ready.clone()]), [&[maint, ready][..]]);
        assert!(batches(&[]).is_empty());
        assert_eq!(batches(std::slice::from_ref(&addr)), [std::slice::from_ref(&addr)]);
    }

    #[test]
    fn prompts_are_counted_without_overlap() {
        assert_eq!(count(b"\n> \n> x\n> ", PROMPT), 3);
        assert_eq!(count(b"", PROMPT), 0);
        assert_eq!(count(b"\n>", PROMPT), 0);
    }

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
