//! The Sentinel listener (`--sentinel-listen`): RESP2 over TCP, framed by the
//! `redis-protocol` crate, each command answered by [`sentinel::answer`] from the
//! state [`Live`] serves, and `+switch-master` pushed to subscribers as the
//! published masters move. Also registers this replica at `/sentinels/<run id>`
//! under a lease, so the other replicas list it in `SENTINEL sentinels`.
//!
//! Bad input never panics: a request over [`MAX_REQUEST`] bytes, a malformed frame
//! or a frame that is not an array of bulk strings gets a protocol error and the
//! connection is closed (as redis does).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use redis_protocol::codec::Resp2;
use redis_protocol::error::RedisProtocolError;
use redis_protocol::resp2::types::BytesFrame as Frame;
use service::cli::EtcdArgs;
use service::etcd::KeptLease;
use service::Shutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_util::codec::{Decoder, Encoder, Framed};
use topology::records::SentinelRecord;

use crate::live::Live;
use crate::sentinel::{self, Identity, Session, Switch};

/// The largest request accepted, in bytes. Sentinel commands are a few words; this
/// bounds what one connection can make dnsd buffer.
pub const MAX_REQUEST: usize = 16 * 1024;

/// TTL of the lease `/sentinels/<run id>` is held under.
const LEASE_TTL: Duration = Duration::from_secs(10);

/// A fresh run id: 40 hexadecimal digits, like redis's.
pub fn new_run_id() -> String {
    let mut id = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    id.truncate(40);
    id
}

/// Accepts connections until `shutdown`, each served on its own task.
pub async fn serve(listener: TcpListener, live: Arc<Live>, me: Identity, shutdown: Shutdown) {
    let me = Arc::new(me);
    let ids = AtomicU64::new(1);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.requested() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let id = ids.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(stream, peer, live.clone(), me.clone(), id, shutdown.clone()));
            }
            Err(error) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!(%error, "cannot accept a Sentinel connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, live: Arc<Live>, me: Arc<Identity>, id: u64, shutdown: Shutdown) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, Bounded::default());
    let mut session = Session::new(id);
    // Subscribed to master changes only while the client is.
    let mut switches: Option<broadcast::Receiver<Switch>> = None;
    loop {
        let reply = tokio::select! {
            frame = framed.next() => match frame {
                None => return,
                Some(Err(error)) => {
                    tracing::debug!(%peer, %error, "closing a Sentinel connection after bad input");
                    let _ = framed.send(sentinel::error(format!("ERR Protocol error: {error}"))).await;
                    linger_close(framed.into_inner()).await;
                    return;
                }
                Some(Ok(frame)) => match command(frame) {
                    Some(args) => sentinel::answer(&live.records(), &me, &mut session, &args),
                    None => sentinel::Reply {
                        frames: vec![sentinel::error("ERR Protocol error: a command is an array of bulk strings")],
                        close: true,
                    },
                },
            },
            switch = next_switch(&mut switches) => match switch {
                Ok(switch) => sentinel::Reply { frames: sentinel::deliver(&session, &switch), close: false },
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(%peer, missed, "a Sentinel subscriber fell behind and missed master changes");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = shutdown.requested() => return,
        };
        match (session.subscribed(), switches.is_some()) {
            (true, false) => switches = Some(live.switches()),
            (false, true) => switches = None,
            _ => {}
        }
        for frame in reply.frames {
            if framed.feed(frame).await.is_err() {
                return;
            }
        }
        if framed.flush().await.is_err() {
            return;
        }
        if reply.close {
            linger_close(framed.into_inner()).await;
            return;
        }
    }
}

/// Closes after the client has read our last reply: stop writing, then discard what
/// it still sends for a moment. Closing with unread input would reset the
/// connection, and the client could lose the error that explains why.
async fn linger_close(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut drained = 0usize;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long, and how much, [`linger_close`] discards.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 1 << 20;

async fn next_switch(switches: &mut Option<broadcast::Receiver<Switch>>) -> Result<Switch, broadcast::error::RecvError> {
    match switches {
        Some(receiver) => receiver.recv().await,
        None => std::future::pending().await,
    }
}

/// The arguments of a command: an array of bulk strings.
fn command(frame: Frame) -> Option<Vec<Bytes>> {
    let Frame::Array(items) = frame else { return None };
    items
        .into_iter()
        .map(|item| match item {
            Frame::BulkString(b) | Frame::SimpleString(b) => Some(b),
            _ => None,
        })
        .collect()
}

/// Why a request was refused before it was parsed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("request larger than {MAX_REQUEST} bytes")]
    TooLarge,
    #[error("nested arrays are not commands")]
    Nested,
    #[error("{0}")]
    Protocol(#[from] RedisProtocolError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `redis-protocol`'s RESP2 codec, with the request size bounded and nested arrays
/// refused before decoding (the decoder recurses into them).
#[derive(Debug, Default)]
pub struct Bounded {
    inner: Resp2,
}

impl Decoder for Bounded {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if nested(src) {
            return Err(FrameError::Nested);
        }
        match self.inner.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.len() > MAX_REQUEST => Err(FrameError::TooLarge),
            None => Ok(None),
        }
    }
}

impl Encoder<Frame> for Bounded {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        Ok(self.inner.encode(frame, dst)?)
    }
}

