//! How a client spreads over several etcd members: one member at a time, and the
//! next one as soon as that one fails.
//!
//! etcd-client's own channel balances each request over every endpoint, and a
//! member that is down keeps its share: tonic's lazy connection to it reports
//! itself ready and fails the request (connection refused), so with one member of
//! three dead about a third of all requests fail for as long as it stays down, and
//! a client made afresh does no better. Here every request goes to the current
//! member; a transport error, an `Unavailable` answer (etcd's "no leader", with
//! `require_leader`) or a stream that breaks (the member died under a watch or a
//! lease keep-alive) moves the client on to the next member, so the request that
//! saw the failure fails (its caller retries, as it does after any etcd error)
//! and the next one goes to a live member.
//!
//! A member that failed is remembered for [`AVOID_FOR`] by every client of the
//! process, so a client made after the failure (a watch cycle connects afresh)
//! starts on a live one. Clients start on a random member, spreading a fleet's
//! load, and stay on it (like etcd's Go client): a watch and the reads beside it
//! see the same member's history.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use etcd_client::{BalancedChannelBuilder, Channel};
use http::Uri;
use tokio::sync::mpsc;
use tonic::transport::channel::Change;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service};

type Request = http::Request<tonic::body::Body>;
type Response = http::Response<tonic::body::Body>;

/// How long a failed member is passed over when a client picks one.
pub const AVOID_FOR: Duration = Duration::from_secs(10);

/// gRPC's `UNAVAILABLE`: etcd's "no leader", "leader changed", "request timed out".
const GRPC_UNAVAILABLE: &str = "14";

/// Builds the [`OneAtATime`] channel for `Client::connect_with_balanced_channel`.
pub struct Failover;

impl BalancedChannelBuilder for Failover {
    type Error = etcd_client::Error;

    fn balanced_channel(self, buffer_size: usize) -> Result<(Channel, mpsc::Sender<Change<Uri, Endpoint>>), Self::Error> {
        let (tx, rx) = mpsc::channel(buffer_size.max(1));
        let members = Arc::new(Members { changes: Mutex::new(rx), state: Mutex::new(State::default()) });
        Ok((Channel::Custom(BoxCloneSyncService::new(OneAtATime { members, ready: None })), tx))
    }
}

/// The endpoints of one client, and which one it uses now.
struct Members {
    /// The endpoints etcd-client inserts (all of them before its first request).
    changes: Mutex<mpsc::Receiver<Change<Uri, Endpoint>>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    list: Vec<(Uri, tonic::transport::Channel)>,
    current: Option<usize>,
}

impl Members {
    /// The member to use now, after taking in new endpoints.
    fn current(&self) -> Option<(Uri, tonic::transport::Channel)> {
        let mut state = lock(&self.state);
        {
            let mut changes = lock(&self.changes);
            while let Ok(change) = changes.try_recv() {
                match change {
                    Change::Insert(uri, endpoint) => {
                        state.list.retain(|(u, _)| *u != uri);
                        state.list.push((uri, endpoint.connect_lazy()));
                    }
                    Change::Remove(uri) => {
                        state.list.retain(|(u, _)| *u != uri);
                        state.current = None;
                    }
                }
            }
        }
        if state.list.is_empty() {
            return None;
        }
        let index = match state.current {
            Some(index) if index < state.list.len() => index,
            _ => {
                let start = random_below(state.list.len());
                let index = usable_from(&state.list, start);
                state.current = Some(index);
                index
            }
        };
        state.list.get(index).cloned()
    }

    /// `uri` failed: remember it, and move on from it if it is still the current one.
    fn failed(&self, uri: &Uri, why: &str) {
        remember_failure(uri);
        let mut state = lock(&self.state);
        let Some(current) = state.current else { return };
        if state.list.get(current).is_none_or(|(u, _)| u != uri) {
            return;
        }
        let next = usable_from(&state.list, (current + 1) % state.list.len());
        state.current = Some(next);
        if next != current {
            let to = &state.list[next].0;
            tracing::warn!(member = %uri, next = %to, reason = why, "etcd member failed; using the next one");
        }
    }
}

/// [`next_usable`] among `list`, with the process's failures, now.
fn usable_from(list: &[(Uri, tonic::transport::Channel)], start: usize) -> usize {
    let uris: Vec<&Uri> = list.iter().map(|(uri, _)| uri).collect();
    next_usable(&uris, start, &lock(&FAILURES), Instant::now())
}

