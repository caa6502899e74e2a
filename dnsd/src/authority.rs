//! The DNS side: a hickory-server [`RequestHandler`] that answers from the current
//! [`Zone`], the UDP loops in front of it, and the TCP listener around it.
//!
//! The handler knows nothing of etcd: it loads the zone (one atomic load), looks the
//! question up (one hash lookup) and sends the prebuilt records. Rules, in order:
//! not a standard query: NOTIMP; not exactly one question: FORMERR; class other than
//! IN, a zone transfer, or a name outside the zone: REFUSED; otherwise an
//! authoritative answer, NODATA or NXDOMAIN, the latter two with the SOA in the
//! authority section. Undecodable messages get FORMERR, as hickory-server does.
//!
//! UDP: one loop per socket ([`serve_udp`]) answers each datagram from the answers
//! encoded once per zone ([`wire`], the fast path), and hands whatever the fast path
//! declines to the same handler, exactly as hickory-server's own UDP loop would
//! ([`answer_slow`]). TCP is hickory-server's listener and the handler.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::AsRawFd;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Header, HeaderCounts, Metadata, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncoder};
use hickory_server::net::runtime::{Time, TokioTime};
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, Queries};
use hickory_server::Server;
use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};

use crate::live::Live;
use crate::wire::{self, Reply};
use crate::zone::Zone;

/// Answers queries from the zone `Live` holds.
pub struct Handler {
    live: Arc<Live>,
}

impl Handler {
    pub fn new(live: Arc<Live>) -> Handler {
        Handler { live }
    }

    fn zones(&self) -> &ArcSwap<Zone> {
        self.live.zone_swap()
    }
}

