//! The zone: every answer dnsd can give, precomputed from the etcd state. Pure.
//!
//! [`Zone::build`] turns the node registrations (`/nodes/<cluster>/<node>`) and the
//! published topologies (`/dns/<cluster>`) into a map from (name, record type) to the
//! finished answer and additional sections, so that answering a query is one hash
//! lookup ([`Zone::lookup`]) and never allocates. A new zone is built on every change
//! and swapped in whole; a zone is never modified.
//!
//! What is served, under `<domain>`:
//!
//! | name | records |
//! |---|---|
//! | `<domain>` | SOA (`ns.<domain>`, `hostmaster.<domain>`, serial), NS `ns.<domain>` |
//! | `ns.<domain>` | A/AAAA of the DNS listen address (unless it is unspecified) |
//! | `<node>.<cluster>` | A/AAAA of the node's address, SRV `0 100 <port> <node>.<cluster>` |
//! | `master.<cluster>` | SRV to the master's target, A/AAAA of the master |
//! | `_redis._tcp.master.<cluster>` | the same SRV |
//! | `slaves.<cluster>`, `_redis._tcp.slaves.<cluster>` | one SRV per live slave, each `0 100 <port> <target>` |
//! | `version.<cluster>` | TXT: etcd revision of `/dns/<cluster>` |
//! | `addr-<hex ip>.<cluster>` | A/AAAA of a published member that is not a registered node |
//!
//! SRV answers carry their targets' A/AAAA records in the additional section.
//!
//! The read pool (`slaves.<cluster>`) holds only live slaves: a slave that is a node
//! whose registration is gone, unhealthy, or says it is a master (a member the
//! dictator quarantined, or one not re-pointed yet: it serves its own data, not the
//! group's) is left out until it is a healthy slave again. Its own `<node>.<cluster>`
//! record stays.
//!
//! The SRV target of a published member: its node name when it is a node, else a synthesized
//! `addr-<hex ip>` name. A node's address is its registration's when it is registered,
//! else the host recorded when it was published (so a published master always
//! resolves, even while its node-agent's lease has lapsed).
//!
//! Host names instead of IP addresses (a node-agent with `--advertise-address
//! redis.example.com`): dnsd does not serve CNAMEs (a CNAME may not share its name
//! with the SRV record, and dnsd never recurses). The SRV target is then the host name
//! itself, with no glue, and the node name has SRV but no A/AAAA record.
//!
//! Names that exist only as parents of served names (`<cluster>.<domain>`,
//! `_tcp.master.<cluster>.<domain>`, ...) answer NODATA; other names inside the zone
//! NXDOMAIN; names outside it REFUSED.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use topology::records::{NodeRecord, PublishedMember, PublishedTopology, Role};

use crate::wire;

/// Weight of every SRV record. Not 0: HAProxy's `server-template` takes the SRV
/// weight as the server's weight, and a server of weight 0 gets no traffic, so a
/// master published with weight 0 would be UP yet unreachable through HAProxy.
/// All records weigh the same, so clients spread evenly over the slaves.
pub const SRV_WEIGHT: u16 = 100;
use topology::Names;

/// Node registrations by (cluster, node).
pub type Registrations = BTreeMap<(String, String), NodeRecord>;

/// Published topologies by cluster, with the etcd revision of `/dns/<cluster>`.
pub type Published = BTreeMap<String, (PublishedTopology, i64)>;

/// SOA timers (seconds). Nothing transfers this zone; they only need to be sane.
const SOA_REFRESH: i32 = 60;
const SOA_RETRY: i32 = 10;
const SOA_EXPIRE: i32 = 3600;

/// What does not change from one zone to the next.
#[derive(Debug, Clone)]
pub struct ZoneConfig {
    pub names: Names,
    /// TTL of every record, and the negative-caching TTL (SOA minimum).
    pub ttl: u32,
    /// Address of `ns.<domain>`: where dnsd answers DNS. `None` (or an unspecified
    /// address) serves the NS record without an address.
    pub ns_address: Option<IpAddr>,
}

/// The answer and additional sections for one (name, type).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Answer {
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// The outcome of a lookup.
#[derive(Debug, PartialEq)]
pub enum Lookup<'a> {
    /// NOERROR with records.
    Answer(&'a Answer),
    /// NOERROR without records: the name exists, not with this type.
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
    /// Not our zone.
    Refused,
    /// Our zone, but dnsd never listed etcd: it knows nothing yet, and says so
    /// (REFUSED: a resolver asks another nameserver and caches nothing, HAProxy
    /// keeps its last answer for `hold refused`) rather than that the name does
    /// not exist (NXDOMAIN, which resolvers cache). Not SERVFAIL: HAProxy counts
    /// that under `hold other`, which is short.
    NotLoaded,
}

