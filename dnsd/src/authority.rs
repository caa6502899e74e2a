//! The DNS side: a hickory-server [`RequestHandler`] that answers from the current
//! [`Zone`], and the UDP/TCP listeners around it.
//!
//! The handler knows nothing of etcd: it loads the zone (one atomic load), looks the
//! question up (one hash lookup) and sends the prebuilt records. Rules, in order:
//! not a standard query: NOTIMP; not exactly one question: FORMERR; class other than
//! IN, a zone transfer, or a name outside the zone: REFUSED; otherwise an
//! authoritative answer, NODATA or NXDOMAIN, the latter two with the SOA in the
//! authority section. Undecodable messages get FORMERR from hickory-server itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

use crate::live::Live;
use crate::zone::{Lookup, Zone};

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

/// What one query gets, before encoding.
enum Reply<'z> {
    Error(ResponseCode),
    Records { code: ResponseCode, answers: &'z [Record], soa: Option<&'z Record>, additionals: &'z [Record] },
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
    match zone.lookup(query.name(), query.query_type()) {
        Lookup::Answer(a) => Reply::Records {
            code: ResponseCode::NoError,
            answers: &a.answers,
            soa: None,
            additionals: &a.additionals,
        },
        Lookup::NoData => {
            Reply::Records { code: ResponseCode::NoError, answers: &[], soa: Some(zone.soa()), additionals: &[] }
        }
        Lookup::NxDomain => {
            Reply::Records { code: ResponseCode::NXDomain, answers: &[], soa: Some(zone.soa()), additionals: &[] }
        }
        Lookup::Refused => Reply::Error(ResponseCode::Refused),
    }
}

/// `redis_topology_dnsd_queries_total{type, rcode}` (`type` of the first
/// question, `none` without one).
fn count_query(request: &Request, reply: &Reply<'_>) {
    let code = match reply {
        Reply::Error(code) | Reply::Records { code, .. } => *code,
    };
    let kind = request.queries.queries().first().map_or_else(|| "none".to_string(), |q| q.query_type().to_string());
    metrics::counter!("redis_topology_dnsd_queries_total", "type" => kind, "rcode" => code.to_str().to_string()).increment(1);
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        // EDNS: answer with our own OPT (version 0, the client's payload size) when
        // the client sent one; a higher version is BADVERS (RFC 6891 6.1.3).
        let mut edns = None;
        let mut bad_version = false;
        if let Some(req_edns) = &request.edns {
            let mut ours = Edns::new();
            ours.set_max_payload(req_edns.max_payload().max(512));
            ours.set_version(0);
            bad_version = req_edns.version() > 0;
            edns = Some(ours);
        }
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }

        let zone = self.zones().load();
        let reply = if bad_version { Reply::Error(ResponseCode::BADVERS) } else { decide(&zone, request) };
        count_query(request, &reply);
        let result = match reply {
            Reply::Error(code) => {
                metadata.response_code = code;
                response_handle.send_response(builder.build_no_records(metadata)).await
            }
            Reply::Records { code, answers, soa, additionals } => {
                metadata.response_code = code;
                metadata.authoritative = true;
                let response = builder.build(metadata, answers.iter(), [].iter(), soa, additionals.iter());
                response_handle.send_response(response).await
            }
        };
        match result {
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

/// How long an idle TCP connection is kept open.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection buffer of TCP responses not yet written.
const TCP_RESPONSE_BUFFER: usize = 32;

/// The bound DNS sockets, ready to serve.
pub struct Listeners {
    pub udp: Vec<tokio::net::UdpSocket>,
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
            socket.set_nonblocking(true)?;
            socket.bind(&address.into())?;
            udp.push(tokio::net::UdpSocket::from_std(socket.into())?);
        }
        Ok(Listeners { udp, tcp })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// A hickory server answering on every socket from `live`'s zone.
    pub fn serve(self, live: Arc<Live>) -> Server<Handler> {
        let mut server = Server::new(Handler::new(live));
        for socket in self.udp {
            server.register_socket(socket);
        }
        server.register_listener(self.tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
        server
    }
}