fn decide<'z>(zone: &'z Zone, request: &Request) -> Reply<'z> {
    if request.metadata.op_code != OpCode::Query {
        return Reply::Error(ResponseCode::NotImp);
    }
    let [query] = request.queries.queries() else {
        return Reply::Error(ResponseCode::FormErr);
    };
    if query.query_class() != DNSClass::IN
        || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
    {
        return Reply::Error(ResponseCode::Refused);
    }
    wire::reply_for(zone, zone.lookup(query.name(), query.query_type()))
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS: answer with our own OPT (version 0, the client's payload size) when
        // the client sent one; a higher version is BADVERS (RFC 6891 6.1.3).
        let edns = request.edns.as_ref().map(|e| wire::our_edns(e.max_payload()));
        let bad_version = request.edns.as_ref().is_some_and(|e| e.version() > 0);
        let zone = self.zones().load();
        let reply = if bad_version { Reply::Error(ResponseCode::BADVERS) } else { decide(&zone, request) };
        let kind = request.queries.queries().first().map(|q| q.query_type());
        METRICS.query(kind, reply.code());
        let response = wire::response(&request.queries, edns.as_ref(), &request.metadata, &reply);
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "cannot send DNS response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

/// The query counters, kept as handles: counting an answer is an atomic add, not
/// a registry lookup. `redis_topology_dnsd_queries_total{type, rcode}` (`type` of
/// the first question, `none` without one), and for UDP, which hickory-server no
/// longer sees, its `hickory_request_protocols_total{protocol="udp"}`,
/// `hickory_request_operations_total{operation="query"}`,
/// `hickory_response_codes_total{code}` and the `rd`/`aa` flag counters.
struct Metrics {
    /// By (type, rcode) for the common types and codes; others go through the registry.
    queries: [[OnceLock<metrics::Counter>; CODES.len()]; TYPES.len()],
    udp: OnceLock<UdpCounters>,
}

struct UdpCounters {
    requests: metrics::Counter,
    queries: metrics::Counter,
    recursion_desired: metrics::Counter,
    authoritative: metrics::Counter,
    codes: [metrics::Counter; CODES.len()],
}

const TYPES: [RecordType; 7] =
    [RecordType::SRV, RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::SOA, RecordType::NS, RecordType::ANY];
const CODES: [ResponseCode; 5] =
    [ResponseCode::NoError, ResponseCode::NXDomain, ResponseCode::Refused, ResponseCode::FormErr, ResponseCode::NotImp];
/// hickory's label of each of `CODES`.
const HICKORY_CODES: [&str; 5] = ["no_error", "nx_domain", "refused", "form_error", "not_imp"];

static METRICS: Metrics = Metrics { queries: [const { [const { OnceLock::new() }; CODES.len()] }; TYPES.len()], udp: OnceLock::new() };

impl Metrics {
    fn query(&self, kind: Option<RecordType>, code: ResponseCode) {
        let t = kind.and_then(|k| TYPES.iter().position(|t| *t == k));
        let c = CODES.iter().position(|c| *c == code);
        let counter = |kind: Option<RecordType>| {
            let kind = kind.map_or_else(|| "none".to_string(), |k| k.to_string());
            metrics::counter!("redis_topology_dnsd_queries_total", "type" => kind, "rcode" => code.to_str().to_string())
        };
        match (t, c) {
            (Some(t), Some(c)) => self.queries[t][c].get_or_init(|| counter(kind)).increment(1),
            _ => counter(kind).increment(1),
        }
    }

    /// What hickory-server counted for each UDP request it answered.
    fn udp(&self, recursion_desired: bool, code: ResponseCode, authoritative: bool) {
        let udp = self.udp.get_or_init(|| UdpCounters {
            requests: metrics::counter!("hickory_request_protocols_total", "protocol" => "udp"),
            queries: metrics::counter!("hickory_request_operations_total", "operation" => "query"),
            recursion_desired: metrics::counter!("hickory_request_flags_total", "flag" => "rd"),
            authoritative: metrics::counter!("hickory_response_flags_total", "flag" => "aa"),
            codes: HICKORY_CODES.map(|code| metrics::counter!("hickory_response_codes_total", "code" => code)),
        });
        udp.requests.increment(1);
        udp.queries.increment(1);
        if recursion_desired {
            udp.recursion_desired.increment(1);
        }
        if authoritative {
            udp.authoritative.increment(1);
        }
        match CODES.iter().position(|c| *c == code) {
            Some(c) => udp.codes[c].increment(1),
            None => metrics::counter!("hickory_response_codes_total", "code" => "other").increment(1),
        }
    }
}

/// The largest UDP query read (hickory-server's receive buffer): the rest of a
/// longer datagram is cut off, as there.
const UDP_RECEIVE_BUFFER: usize = 4096;

/// How often an idle UDP thread looks whether it should stop (it is also woken by
/// a datagram at shutdown).
const UDP_STOP_CHECK: Duration = Duration::from_millis(500);

/// Datagrams received (and answers sent) per system call at most.
const UDP_BATCH: usize = 32;

/// Answers every datagram on `socket` until `stop` is set: from the zone's encoded
/// answers when the fast path takes the query, else through `handler`.
///
/// A thread of its own with a blocking socket, not a tokio task: a query arriving
/// alone costs one receive and one send, where the task also paid a receive that
/// found nothing and an epoll wait. Under load, one `recvmmsg` takes every datagram
/// waiting (up to [`UDP_BATCH`]) and one `sendmmsg` sends their answers, as Knot
/// does.
pub fn serve_udp(socket: std::net::UdpSocket, live: Arc<Live>, handler: Arc<Handler>, stop: Arc<AtomicBool>) {
    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; UDP_RECEIVE_BUFFER]; UDP_BATCH];
    let mut answers: Vec<Vec<u8>> = (0..UDP_BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut received: Vec<(usize, SocketAddr)> = Vec::with_capacity(UDP_BATCH);
    let mut to_send: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(UDP_BATCH);
    let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, None);
    let mut key = Vec::with_capacity(256);
    let mut zones = arc_swap::Cache::new(live.zone_swap());
    while !stop.load(Ordering::Relaxed) {
        received.clear();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(fd, &mut receive_headers, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None) {
                Ok(messages) => received.extend(messages.filter_map(|m| Some((m.bytes, std_address(m.address?)?)))),
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(error @ (Errno::ENOTCONN | Errno::ECONNABORTED | Errno::EBADF)) => {
                    tracing::error!(%error, "UDP socket closed: no longer answering on it");
                    return;
                }
                Err(error) => {
                    // ICMP errors of earlier answers surface here; the socket still works.
                    tracing::debug!(%error, "UDP receive");
                    continue;
                }
            }
        }
        let zone = arc_swap::cache::Access::load(&mut zones);
        to_send.clear();
        for (slot, &(len, src)) in received.iter().enumerate() {
            if answerable(src) && answer_udp(zone, &handler, &buffers[slot][..len], src, &mut key, &mut answers[slot]) {
                to_send.push((slot, SockaddrStorage::from(src)));
            }
        }
        send_all(fd, &socket, &mut send_headers, &answers, &to_send);
    }
}