/// One type's answer at a name, and the fast path's encodings of it.
type Entry = (RecordType, Answer, wire::Encoded);

/// An immutable snapshot of everything dnsd serves.
#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    /// The apex in lowercase wire format, for the fast path's in-zone test.
    apex_wire: Box<[u8]>,
    serial: u32,
    soa: Record,
    /// By lowercase wire-format name (what the fast path reads off a query): each
    /// type's answer, with its encodings once the fast path made them.
    names: HashMap<Box<[u8]>, Vec<Entry>>,
    /// The fast path's negative answers, by question-name length.
    negatives: wire::Negatives,
    warnings: Vec<String>,
    /// Built from a listing of etcd (or from changes after one); `false` only for
    /// the empty zone dnsd serves before its first listing.
    loaded: bool,
}

impl Zone {
    /// Builds the zone from the etcd state. `serial` should increase with every change
    /// (dnsd uses the newest etcd revision it applied).
    pub fn build(
        config: &ZoneConfig,
        registrations: &Registrations,
        published: &Published,
        serial: u32,
    ) -> Zone {
        let mut b = Builder::new(config);
        let apex = b.apex.clone();
        let ns_name = b.name(&format!("ns.{}", config.names.domain()));
        let ns_address = config.ns_address.filter(|ip| !ip.is_unspecified());
        let soa = b.record(
            &apex,
            RData::SOA(SOA::new(
                ns_name.clone(),
                b.name(&format!("hostmaster.{}", config.names.domain())),
                serial,
                SOA_REFRESH,
                SOA_RETRY,
                SOA_EXPIRE,
                config.ttl,
            )),
        );
        b.answer(&apex, soa.clone());
        b.answer(&apex, b.record(&apex, RData::NS(NS(ns_name.clone()))));
        if let Some(ip) = ns_address {
            let glue = address_record(&b, &ns_name, ip);
            b.additional(&apex, RecordType::NS, glue.clone());
            b.answer(&ns_name, glue);
        }

        // Registered nodes: A/AAAA (or nothing, for host names) and SRV to themselves.
        for ((cluster, node), record) in registrations {
            let name = b.name(&config.names.node(cluster, node));
            b.touch(&name);
            b.node(&name, &record.address, record.port);
        }

        for (cluster, (topology, revision)) in published {
            let cluster_name = b.name(&config.names.cluster(cluster));
            b.touch(&cluster_name);
            let version = b.name(&config.names.version(cluster));
            b.answer(&version, b.record(&version, RData::TXT(TXT::new(vec![revision.to_string()]))));

            let master = b.target(config, registrations, cluster, &topology.master);
            let master_name = b.name(&config.names.master(cluster));
            b.touch(&master_name);
            if let Some(address) = master.address {
                b.answer(&master_name, address_record(&b, &master_name, address));
            }
            for name in [master_name, b.name(&config.names.master_srv(cluster))] {
                b.srv(&name, &master);
            }

            // Every slave keeps its node record; only live ones join the read pool.
            let slaves: Vec<SrvTarget> = topology
                .slaves
                .iter()
                .map(|slave| (b.target(config, registrations, cluster, slave), in_read_pool(registrations, cluster, slave)))
                .filter_map(|(target, live)| live.then_some(target))
                .collect();
            for name in [b.name(&config.names.slaves(cluster)), b.name(&config.names.slaves_srv(cluster))] {
                b.touch(&name);
                for slave in &slaves {
                    b.srv(&name, slave);
                }
            }
        }
        b.finish(soa, serial)
    }

    /// This zone, marked as built before dnsd ever listed etcd: every name in it
    /// is [`Lookup::NotLoaded`].
    pub fn before_first_listing(mut self) -> Zone {
        self.loaded = false;
        self
    }

