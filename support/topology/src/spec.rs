//! The topology JSON operators write, compatible with the original design:
//!
//! ```json
//! { "master": { "address": "node-1.redis-1.cluster.local" },
//!   "slaves": [ { "address": "10.0.0.3", "port": 6379 } ] }
//! ```
//!
//! An optional `"durability"` asks the dictator to set redis's own write guard on
//! every member: `{"min_replicas_to_write": 1, "min_replicas_max_lag": 2}` (see
//! [`Durability`]).
//!
//! Parsing is strict on purpose: an unknown field is most likely a typo (`"slave"`,
//! `"prot"`) and silently ignoring it would apply a topology nobody asked for.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Port used for IP literals and A/AAAA names when the topology gives none.
pub const DEFAULT_REDIS_PORT: u16 = 6379;

/// A desired replication group: exactly one master and any number of slaves.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Topology {
    pub master: Member,
    pub slaves: Vec<Member>,
    /// `None`: members keep the write settings they have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<Durability>,
}

/// Redis's own guard against a master cut off from its replicas, set by the
/// dictator on every member (slaves keep it for when they are promoted): the
/// master refuses writes (`NOREPLICAS`) unless `min_replicas_to_write` replicas
/// acknowledged replication within the last `min_replicas_max_lag` seconds. It
/// needs no agent and no network, so it still acts when the node-agent died or
/// froze with redis. The price: a master without that many live replicas takes
/// no writes at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Durability {
    pub min_replicas_to_write: u32,
    pub min_replicas_max_lag: u32,
}

impl Durability {
    /// `min-replicas-max-lag` when the topology gives none: redis's default.
    pub const DEFAULT_MAX_LAG: u32 = 10;

    /// Checks the setting against a group of `slaves` members.
    pub fn validate(&self, slaves: usize) -> Result<(), SpecError> {
        let field = "durability.min_replicas_to_write";
        if self.min_replicas_to_write >= crate::FENCE_MIN_REPLICAS {
            return Err(SpecError::invalid(field, format!("must be below {}, the write fence", crate::FENCE_MIN_REPLICAS)));
        }
        if self.min_replicas_to_write as usize > slaves {
            return Err(SpecError::invalid(
                field,
                format!(
                    "is {} but the topology has {slaves} slave(s): the master could never take a write",
                    self.min_replicas_to_write
                ),
            ));
        }
        if self.min_replicas_max_lag == 0 && self.min_replicas_to_write > 0 {
            return Err(SpecError::invalid(
                "durability.min_replicas_max_lag",
                "must be at least 1 second: redis ignores min-replicas-to-write while it is 0",
            ));
        }
        Ok(())
    }
}

/// One redis-server instance as the operator named it (before DNS resolution).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Member {
    pub address: Address,
    /// `None` means "6379, or the SRV record's port when `address` names one".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// An IP literal or a DNS name (normalized: lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    Ip(IpAddr),
    Name(String),
}

/// Why a topology was rejected. `Malformed` is a 400 (not JSON at all), `Invalid`
/// a 422 (JSON, but not a topology we can apply); both name what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("malformed JSON: {0}")]
    Malformed(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl SpecError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        SpecError::Invalid { field: field.into(), message: message.into() }
    }
}

impl Topology {
    /// Parses and validates topology JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Topology, SpecError> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| SpecError::Malformed(e.to_string()))?;
        let doc = as_object(&value, "topology", &["master", "slaves", "durability"])?;
        let master = match doc.get("master") {
            None | Some(Value::Null) => return Err(SpecError::invalid("master", "is required")),
            Some(v) => parse_member(v, "master")?,
        };
        let slaves = match doc.get("slaves") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_member(v, &format!("slaves[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(SpecError::invalid("slaves", "must be an array of members")),
        };
        let topology = Topology::new(master, slaves)?;
        match doc.get("durability") {
            None | Some(Value::Null) => Ok(topology),
            Some(v) => topology.with_durability(Some(parse_durability(v)?)),
        }
    }

    /// Builds a topology from already-validated members, rejecting duplicates.
    pub fn new(master: Member, slaves: Vec<Member>) -> Result<Topology, SpecError> {
        let mut seen = HashSet::new();
        seen.insert(master.identity());
        for (i, slave) in slaves.iter().enumerate() {
            if !seen.insert(slave.identity()) {
                return Err(SpecError::invalid(
                    format!("slaves[{i}]"),
                    format!("{slave} appears more than once in the topology"),
                ));
            }
        }
        Ok(Topology { master, slaves, durability: None })
    }