/// Sends each `(slot, destination)` answer, with as few `sendmmsg` calls as the
/// kernel allows; what it refuses goes one `send_to` at a time.
fn send_all(
    fd: std::os::fd::RawFd,
    socket: &std::net::UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    answers: &[Vec<u8>],
    to_send: &[(usize, SockaddrStorage)],
) {
    let mut sent = 0;
    while sent < to_send.len() {
        let batch = &to_send[sent..];
        let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(slot, _)| [IoSlice::new(&answers[*slot])]).collect();
        let addresses: Vec<Option<SockaddrStorage>> = batch.iter().map(|(_, a)| Some(*a)).collect();
        match sendmmsg(fd, headers, slices.iter(), &addresses, [] as [ControlMessage<'_>; 0], MsgFlags::empty()) {
            Ok(results) => {
                let count = results.count();
                if count == 0 {
                    break;
                }
                sent += count;
            }
            Err(error) => {
                // The first answer could not go; the rest may.
                tracing::debug!(%error, "cannot send DNS response");
                for (slot, address) in batch.iter().skip(1) {
                    if let Some(address) = std_address(*address) {
                        let _ = socket.send_to(&answers[*slot], address);
                    }
                }
                return;
            }
        }
    }
}

fn std_address(address: SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    address.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// The answer to one UDP datagram from `src`, written to `out`; `false`: no answer.
/// The fast path when it takes the query ([`wire::answer`]), else hickory's
/// ([`answer_slow`], which never waits on anything), counted either way.
pub fn answer_udp(
    zone: &Zone,
    handler: &Handler,
    query: &[u8],
    src: SocketAddr,
    key: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> bool {
    if let Some(a) = wire::answer(zone, query, key, out) {
        METRICS.query(Some(a.qtype), a.code);
        METRICS.udp(a.recursion_desired, a.code, a.authoritative);
        return true;
    }
    match futures::executor::block_on(answer_slow(handler, query, src, Protocol::Udp)) {
        Some(reply) => {
            *out = reply;
            true
        }
        None => false,
    }
}

/// hickory-server's rule: never answer port 0, an unspecified or a broadcast address.
fn answerable(src: SocketAddr) -> bool {
    src.port() != 0
        && !src.ip().is_unspecified()
        && !matches!(src.ip(), std::net::IpAddr::V4(v4) if v4.is_broadcast())
}

/// What hickory-server does with one datagram, with `handler` as its request handler:
/// nothing for fewer than 12 bytes or a response; FORMERR (no question, no EDNS) for
/// one it cannot decode; else the handler's answer, encoded for `protocol`. `None`:
/// no answer.
pub async fn answer_slow(handler: &Handler, query: &[u8], src: SocketAddr, protocol: Protocol) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    let captured = Captured::new(protocol);
    match Request::from_bytes(query.to_vec(), src, protocol) {
        Ok(request) => {
            if request.metadata.message_type == MessageType::Response {
                return None; // no reflection
            }
            let info = handler.handle_request::<_, TokioTime>(&request, captured.clone()).await;
            if protocol == Protocol::Udp {
                METRICS.udp(request.metadata.recursion_desired, info.response_code, info.authoritative);
            }
        }
        Err(_) => {
            let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            let reply = Reply::Error(ResponseCode::FormErr);
            let response = wire::response(&queries, None, &header.metadata, &reply);
            let info = captured.clone().send_response(response).await.ok()?;
            if protocol == Protocol::Udp {
                METRICS.udp(header.metadata.recursion_desired, info.response_code, info.authoritative);
            }
        }
    }
    captured.take()
}

/// A [`ResponseHandler`] that keeps the encoded response, encoded as hickory-server
/// encodes it: over UDP at most 512 bytes without EDNS, or the payload size our OPT
/// announces, with TC set when records had to be left out.
#[derive(Clone)]
struct Captured {
    protocol: Protocol,
    bytes: Arc<Mutex<Option<Vec<u8>>>>,
}

impl Captured {
    fn new(protocol: Protocol) -> Captured {
        Captured { protocol, bytes: Arc::new(Mutex::new(None)) }
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.bytes.lock().ok()?.take()
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Captured {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max_size = match self.protocol {
            Protocol::Udp => response.edns().map_or(wire::PLAIN_UDP_LIMIT as u16, |e| e.max_payload()),
            _ => u16::MAX,
        };
        let id = response.metadata().id;
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max_size);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                // hickory-server's fallback: a bare SERVFAIL.
                tracing::error!(%error, "error encoding message");
                bytes.clear();
                let mut encoder = BinEncoder::new(&mut bytes);
                let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                let header = Header { metadata, counts: HeaderCounts::default() };
                hickory_proto::serialize::binary::BinEncodable::emit(&header, &mut encoder)?;
                ResponseInfo::from(header)
            }
        };
        if let Ok(mut slot) = self.bytes.lock() {
            *slot = Some(bytes);
        }
        Ok(info)
    }
}