    /// Whether it was built from what etcd holds.
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    /// The answer to a query for `name` and `rtype` (class IN).
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Lookup<'_> {
        if !self.loaded && self.origin.zone_of(name) {
            return Lookup::NotLoaded;
        }
        let key = wire::wire_name(&Name::from(name.clone()));
        match self.names.get(key.as_slice()) {
            Some(entries) => match entries.iter().find(|(t, ..)| *t == rtype) {
                Some((_, answer, _)) => Lookup::Answer(answer),
                None => Lookup::NoData,
            },
            None if self.origin.zone_of(name) => Lookup::NxDomain,
            None => Lookup::Refused,
        }
    }

    /// [`Zone::lookup`] for the fast path: `name` in lowercase wire format, and
    /// where its encodings are kept. `refused`: the class or type alone refuses it.
    /// `None` for a name longer than a name can be.
    pub fn wire_lookup(&self, name: &[u8], rtype: RecordType, refused: bool) -> Option<(Lookup<'_>, &wire::Encoded)> {
        let negatives = &self.negatives;
        if refused {
            return Some((Lookup::Refused, negatives.refused.get(name.len())?));
        }
        if !self.loaded && wire::in_zone(name, &self.apex_wire) {
            return None; // hickory's path answers REFUSED: rare enough to be slow
        }
        Some(match self.names.get(name) {
            Some(entries) => match entries.iter().find(|(t, ..)| *t == rtype) {
                Some((_, answer, encoded)) => (Lookup::Answer(answer), encoded),
                None => (Lookup::NoData, negatives.nodata.get(name.len())?),
            },
            None if wire::in_zone(name, &self.apex_wire) => (Lookup::NxDomain, negatives.nxdomain.get(name.len())?),
            None => (Lookup::Refused, negatives.refused.get(name.len())?),
        })
    }

    /// [`Zone::lookup`] for a name given as text (any case, trailing dot optional).
    pub fn lookup_str(&self, name: &str, rtype: RecordType) -> Lookup<'_> {
        let fqdn = if name.ends_with('.') { name.to_string() } else { format!("{name}.") };
        match Name::from_ascii(&fqdn) {
            Ok(name) => self.lookup(&LowerName::new(&name), rtype),
            Err(_) => Lookup::Refused,
        }
    }

    /// Every name that exists, in lowercase wire format, with the types it has.
    pub fn wire_names(&self) -> impl Iterator<Item = (&[u8], Vec<RecordType>)> {
        self.names.iter().map(|(name, entries)| (&**name, entries.iter().map(|(t, ..)| *t).collect()))
    }

    /// The SOA record, for the authority section of negative answers.
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// Number of names that exist (with or without records); never 0, the apex
    /// always exists.
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// Data from etcd that could not be served (e.g. an invalid host name), one
    /// sentence each, for the caller to log.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// Where a published member's SRV record points.
#[derive(Debug, Clone)]
struct SrvTarget {
    name: Name,
    port: u16,
    /// Its address, served at `name` and as glue; `None` for external host names.
    address: Option<IpAddr>,
}

struct Builder<'c> {
    config: &'c ZoneConfig,
    apex: Name,
    names: HashMap<LowerName, BTreeMap<RecordType, Answer>>,
    warnings: Vec<String>,
}

