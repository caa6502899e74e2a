//! The fast path: answers encoded once per zone and sent with the query's ID and
//! flags patched in. Pure.
//!
//! The zone changes rarely and holds few answers, yet hickory-server decodes every
//! query into owned records, builds the answer record by record and registers about
//! fifty metric handles per query. Here a query of the everyday shape is answered by
//! reading its header and question in place, one hash lookup on its lowercased
//! wire-format name, and three copies: the header (ID, RD and CD from the query), the
//! question as the client sent it (its case kept), and the rest of the answer as
//! encoded earlier.
//!
//! THE CONTRACT: every byte the fast path sends is a byte hickory's path would have
//! sent for the same query. Both encode through [`response`] from the same [`Reply`]
//! ([`reply_for`]); the fast path stores what comes after the question, and this
//! module's tests compare the two for every name and type of a zone. So
//! it only takes queries it fully understands, and declines ([`answer`] returns
//! `None`, the caller then runs hickory's path) everything else:
//!
//! - a response, an opcode other than QUERY, counts other than one question and at
//!   most one additional record, or anything after the question (or after the OPT);
//! - a compressed or malformed question name, a name over 255 bytes;
//! - an additional record that is not a bare OPT (root owner, no options), or EDNS
//!   version above 0 (BADVERS);
//! - an answer larger than the client can take (512 bytes without EDNS, its payload
//!   size with): hickory truncates it and sets TC.
//!
//! What comes after the question depends on the question only through its length:
//! hickory never compresses a name against the question (it stores the whole question,
//! type and class included, as one candidate, which no name matches), and the
//! compression pointers in the rest are offsets that shift only with that length. So
//! a positive answer is encoded once per (name, type), and the negative ones (NODATA,
//! NXDOMAIN, REFUSED) once per question length, each lazily on first use, and each
//! with and without EDNS.

use std::sync::OnceLock;

use hickory_proto::op::{Edns, Metadata, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{Record, RecordType};
use hickory_proto::serialize::binary::{BinDecoder, BinEncoder};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use crate::zone::{Lookup, Zone};

/// The largest UDP answer to a query without EDNS (RFC 1035 4.2.1).
pub const PLAIN_UDP_LIMIT: usize = 512;

/// What one query gets, before encoding.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'z> {
    Error(ResponseCode),
    Records { code: ResponseCode, answers: &'z [Record], soa: Option<&'z Record>, additionals: &'z [Record] },
}

impl Reply<'_> {
    pub fn code(&self) -> ResponseCode {
        match self {
            Reply::Error(code) | Reply::Records { code, .. } => *code,
        }
    }
}

/// The reply to a lookup in `zone`: records, NODATA or NXDOMAIN with the SOA, or
/// REFUSED.
pub fn reply_for<'z>(zone: &'z Zone, lookup: Lookup<'z>) -> Reply<'z> {
    match lookup {
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
        Lookup::NotLoaded => Reply::Error(ResponseCode::Refused),
    }
}

type Records<'a> = std::slice::Iter<'a, Record>;

/// The response hickory encodes for `reply` to a request with `request` metadata:
/// authoritative when it carries records (NODATA and NXDOMAIN included), with
/// `edns` (ours) when the client sent EDNS.
pub fn response<'q, 'a>(
    queries: &'q Queries,
    edns: Option<&'q Edns>,
    request: &Metadata,
    reply: &Reply<'a>,
) -> MessageResponse<'q, 'a, Records<'a>, Records<'a>, std::option::IntoIter<&'a Record>, Records<'a>> {
    let mut builder = MessageResponseBuilder::new(queries, None);
    if let Some(edns) = edns {
        builder.edns(edns);
    }
    let mut metadata = Metadata::response_from_request(request);
    metadata.response_code = reply.code();
    match *reply {
        Reply::Error(_) => builder.build(metadata, [].iter(), [].iter(), None, [].iter()),
        Reply::Records { answers, soa, additionals, .. } => {
            metadata.authoritative = true;
            builder.build(metadata, answers.iter(), [].iter(), soa, additionals.iter())
        }
    }
}

/// Our OPT record for a client that sent one with `payload`: version 0, no options.
pub fn our_edns(payload: u16) -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(payload.max(512));
    edns.set_version(0);
    edns
}

/// An answer encoded once: the header after the ID (flags without RD and CD, and the
/// counts), and every byte after the question.
#[derive(Debug)]
pub struct Tail {
    header: [u8; 10],
    body: Box<[u8]>,
}

/// One answer's encodings, without and with EDNS, each made on first use. `None`
/// inside: hickory could not encode it in full (the fast path then always declines).
#[derive(Debug, Default)]
pub struct Encoded {
    plain: OnceLock<Option<Tail>>,
    edns: OnceLock<Option<Tail>>,
}

impl Encoded {
    fn get(&self, edns: bool, encode: impl FnOnce() -> Option<Tail>) -> Option<&Tail> {
        let cell = if edns { &self.edns } else { &self.plain };
        cell.get_or_init(encode).as_ref()
    }
}

/// The negative answers, one [`Encoded`] per question-name length (1..=255 bytes).
#[derive(Debug)]
pub struct Negatives {
    pub nodata: Box<[Encoded]>,
    pub nxdomain: Box<[Encoded]>,
    pub refused: Box<[Encoded]>,
}

impl Default for Negatives {
    fn default() -> Negatives {
        let per_length = || (0..=MAX_NAME).map(|_| Encoded::default()).collect();
        Negatives { nodata: per_length(), nxdomain: per_length(), refused: per_length() }
    }
}

/// The longest name in wire format (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;
const HEADER: usize = 12;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const TYPE_IXFR: u16 = 251;
const TYPE_AXFR: u16 = 252;