    /// The same group with `durability`, checked against its slaves.
    pub fn with_durability(self, durability: Option<Durability>) -> Result<Topology, SpecError> {
        if let Some(d) = &durability {
            d.validate(self.slaves.len())?;
        }
        Ok(Topology { durability, ..self })
    }

    /// The topology as compact JSON (the format [`Topology::from_json`] reads).
    pub fn to_json(&self) -> String {
        // Serializing plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every member, master first.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::once(&self.master).chain(self.slaves.iter())
    }
}

impl FromStr for Topology {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topology::from_json(s.as_bytes())
    }
}

impl Member {
    pub fn new(address: Address, port: Option<u16>) -> Member {
        Member { address, port }
    }

    /// Parses `host`, `host:port`, `ip`, `ip:port` or `[ipv6]:port` (the CLI form).
    pub fn parse_host_port(s: &str) -> Result<Member, AddressError> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Member::new(Address::Ip(ip), None));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| AddressError::Port(s.to_string()))?;
                (host.trim_start_matches('[').trim_end_matches(']'), Some(port))
            }
            None => (s, None),
        };
        let address = Address::parse(host)
            .map_err(|e| AddressError::In { input: s.to_string(), error: Box::new(e) })?;
        Ok(Member::new(address, port))
    }

    /// The port to connect to unless an SRV record says otherwise.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_REDIS_PORT)
    }

    // Two members are the same instance if they name the same address and port.
    // Resolution may still reveal duplicates (two names for one IP); the dictator
    // checks again after resolving.
    fn identity(&self) -> (Address, u16) {
        (self.address.clone(), self.port_or_default())
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.address, self.port) {
            (Address::Ip(IpAddr::V6(ip)), Some(port)) => write!(f, "[{ip}]:{port}"),
            (address, Some(port)) => write!(f, "{address}:{port}"),
            (address, None) => write!(f, "{address}"),
        }
    }
}

/// `value` as an object whose keys are all in `allowed`.
fn as_object<'a>(
    value: &'a Value,
    field: &str,
    allowed: &[&str],
) -> Result<&'a serde_json::Map<String, Value>, SpecError> {
    let object = value
        .as_object()
        .ok_or_else(|| SpecError::invalid(field, format!("must be a JSON object, got {}", kind(value))))?;
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        let at = if field == "topology" { unknown.clone() } else { format!("{field}.{unknown}") };
        return Err(SpecError::invalid(
            at,
            format!("unknown field (expected {})", allowed.join(" or ")),
        ));
    }
    Ok(object)
}

fn parse_member(value: &Value, field: &str) -> Result<Member, SpecError> {
    let member = as_object(value, field, &["address", "port"])?;
    let address = match member.get("address") {
        Some(Value::String(s)) => Address::parse(s)
            .map_err(|e| SpecError::invalid(format!("{field}.address"), e.to_string()))?,
        None | Some(Value::Null) => {
            return Err(SpecError::invalid(format!("{field}.address"), "is required"));
        }
        Some(other) => {
            return Err(SpecError::invalid(
                format!("{field}.address"),
                format!("must be a string, got {}", kind(other)),
            ));
        }
    };
    let port = match member.get("port") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    SpecError::invalid(format!("{field}.port"), format!("{v} is not a port (1..65535)"))
                })?,
        ),
    };
    Ok(Member { address, port })
}