/// How long an idle TCP connection is kept open.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection buffer of TCP responses not yet written.
const TCP_RESPONSE_BUFFER: usize = 32;

/// The bound DNS sockets, ready to serve.
pub struct Listeners {
    pub udp: Vec<std::net::UdpSocket>,
    pub tcp: tokio::net::TcpListener,
}

impl Listeners {
    /// Binds TCP first, without address reuse, so a second dnsd on the same port fails
    /// here instead of silently sharing UDP; then `udp_sockets` UDP sockets on the same
    /// port with SO_REUSEPORT, so that each gets its own receive loop.
    pub fn bind(address: SocketAddr, udp_sockets: usize) -> std::io::Result<Listeners> {
        let tcp = std::net::TcpListener::bind(address)?;
        let address = tcp.local_addr()?;
        tcp.set_nonblocking(true)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        let mut udp = Vec::new();
        for _ in 0..udp_sockets.max(1) {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(address),
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            socket.set_reuse_port(true)?;
            socket.set_read_timeout(Some(UDP_STOP_CHECK))?;
            socket.bind(&address.into())?;
            udp.push(socket.into());
        }
        Ok(Listeners { udp, tcp })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Answers on every socket from `live`'s zone: a UDP thread per socket, and a
    /// hickory server on TCP.
    pub fn serve(self, live: Arc<Live>) -> std::io::Result<DnsServer> {
        let handler = Arc::new(Handler::new(live.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut udp = Vec::new();
        for (n, socket) in self.udp.into_iter().enumerate() {
            let address = socket.local_addr()?;
            let (live, handler, stop) = (live.clone(), handler.clone(), stop.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dns-udp-{n}"))
                .spawn(move || serve_udp(socket, live, handler, stop))?;
            udp.push((thread, address));
        }
        let mut tcp = Server::new(Handler::new(live));
        tcp.register_listener(self.tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        Ok(DnsServer { udp, stop, tcp })
    }
}

/// The running DNS listeners.
pub struct DnsServer {
    udp: Vec<(std::thread::JoinHandle<()>, SocketAddr)>,
    stop: Arc<AtomicBool>,
    tcp: Server<Handler>,
}

impl DnsServer {
    /// Stops the UDP threads (each woken by an empty datagram), and lets the TCP
    /// server finish what it answers.
    pub async fn shutdown_gracefully(&mut self) -> Result<(), NetError> {
        self.stop.store(true, Ordering::Relaxed);
        let threads: Vec<_> = self.udp.drain(..).collect();
        // One waker socket per thread: SO_REUSEPORT spreads by source address, so
        // this wakes most threads at once; the others see `stop` at their timeout.
        for (_, address) in &threads {
            let mut address = *address;
            if address.ip().is_unspecified() {
                address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let local = SocketAddr::new(address.ip(), 0);
            if let Ok(waker) = std::net::UdpSocket::bind(local) {
                let _ = waker.send_to(&[], address);
            }
        }
        let _ = tokio::task::spawn_blocking(move || {
            for (thread, _) in threads {
                let _ = thread.join();
            }
        })
        .await;
        self.tcp.shutdown_gracefully().await
    }
}