/// What the fast path answered, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub qtype: RecordType,
    pub code: ResponseCode,
    /// The query had RD set (hickory counts request flags).
    pub recursion_desired: bool,
    pub authoritative: bool,
}

/// A query parsed in place.
struct Parsed {
    /// End of the question (name, type, class).
    question_end: usize,
    qtype: u16,
    qclass: u16,
    /// The client's payload size, when it sent EDNS.
    payload: Option<u16>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// Parses a query of the everyday shape, writing its lowercased name in wire format
/// into `key`; `None` for anything else (see the module doc).
fn parse(query: &[u8], key: &mut Vec<u8>) -> Option<Parsed> {
    if query.len() < HEADER {
        return None;
    }
    let (flags, counts) = (query[2], &query[4..12]);
    // QR=0 and opcode QUERY; one question, no answer or authority, at most one additional.
    if flags & 0xf8 != 0 || counts[..6] != [0, 1, 0, 0, 0, 0] || counts[6] != 0 || counts[7] > 1 {
        return None;
    }
    key.clear();
    let mut at = HEADER;
    loop {
        let len = usize::from(*query.get(at)?);
        if len > 63 {
            return None; // a compression pointer or an extended label type
        }
        let label = query.get(at..at + 1 + len)?;
        key.push(label[0]);
        key.extend(label[1..].iter().map(u8::to_ascii_lowercase));
        at += 1 + len;
        if key.len() > MAX_NAME {
            return None;
        }
        if len == 0 {
            break;
        }
    }
    let (qtype, qclass) = (u16_at(query, at)?, u16_at(query, at + 2)?);
    let question_end = at + 4;
    let payload = if counts[7] == 1 {
        // A bare OPT: root owner, type 41, class = payload, TTL = extended rcode,
        // version, flags; no options.
        let opt = query.get(question_end..)?;
        if opt.len() != 11 || opt[0] != 0 || u16_at(opt, 1)? != TYPE_OPT || opt[6] != 0 || u16_at(opt, 9)? != 0 {
            return None;
        }
        Some(u16_at(opt, 3)?)
    } else {
        if query.len() != question_end {
            return None;
        }
        None
    };
    Some(Parsed { question_end, qtype, qclass, payload })
}

/// Answers `query` from `zone` into `out` (cleared first), or `None` when hickory's
/// path must answer it (see the module doc).
pub fn answer(zone: &Zone, query: &[u8], key: &mut Vec<u8>, out: &mut Vec<u8>) -> Option<Answered> {
    let parsed = parse(query, key)?;
    let qtype = RecordType::from(parsed.qtype);
    let question = &query[HEADER..parsed.question_end];
    let refused = parsed.qclass != CLASS_IN || matches!(parsed.qtype, TYPE_AXFR | TYPE_IXFR);
    let (lookup, encoded) = zone.wire_lookup(key, qtype, refused)?;
    let edns = parsed.payload.is_some();
    let tail = encoded.get(edns, || encode(zone, question, lookup, edns))?;
    let limit = parsed.payload.map_or(PLAIN_UDP_LIMIT, |p| usize::from(p.max(512)));
    if HEADER + question.len() + tail.body.len() > limit {
        return None;
    }
    out.clear();
    out.extend_from_slice(&query[..2]);
    out.push(tail.header[0] | (query[2] & 0x01));
    out.push(tail.header[1] | (query[3] & 0x10));
    out.extend_from_slice(&tail.header[2..]);
    out.extend_from_slice(question);
    out.extend_from_slice(&tail.body);
    if let Some(payload) = parsed.payload {
        // Our OPT is the last record: class (the payload size) 8 bytes from the end.
        let at = out.len() - 8;
        out[at..at + 2].copy_from_slice(&payload.max(512).to_be_bytes());
    }
    Some(Answered {
        qtype,
        code: ResponseCode::from(0, tail.header[1] & 0x0f),
        recursion_desired: query[2] & 0x01 != 0,
        authoritative: tail.header[0] & 0x04 != 0,
    })
}

/// Encodes the answer to `question` through hickory, and keeps what the fast path
/// needs of it; `None` if hickory would not encode it in full.
fn encode(zone: &Zone, question: &[u8], lookup: Lookup<'_>, edns: bool) -> Option<Tail> {
    let queries = Queries::read(&mut BinDecoder::new(question), 1).ok()?;
    let ours = edns.then(|| our_edns(512));
    let request = Metadata::new(0, MessageType::Query, OpCode::Query);
    let reply = reply_for(zone, lookup);
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    let info = response(&queries, ours.as_ref(), &request, &reply).destructive_emit(&mut encoder).ok()?;
    if info.truncation || bytes.get(HEADER..HEADER + question.len())? != question {
        return None;
    }
    let body = &bytes[HEADER + question.len()..];
    if edns && (body.len() < 11 || body[body.len() - 11..body.len() - 6] != [0, 0, 41, 2, 0]) {
        return None; // not our OPT last: do not patch what we do not understand
    }
    let mut header = [0u8; 10];
    header.copy_from_slice(&bytes[2..12]);
    Some(Tail { header, body: body.into() })
}

/// The lowercased wire form of a name (length-prefixed labels, then 0).
pub fn wire_name(name: &hickory_proto::rr::Name) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        key.push(label.len() as u8);
        key.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    key.push(0);
    key
}

/// Whether the wire-form `name` is `apex` or under it (both lowercase).
pub fn in_zone(name: &[u8], apex: &[u8]) -> bool {
    let mut at = 0;
    while at < name.len() {
        if name[at..] == *apex {
            return true;
        }
        at += 1 + usize::from(name[at]);
    }
    false
}

#[cfg(test)]
mod tests;