fn parse_durability(value: &Value) -> Result<Durability, SpecError> {
    let d = as_object(value, "durability", &["min_replicas_to_write", "min_replicas_max_lag"])?;
    let number = |name: &str, default: Option<u32>| match d.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| SpecError::invalid(format!("durability.{name}"), "is required")),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| SpecError::invalid(format!("durability.{name}"), format!("{v} is not a whole number"))),
    };
    Ok(Durability {
        min_replicas_to_write: number("min_replicas_to_write", None)?,
        min_replicas_max_lag: number("min_replicas_max_lag", Some(Durability::DEFAULT_MAX_LAG))?,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Why an address (or `host:port`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address must not be empty")]
    Empty,
    #[error("{0:?}: write IPv6 addresses without brackets")]
    Brackets(String),
    #[error("{0:?} is not an address; put the port in \"port\"")]
    HasPort(String),
    #[error("name is {0} characters, at most 253 are allowed")]
    TooLong(usize),
    #[error("{0:?}: every dot-separated label needs 1 to 63 characters")]
    LabelLength(String),
    #[error("{0:?} is neither an IP address nor a host name (letters, digits, '-', '_')")]
    Characters(String),
    #[error("{0:?}: a label must not start or end with '-'")]
    Hyphen(String),
    #[error("{0:?} is not a valid IP address")]
    BadIp(String),
    #[error("{0:?}: port must be a number in 1..65535")]
    Port(String),
    #[error("{input:?}: {error}")]
    In { input: String, error: Box<AddressError> },
}

impl Address {
    /// Validates and normalizes an address: an IP literal or a DNS name.
    pub fn parse(s: &str) -> Result<Address, AddressError> {
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Address::Ip(ip));
        }
        if s.starts_with('[') && s.ends_with(']') {
            return Err(AddressError::Brackets(s.to_string()));
        }
        if s.contains(':') {
            return Err(AddressError::HasPort(s.to_string()));
        }
        let name = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
        if name.len() > 253 {
            return Err(AddressError::TooLong(name.len()));
        }
        let labels: Vec<&str> = name.split('.').collect();
        for label in &labels {
            if label.is_empty() || label.len() > 63 {
                return Err(AddressError::LabelLength(s.to_string()));
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(AddressError::Characters(s.to_string()));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(AddressError::Hyphen(s.to_string()));
            }
        }
        // "10.0.0.256" is a mistyped IP, not a name: top-level labels are never numeric.
        if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return Err(AddressError::BadIp(s.to_string()));
        }
        Ok(Address::Name(name))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Ip(ip) => write!(f, "{ip}"),
            Address::Name(name) => f.write_str(name),
        }
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Topology, SpecError> {
        Topology::from_json(s.as_bytes())
    }

    fn invalid_field(s: &str) -> String {
        match parse(s) {
            Err(SpecError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid for {s}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_original_format() {
        let t = parse(
            r#"{"master":{"address":"node-1.redis-1.cluster.local"},
                "slaves":[{"address":"node-2.redis-1.cluster.local"},{"address":"10.0.0.3","port":6380}]}"#,
        )
        .unwrap();
        assert_eq!(t.master.address, Address::Name("node-1.redis-1.cluster.local".into()));
        assert_eq!(t.master.port, None);
        assert_eq!(t.slaves.len(), 2);
        assert_eq!(t.slaves[1].address, Address::Ip("10.0.0.3".parse().unwrap()));
        assert_eq!(t.slaves[1].port, Some(6380));
        assert_eq!(t.slaves[1].port_or_default(), 6380);
        assert_eq!(t.master.port_or_default(), DEFAULT_REDIS_PORT);
    }

    #[test]
    fn slaves_may_be_absent_null_or_empty() {
        for s in [
            r#"{"master":{"address":"::1"}}"#,
            r#"{"master":{"address":"::1"},"slaves":null}"#,
            r#"{"master":{"address":"::1"},"slaves":[]}"#,
        ] {
            assert!(parse(s).unwrap().slaves.is_empty(), "{s}");
        }
    }

    #[test]
    fn names_are_normalized() {
        let t = parse(r#"{"master":{"address":"Node-1.Example.COM."}}"#).unwrap();
        assert_eq!(t.master.address.to_string(), "node-1.example.com");
        let t = parse(r#"{"master":{"address":"_redis._tcp.master.redis-1.cluster.local"}}"#).unwrap();
        assert_eq!(t.master.address.to_string(), "_redis._tcp.master.redis-1.cluster.local");
    }

    #[test]
    fn rejects_with_the_offending_field() {
        assert_eq!(invalid_field(r#"{"slaves":[]}"#), "master");
        assert_eq!(invalid_field(r#"{"slaves":[],"master":null}"#), "master");
        assert_eq!(invalid_field(r#"{"master":{"address":"a"},"slave":[]}"#), "slave");
        assert_eq!(invalid_field(r#"{"master":{"adress":"a"}}"#), "master.adress");
        assert_eq!(invalid_field(r#"{"master":{"address":"a","prot":1}}"#), "master.prot");
        assert_eq!(invalid_field(r#"{"master":{"port":1}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":7}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"a"},"slaves":{"address":"b"}}"#), "slaves");
        assert_eq!(invalid_field(r#"{"master":{"address":"a"},"slaves":["b"]}"#), "slaves[0]");
        assert_eq!(invalid_field(r#"{"master":{"address":""}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"a b"}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"10.0.0.256"}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"a:6379"}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"[::1]"}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"-a.b"}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"a..b"}}"#), "master.address");
        assert_eq!(invalid_field(r#"{"master":{"address":"a","port":0}}"#), "master.port");
        assert_eq!(invalid_field(r#"{"master":{"address":"a","port":65536}}"#), "master.port");
        assert_eq!(invalid_field(r#"{"master":{"address":"a","port":-1}}"#), "master.port");
        assert_eq!(invalid_field(r#"{"master":{"address":"a","port":"6379"}}"#), "master.port");
        assert_eq!(invalid_field(r#"{"master":{"address":"a","port":1.5}}"#), "master.port");
        assert_eq!(
            invalid_field(r#"{"master":{"address":"a"},"slaves":[{"address":"b"},{"address":"c","port":99999}]}"#),
            "slaves[1].port"
        );
        assert_eq!(invalid_field(r#"{"master":[{"address":"a"},{"address":"b"}]}"#), "master");
        assert_eq!(invalid_field(r#"{"master":["a", 6379]}"#), "master");
        assert_eq!(invalid_field(r#"[]"#), "topology");
    }

    #[test]
    fn rejects_duplicates_including_the_default_port() {
        let err = parse(r#"{"master":{"address":"a"},"slaves":[{"address":"b"},{"address":"A","port":6379}]}"#)
            .unwrap_err();
        assert_eq!(
            err,
            SpecError::Invalid {
                field: "slaves[1]".into(),
                message: "a:6379 appears more than once in the topology".into()
            }
        );
        // Same host, other port: two instances on one machine is fine.
        assert!(parse(r#"{"master":{"address":"a"},"slaves":[{"address":"a","port":6380}]}"#).is_ok());
    }

    #[test]
    fn malformed_json_is_not_invalid() {
        for s in ["", "{", r#"{"master":}"#, r#"{"master":{"address":"a"}} trailing"#] {
            assert!(matches!(parse(s), Err(SpecError::Malformed(_))), "{s:?}");
        }
    }

    #[test]
    fn host_port_cli_form() {
        let m = Member::parse_host_port("127.0.0.1:7000").unwrap();
        assert_eq!(m.to_string(), "127.0.0.1:7000");
        let m = Member::parse_host_port("[::1]:7000").unwrap();
        assert_eq!(m.to_string(), "[::1]:7000");
        let m = Member::parse_host_port("::1").unwrap();
        assert_eq!(m.port, None);
        let m = Member::parse_host_port("node-1.redis-1.cluster.local").unwrap();
        assert_eq!(m.port, None);
        assert!(Member::parse_host_port("a:0").is_err());
        assert!(Member::parse_host_port("a:x").is_err());
        assert!(Member::parse_host_port(":1").is_err());
    }

    #[test]
    fn durability_is_optional_and_checked_against_the_group() {
        let with = |d: &str| parse(&format!(r#"{{"master":{{"address":"a"}},"slaves":[{{"address":"b"}}],"durability":{d}}}"#));
        let t = with(r#"{"min_replicas_to_write":1,"min_replicas_max_lag":2}"#).unwrap();
        assert_eq!(t.durability, Some(Durability { min_replicas_to_write: 1, min_replicas_max_lag: 2 }));
        assert_eq!(Topology::from_json(t.to_json().as_bytes()), Ok(t), "round trip");
        assert_eq!(
            with(r#"{"min_replicas_to_write":1}"#).unwrap().durability,
            Some(Durability { min_replicas_to_write: 1, min_replicas_max_lag: Durability::DEFAULT_MAX_LAG }),
            "redis's default lag"
        );
        let off = with(r#"{"min_replicas_to_write":0,"min_replicas_max_lag":0}"#).unwrap();
        assert_eq!(off.durability.map(|d| d.min_replicas_to_write), Some(0), "0 is an explicit \"no guard\"");
        assert_eq!(with("null").unwrap().durability, None);
        assert!(!parse(r#"{"master":{"address":"a"}}"#).unwrap().to_json().contains("durability"), "absent stays absent");

        let field = |d: &str| match with(d) {
            Err(SpecError::Invalid { field, message }) => format!("{field}: {message}"),
            other => panic!("{d}: expected Invalid, got {other:?}"),
        };
        assert_eq!(
            field(r#"{"min_replicas_to_write":2}"#),
            "durability.min_replicas_to_write: is 2 but the topology has 1 slave(s): the master could never take a write"
        );
        assert!(field(r#"{"min_replicas_to_write":1,"min_replicas_max_lag":0}"#).starts_with("durability.min_replicas_max_lag: must be at least 1"));
        assert!(field(r#"{"min_replicas_max_lag":3}"#).starts_with("durability.min_replicas_to_write: is required"));
        assert!(field(r#"{"min_replicas_to_write":-1}"#).contains("is not a whole number"));
        assert!(field(r#"{"min_replicas_to_write":1.5}"#).contains("is not a whole number"));
        assert!(field(r#"{"min_replicas":1}"#).starts_with("durability.min_replicas: unknown field"));
        assert!(field("3").starts_with("durability: must be a JSON object"));
        let fence = Durability { min_replicas_to_write: topology_fence(), min_replicas_max_lag: 1 };
        assert!(fence.validate(usize::MAX).unwrap_err().to_string().contains("the write fence"));
    }

    fn topology_fence() -> u32 {
        crate::FENCE_MIN_REPLICAS
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        prop_oneof![
            any::<std::net::Ipv4Addr>().prop_map(|ip| Address::Ip(ip.into())),
            any::<std::net::Ipv6Addr>().prop_map(|ip| Address::Ip(ip.into())),
            "[a-z_][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9-]{0,10}[a-z0-9]){0,3}"
                .prop_map(Address::Name),
        ]
    }

    fn arb_member() -> impl Strategy<Value = Member> {
        (arb_address(), proptest::option::of(1u16..)).prop_map(|(a, p)| Member::new(a, p))
    }

    proptest! {
        #[test]
        fn serialize_then_parse_round_trips(
            master in arb_member(),
            slaves in proptest::collection::vec(arb_member(), 0..6),
            durability in proptest::option::of((0u32..4, 1u32..100)),
        ) {
            let durability = durability.map(|(n, lag)| Durability { min_replicas_to_write: n, min_replicas_max_lag: lag });
            if let Ok(t) = Topology::new(master, slaves).and_then(|t| t.with_durability(durability)) {
                let json = t.to_json();
                prop_assert_eq!(Topology::from_json(json.as_bytes()), Ok(t));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Topology::from_json(&bytes);
        }

        #[test]
        fn arbitrary_json_shapes_never_panic(
            address in ".{0,40}",
            port in any::<i64>(),
            extra in proptest::option::of("[a-z]{1,8}"),
        ) {
            let mut member = serde_json::json!({"address": address, "port": port});
            if let Some(extra) = extra {
                member[extra] = serde_json::json!(1);
            }
            let doc = serde_json::json!({"master": member.clone(), "slaves": [member]});
            // Master and slave are the same member: never valid.
            prop_assert!(Topology::from_json(doc.to_string().as_bytes()).is_err());
        }

        /// A valid topology with bytes flipped, inserted or cut (what a hand
        /// edit in etcdctl does): an error or a topology that round-trips, never a panic.
        #[test]
        fn mutated_topologies_never_panic_and_what_parses_round_trips(
            master in arb_member(),
            slaves in proptest::collection::vec(arb_member(), 0..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..6),
        ) {
            let Ok(t) = Topology::new(master, slaves) else { return Ok(()) };
            let mut bytes = t.to_json().into_bytes();
            for (at, kind, byte) in edits {
                let i = at.index(bytes.len() + 1);
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => bytes.truncate(i),
                }
            }
            if let Ok(parsed) = Topology::from_json(&bytes) {
                prop_assert_eq!(Topology::from_json(parsed.to_json().as_bytes()), Ok(parsed));
            }
        }

        #[test]
        fn accepted_addresses_are_canonical(s in "[ -~]{0,30}") {
            if let Ok(a) = Address::parse(&s) {
                prop_assert_eq!(Address::parse(&a.to_string()), Ok(a));
            }
        }
    }
}