/// Whether the request at the front of `src` is an array holding an array: a
/// command's elements are bulk strings, each `$<len>\r\n<data>\r\n`, so walking
/// their headers finds any element that is not one without parsing it.
fn nested(src: &[u8]) -> bool {
    let line = |at: usize| -> Option<(&[u8], usize)> {
        let end = src.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        Some((&src[at..at + end], at + end + 2))
    };
    let Some((header, mut at)) = line(0) else { return false };
    let Some(count) = header.strip_prefix(b"*").and_then(|n| std::str::from_utf8(n).ok()?.parse::<i64>().ok()) else {
        return false;
    };
    for _ in 0..count {
        match src.get(at) {
            None => return false,
            Some(b'*') => return true,
            Some(b'$') => {}
            // Anything else is not a command: the decoder or `command` refuses it.
            Some(_) => return false,
        }
        let Some((element, next)) = line(at) else { return false };
        let Some(len) = std::str::from_utf8(&element[1..]).ok().and_then(|n| n.parse::<usize>().ok()) else {
            return false;
        };
        at = next.saturating_add(len).saturating_add(2);
    }
    false
}

/// Holds `/sentinels/<run id>` under a lease while dnsd runs, putting it back
/// after etcd comes back; deletes it on shutdown.
pub async fn register(etcd: EtcdArgs, run_id: String, record: SentinelRecord, shutdown: Shutdown) {
    let key = etcd.keys().sentinel(&run_id);
    let value = match serde_json::to_string(&record) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "cannot encode the Sentinel registration");
            return;
        }
    };
    let mut backoff = service::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let hold = async {
        loop {
            match hold_once(&etcd, &key, &value).await {
                Ok(lost) => {
                    tracing::warn!(key, reason = %lost, "Sentinel registration lost; registering again");
                    backoff.reset();
                }
                Err(error) => {
                    let wait = backoff.next_delay();
                    tracing::debug!(key, %error, retry_in_ms = wait.as_millis() as u64, "cannot register the Sentinel listener yet");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    };
    tokio::select! {
        () = hold => {}
        () = shutdown.requested() => {}
    }
    // Leave at once rather than after the lease's TTL, unless etcd is away.
    let leave = async {
        let mut client = etcd.connect().await?;
        client.delete(key.as_str(), None).await
    };
    match tokio::time::timeout(Duration::from_secs(2), leave).await {
        Ok(Ok(_)) => tracing::info!(key, "Sentinel registration removed"),
        _ => tracing::info!(key, "Sentinel registration left to expire with its lease"),
    }
}

async fn hold_once(etcd: &EtcdArgs, key: &str, value: &str) -> Result<service::etcd::LeaseLost, etcd_client::Error> {
    let mut client = etcd.connect().await?;
    let mut lease = KeptLease::grant(&mut client, LEASE_TTL).await?;
    client.put(key, value, Some(etcd_client::PutOptions::new().with_lease(lease.id()))).await?;
    tracing::info!(key, "Sentinel listener registered");
    Ok(lease.lost().await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        Bounded::default().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn commands_decode_and_partial_ones_wait() {
        let frame = decode(b"*2\r\n$4\r\nPING\r\n$2\r\nhi\r\n").unwrap().unwrap();
        assert_eq!(command(frame), Some(vec![Bytes::from("PING"), Bytes::from("hi")]));
        assert!(decode(b"*2\r\n$4\r\nPING\r\n$2\r\n").unwrap().is_none());
    }

    #[test]
    fn oversized_malformed_and_nested_requests_are_errors() {
        let huge = format!("*1\r\n${}\r\n{}", MAX_REQUEST * 2, "x".repeat(MAX_REQUEST + 1));
        assert!(matches!(decode(huge.as_bytes()), Err(FrameError::TooLarge)));
        assert!(matches!(decode(b"*1\r\n$x\r\nab\r\n"), Err(FrameError::Protocol(_))));
        assert!(matches!(decode(b"PING\r\n"), Err(FrameError::Protocol(_))), "inline commands are not RESP");
        let deep = "*1\r\n".repeat(MAX_REQUEST / 4);
        assert!(matches!(decode(deep.as_bytes()), Err(FrameError::Nested)));
        assert!(matches!(decode(b"*2\r\n$1\r\na\r\n*1\r\n*1\r\n"), Err(FrameError::Nested)));
        // Not arrays of bulk strings: decoded, then refused as commands.
        assert_eq!(decode(b":1\r\n").unwrap().map(command), Some(None));
        assert_eq!(decode(b"*1\r\n:1\r\n").unwrap().map(command), Some(None));
    }

    #[test]
    fn run_ids_look_like_redis_ones() {
        let id = new_run_id();
        assert!(topology::keys::is_run_id(&id), "{id}");
        assert_ne!(id, new_run_id());
    }
}