/// The first member from `start` on (wrapping) that did not fail within
/// [`AVOID_FOR`] before `now`; `start` when all did.
fn next_usable(members: &[&Uri], start: usize, failures: &[(Uri, Instant)], now: Instant) -> usize {
    let failed_lately = |uri: &Uri| {
        failures.iter().any(|(u, at)| u == uri && now.checked_duration_since(*at).is_some_and(|ago| ago < AVOID_FOR))
    };
    (0..members.len()).map(|i| (start + i) % members.len()).find(|&i| !failed_lately(members[i])).unwrap_or(start)
}

/// When each member last failed, shared by every client of the process.
static FAILURES: Mutex<Vec<(Uri, Instant)>> = Mutex::new(Vec::new());

fn remember_failure(uri: &Uri) {
    let mut failures = lock(&FAILURES);
    let now = Instant::now();
    failures.retain(|(u, at)| u != uri && now.duration_since(*at) < AVOID_FOR);
    failures.push((uri.clone(), now));
}

/// A poisoned lock only means another thread panicked while holding it; the data
/// (a list of members) stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A number below `n` (> 0), from the standard library's random hash keys.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (random % n as u64) as usize
}

/// The channel: each handle sends to the member it readied.
struct OneAtATime {
    members: Arc<Members>,
    /// The member `poll_ready` readied, which `call` must use (tonic's channel
    /// reserves a slot in `poll_ready` for the `call` on the same handle).
    ready: Option<(Uri, tonic::transport::Channel)>,
}

impl Clone for OneAtATime {
    fn clone(&self) -> Self {
        // A clone has reserved nothing: it readies its own member.
        OneAtATime { members: self.members.clone(), ready: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no etcd endpoint given")]
struct NoEndpoint;

impl Service<Request> for OneAtATime {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Some((uri, channel)) = self.members.current() else { return Poll::Ready(Err(NoEndpoint.into())) };
        if self.ready.as_ref().is_none_or(|(ready, _)| *ready != uri) {
            self.ready = Some((uri, channel));
        }
        match &mut self.ready {
            Some((_, channel)) => channel.poll_ready(cx).map_err(Into::into),
            None => Poll::Ready(Err(NoEndpoint.into())),
        }
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some((uri, mut channel)) = self.ready.take() else {
            return Box::pin(std::future::ready(Err(NoEndpoint.into())));
        };
        let members = self.members.clone();
        let response = channel.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    if response.headers().get("grpc-status").is_some_and(|s| s == GRPC_UNAVAILABLE) {
                        members.failed(&uri, "unavailable");
                    }
                    let (parts, body) = response.into_parts();
                    let body = tonic::body::Body::new(Watched { inner: body, member: Some((members, uri)) });
                    Ok(Response::from_parts(parts, body))
                }
                Err(error) => {
                    members.failed(&uri, &error.to_string());
                    Err(error.into())
                }
            }
        })
    }
}

/// A response body that reports its member failed when it breaks: a watch or a
/// keep-alive stream whose member died.
struct Watched {
    inner: tonic::body::Body,
    member: Option<(Arc<Members>, Uri)>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(status))) = &polled
            && let Some((members, uri)) = self.member.take()
        {
            members.failed(&uri, status.message());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uris() -> Vec<Uri> {
        (1..=3).map(|i| format!("http://10.0.0.{i}:2379").parse().unwrap()).collect()
    }

    #[test]
    fn the_next_member_that_did_not_fail_lately_wrapping_around() {
        let uris = uris();
        let members: Vec<&Uri> = uris.iter().collect();
        let now = Instant::now();
        let failed = |i: usize, ago: Duration| (uris[i].clone(), now - ago);
        // Nothing failed: the start itself.
        for start in 0..3 {
            assert_eq!(next_usable(&members, start, &[], now), start);
        }
        // The start failed a moment ago: the next, wrapping past the end.
        assert_eq!(next_usable(&members, 0, &[failed(0, Duration::ZERO)], now), 1);
        assert_eq!(next_usable(&members, 2, &[failed(2, Duration::from_secs(1))], now), 0);
        // Two failed: the third, wherever it is.
        let two = [failed(0, Duration::ZERO), failed(1, Duration::from_secs(2))];
        for start in 0..3 {
            assert_eq!(next_usable(&members, start, &two, now), 2);
        }
        // A failure older than AVOID_FOR is forgotten.
        assert_eq!(next_usable(&members, 0, &[failed(0, AVOID_FOR)], now), 0);
        // All failed lately: the start (some member must be tried).
        let all: Vec<_> = (0..3).map(|i| failed(i, Duration::ZERO)).collect();
        assert_eq!(next_usable(&members, 1, &all, now), 1);
    }

    #[test]
    fn a_random_start_is_below_the_count() {
        for n in 1..5 {
            assert!((0..50).all(|_| random_below(n) < n));
        }
    }
}