impl<'c> Builder<'c> {
    fn new(config: &'c ZoneConfig) -> Builder<'c> {
        let mut b = Builder { config, apex: Name::root(), names: HashMap::new(), warnings: Vec::new() };
        b.apex = b.name(config.names.domain());
        b
    }

    /// A fully qualified name from validated parts (domain, cluster and node names are
    /// DNS labels, checked by `Names` and `Keys`).
    fn name(&self, text: &str) -> Name {
        Name::from_ascii(text).map(|mut n| {
            n.set_fqdn(true);
            n
        })
        .unwrap_or_else(|_| self.apex.clone())
    }

    fn record(&self, name: &Name, data: RData) -> Record {
        Record::from_rdata(name.clone(), self.config.ttl, data)
    }

    /// Makes `name` and its ancestors up to the apex exist.
    fn touch(&mut self, name: &Name) {
        let mut name = name.clone();
        while self.apex.zone_of(&name) {
            let exists = self.names.contains_key(&LowerName::new(&name));
            self.names.entry(LowerName::new(&name)).or_default();
            if exists || name.num_labels() <= self.apex.num_labels() {
                break;
            }
            name = name.base_name();
        }
    }

    fn answer(&mut self, name: &Name, record: Record) {
        self.touch(name);
        let answer = self
            .names
            .entry(LowerName::new(name))
            .or_default()
            .entry(record.record_type())
            .or_default();
        if !answer.answers.contains(&record) {
            answer.answers.push(record);
        }
    }

    fn additional(&mut self, name: &Name, rtype: RecordType, record: Record) {
        let answer = self.names.entry(LowerName::new(name)).or_default().entry(rtype).or_default();
        if !answer.additionals.contains(&record) {
            answer.additionals.push(record);
        }
    }

    /// A node name: its address records (if `address` is an IP) and an SRV to itself.
    /// A name that already has records (a registration) is left alone.
    fn node(&mut self, name: &Name, address: &str, port: u16) {
        let has_records = self.names.get(&LowerName::new(name)).is_some_and(|e| !e.is_empty());
        if has_records {
            return;
        }
        let target = match address.parse::<IpAddr>() {
            Ok(ip) => {
                self.answer(name, address_record(self, name, ip));
                SrvTarget { name: name.clone(), port, address: Some(ip) }
            }
            Err(_) => match self.host_name(address) {
                Some(host) => SrvTarget { name: host, port, address: None },
                None => return,
            },
        };
        self.srv(name, &target);
    }

    /// An external host name as an SRV target, or `None` (with a warning) if invalid.
    fn host_name(&mut self, host: &str) -> Option<Name> {
        let valid = topology::Address::parse(host).is_ok_and(|a| matches!(a, topology::Address::Name(_)));
        match Name::from_ascii(host) {
            Ok(mut name) if valid => {
                name.set_fqdn(true);
                Some(name)
            }
            _ => {
                self.warnings.push(format!("{host:?} is neither an IP address nor a host name; not served"));
                None
            }
        }
    }

    /// The SRV target of a published member of `cluster` (see the module doc).
    fn target(
        &mut self,
        config: &ZoneConfig,
        registrations: &Registrations,
        cluster: &str,
        member: &PublishedMember,
    ) -> SrvTarget {
        let port = member.port;
        if let Some(node) = &member.node {
            let name = self.name(&config.names.node(cluster, node));
            let registered = registrations.get(&(cluster.to_string(), node.clone()));
            let address = registered.map_or(member.host.as_str(), |r| r.address.as_str());
            self.node(&name, address, registered.map_or(port, |r| r.port));
            return match address.parse::<IpAddr>() {
                Ok(ip) => SrvTarget { name, port, address: Some(ip) },
                Err(_) => match self.host_name(address) {
                    Some(host) => SrvTarget { name: host, port, address: None },
                    None => SrvTarget { name, port, address: None },
                },
            };
        }
        match member.host.parse::<IpAddr>() {
            Ok(ip) => {
                let name = self.name(&format!("{}.{}", synthesized_label(ip), config.names.cluster(cluster)));
                if self.names.get(&LowerName::new(&name)).is_none_or(|e| e.is_empty()) {
                    self.answer(&name, address_record(self, &name, ip));
                }
                SrvTarget { name, port, address: Some(ip) }
            }
            Err(_) => match self.host_name(&member.host) {
                Some(host) => SrvTarget { name: host, port, address: None },
                None => SrvTarget { name: self.apex.clone(), port, address: None },
            },
        }
    }

    /// Adds `0 100 <port> <target>` at `name`, with the target's address as glue.
    fn srv(&mut self, name: &Name, target: &SrvTarget) {
        let srv = self.record(name, RData::SRV(SRV::new(0, SRV_WEIGHT, target.port, target.name.clone())));
        self.answer(name, srv);
        if let Some(ip) = target.address {
            let glue = address_record(self, &target.name, ip);
            self.additional(name, RecordType::SRV, glue);
        }
    }

    fn finish(mut self, soa: Record, serial: u32) -> Zone {
        // ANY: every record at the name (RFC 8482 allows less; this is small).
        for entries in self.names.values_mut() {
            if entries.is_empty() {
                continue;
            }
            let mut any = Answer::default();
            for answer in entries.values() {
                any.answers.extend(answer.answers.iter().cloned());
                for glue in &answer.additionals {
                    if !any.additionals.contains(glue) {
                        any.additionals.push(glue.clone());
                    }
                }
            }
            entries.insert(RecordType::ANY, any);
        }
        let names = self
            .names
            .into_iter()
            .map(|(name, entries)| {
                let entries = entries.into_iter().map(|(t, a)| (t, a, wire::Encoded::default())).collect();
                (wire::wire_name(&Name::from(name)).into_boxed_slice(), entries)
            })
            .collect();
        Zone {
            origin: LowerName::new(&self.apex),
            apex_wire: wire::wire_name(&self.apex).into(),
            serial,
            soa,
            names,
            negatives: wire::Negatives::default(),
            warnings: self.warnings,
            loaded: true,
        }
    }
}

/// Whether a published slave belongs in `slaves.<cluster>`: a node must be registered,
/// healthy and not a master, so readers and HAProxy are not sent to a dead one or to
/// one that serves data of its own. A member that is no registered node (an IP
/// literal) is kept: nothing says it is down.
pub(crate) fn in_read_pool(registrations: &Registrations, cluster: &str, member: &PublishedMember) -> bool {
    match &member.node {
        Some(node) => registrations
            .get(&(cluster.to_string(), node.clone()))
            .is_some_and(|r| r.healthy && r.role != Role::Master),
        None => true,
    }
}

fn address_record(b: &Builder<'_>, name: &Name, ip: IpAddr) -> Record {
    match ip {
        IpAddr::V4(v4) => b.record(name, RData::A(A(v4))),
        IpAddr::V6(v6) => b.record(name, RData::AAAA(AAAA(v6))),
    }
}

/// `addr-<hex of the address bytes>`, e.g. `addr-0a000003` for 10.0.0.3.
pub fn synthesized_label(ip: IpAddr) -> String {
    let bytes: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let mut label = String::from("addr-");
    for b in bytes {
        let _ = write!(label, "{b:02x}");
    }
    label
}

#[cfg(test)]
pub(crate) mod tests;
