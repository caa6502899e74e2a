#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The fleet units (`deploy/fleet`, legacy: fleet left CoreOS in 2018), read the
//! way fleet read them. fleet parsed a unit with go-systemd's `unit.Deserialize`
//! (vendored in coreos/fleet), split `[X-Fleet]` values into quoted words, replaced
//! `%n %N %p %i` in them (its `unitPrintf`, and nothing else), warned about keys it
//! did not know (`Job.ValidateRequirements`) and refused contradictory ones
//! (`api.ValidateOptions`); `[Unit]` and `[Service]` went to systemd on the machine
//! it picked, which expands its own specifiers (`%H`, `%m`, ...) there. This file
//! ports those steps from coreos/fleet v1.0.0 (`unit/unit.go`, `job/job.go`,
//! `api/units.go`) and checks every unit with them, stricter than fleet in one
//! place: an unknown `[X-Fleet]` key, which fleet only logged, is an error here.
//!
//! deploy.rs checks the same units' sections and scheduling and runs
//! `systemd-analyze verify` on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn fleet_units() -> Vec<(String, String)> {
    let mut units: Vec<(String, String)> = std::fs::read_dir(repo().join("deploy/fleet"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "service"))
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&path).unwrap()))
        .collect();
    units.sort();
    assert!(!units.is_empty(), "no fleet units");
    units
}

// ---------------------------------------------------------------------------
// go-systemd's unit.Deserialize, as fleet vendored it.

#[derive(Debug, Clone, PartialEq)]
struct UnitOption {
    section: String,
    name: String,
    value: String,
}

/// systemd's LINE_MAX as go-systemd checks it: a longer line is an error.
const LINE_MAX: usize = 2048;

/// The lexer of go-systemd's `deserialize.go`, step for step: text before the
/// first section is skipped, `#`/`;` start a comment only where a section or an
/// option may start (and a comment line ending in `\` goes on), nothing may follow
/// `]` on a section line, an option name ends at `=` and may not span lines, a
/// value ending in `\` goes on to the next line (the backslash and a newline are
/// kept), and a blank line ends it.
fn deserialize(text: &str) -> Result<Vec<UnitOption>, String> {
    if let Some(line) = text.lines().find(|l| l.len() >= LINE_MAX) {
        return Err(format!("line too long (max {LINE_MAX} bytes): {}...", &line[..40]));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut lexer = Lexer { chars: &chars, pos: 0 };
    let mut options = Vec::new();
    let mut section: Option<String> = None;
    loop {
        let Some(c) = lexer.next() else { return Ok(options) };
        match (&section, c) {
            (_, '[') => {
                let name = lexer.until(']').ok_or("unable to find end of section")?;
                let (garbage, _) = lexer.rest_of_line();
                if !garbage.trim().is_empty() {
                    return Err(format!("found garbage after section name {name}: {garbage:?}"));
                }
                section = Some(name);
            }
            (_, '#' | ';') => lexer.ignore_line(),
            (None, _) => {}
            (Some(_), c) if c.is_whitespace() => {}
            (Some(section), _) => {
                lexer.pos -= 1;
                let mut name = String::new();
                loop {
                    match lexer.next() {
                        None => return Err("EOF".into()),
                        Some('\n' | '\r') => return Err("unexpected newline encountered while parsing option name".into()),
                        Some('=') => break,
                        Some(c) => name.push(c),
                    }
                }
                let mut value = String::new();
                loop {
                    let (line, eof) = lexer.rest_of_line();
                    if line.trim().is_empty() {
                        break;
                    }
                    value.push_str(&line);
                    if !line.ends_with('\\') {
                        break;
                    }
                    if !eof {
                        value.push('\n');
                    }
                }
                let value = if value.ends_with('\n') { format!("{}\n", value.trim()) } else { value.trim().to_string() };
                options.push(UnitOption { section: section.clone(), name: name.trim().to_string(), value });
            }
        }
    }
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Lexer<'_> {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        self.pos += usize::from(c.is_some());
        c
    }

    /// Up to (not including) `end`, which is consumed; None at EOF.
    fn until(&mut self, end: char) -> Option<String> {
        let rest = &self.chars[self.pos..];
        let at = rest.iter().position(|c| *c == end)?;
        self.pos += at + 1;
        Some(rest[..at].iter().collect())
    }

    /// The rest of the line without its `\r\n`/`\n`, and whether EOF ended it.
    fn rest_of_line(&mut self) -> (String, bool) {
        let (line, eof) = match self.until('\n') {
            Some(line) => (line, false),
            None => {
                let line = self.chars[self.pos..].iter().collect();
                self.pos = self.chars.len();
                (line, true)
            }
        };
        (line.strip_suffix('\r').map(str::to_string).unwrap_or(line), eof)
    }

    fn ignore_line(&mut self) {
        loop {
            let (line, _) = self.rest_of_line();
            if !line.strip_suffix(' ').unwrap_or(&line).ends_with('\\') {
                return;
            }
        }
    }
}

/// fleet's `mapOptions`: section -> key -> values; an `[X-Fleet]` value that is
/// a list of quoted words (`"a=b" "c=d"`) is several values.
fn contents(options: &[UnitOption]) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut map: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for option in options {
        let values = if option.section == "X-Fleet" { multivalue(&option.value) } else { vec![option.value.clone()] };
        map.entry(option.section.clone()).or_default().entry(option.name.clone()).or_default().extend(values);
    }
    map
}

/// fleet's `parseMultivalueLine`.
fn multivalue(line: &str) -> Vec<String> {
    if !(line.starts_with('"') && line.ends_with('"')) {
        return vec![line.to_string()];
    }
    let (mut values, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => values.push(std::mem::take(&mut word)),
            c => word.push(c),
        }
    }
    values.push(word);
    values
}

// ---------------------------------------------------------------------------
// What fleet checked and did with a unit.

/// `job.validRequirements`: the `[X-Fleet]` keys fleet knew, with their
/// deprecated `X-` / `X-Condition` spellings.
const FLEET_KEYS: [&str; 11] = [
    "MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID", "X-ConditionMachineOf", "MachineOf",
    "X-Conflicts", "Conflicts", "X-ConditionMachineMetadata", "MachineMetadata", "Global", "Replaces",
];

/// fleet's `unit.NewUnitNameInfo`: (full name, name, prefix, instance).
fn name_info(unit: &str) -> (String, String, String, String) {
    let name = unit.rsplit_once('.').map_or(unit, |(n, _)| n);
    let (prefix, instance) = name.split_once('@').unwrap_or((name, ""));
    (unit.to_string(), name.to_string(), prefix.to_string(), instance.to_string())
}

/// fleet's `unitPrintf`: `%n %N %p %i`, in that order, and no other specifier.
fn fleet_printf(value: &str, unit: &str) -> String {
    let (full, name, prefix, instance) = name_info(unit);
    value.replace("%n", &full).replace("%N", &name).replace("%p", &prefix).replace("%i", &instance)
}

/// fleet's `api.ValidateName` (systemd's `unit_name_is_valid`).
fn validate_unit_name(name: &str) -> Result<(), String> {
    const TYPES: [&str; 13] =
        ["automount", "busname", "device", "mount", "path", "scope", "service", "slice", "snapshot", "socket", "swap", "target", "timer"];
    const TEMPLATE_TYPES: [&str; 5] = ["path", "service", "socket", "target", "timer"];
    if name.is_empty() || name.len() > 256 {
        return Err(format!("{name:?}: unit name length"));
    }
    let (stem, suffix) = name.rsplit_once('.').ok_or(format!("{name}: unit name must contain \".\""))?;
    if !TYPES.contains(&suffix) {
        return Err(format!("{name}: invalid unit type {suffix:?}"));
    }
    if name.contains('@') && !TEMPLATE_TYPES.contains(&suffix) {
        return Err(format!("{name}: invalid unit type for template {suffix:?}"));
    }
    if let Some(c) = stem.chars().find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c))) {
        return Err(format!("{name}: invalid character {c:?} in unit name"));
    }
    if name.starts_with('@') {
        return Err(format!("{name}: unit name cannot start in \"@\""));
    }
    Ok(())
}

/// Go's `path.Match` for the patterns units use (`*`, `?`, literals).
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.chars().next() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).filter(|i| name.is_char_boundary(*i)).take_while(|i| !name[..*i].contains('/'))
            .any(|i| glob_match(&pattern[1..], &name[i..])),
        Some('?') => name.chars().next().is_some_and(|c| c != '/' && glob_match(&pattern[1..], &name[c.len_utf8()..])),
        Some(p) => name.starts_with(p) && glob_match(&pattern[p.len_utf8()..], &name[p.len_utf8()..]),
    }
}

/// The `[X-Fleet]` requirements of `unit` scheduled as `instance` (e.g.
/// `dnsd@1.service`), after fleet's specifier replacement.
fn requirements(unit: &BTreeMap<String, BTreeMap<String, Vec<String>>>, instance: &str) -> BTreeMap<String, Vec<String>> {
    unit.get("X-Fleet")
        .map(|keys| keys.iter().map(|(k, vs)| (k.clone(), vs.iter().map(|v| fleet_printf(v, instance)).collect())).collect())
        .unwrap_or_default()
}

/// Everything fleet checked when `fleetctl submit`/`start` got `text` as
/// `instance`, plus the values it would act on being well formed. Errors, all.
fn fleet_check(text: &str, instance: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = validate_unit_name(instance) {
        problems.push(e);
    }
    let options = match deserialize(text) {
        Ok(options) => options,
        Err(e) => return vec![format!("{instance}: {e}")],
    };
    let unit = contents(&options);
    let reqs = requirements(&unit, instance);
    for key in reqs.keys() {
        if !FLEET_KEYS.contains(&key.as_str()) {
            problems.push(format!("{instance}: unrecognized requirement in [X-Fleet] section: {key:?}"));
        }
    }
    let get = |keys: &[&str]| -> Vec<String> { keys.iter().flat_map(|k| reqs.get(*k).cloned().unwrap_or_default()).collect() };
    let words = |keys: &[&str]| -> Vec<String> { get(keys).iter().flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>()).collect() };
    let conflicts = words(&["X-Conflicts", "Conflicts"]);
    let replaces = get(&["Replaces"]);
    let peers = get(&["X-ConditionMachineOf", "MachineOf"]);
    let target = !get(&["MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID"]).is_empty();
    let global = reqs.get("Global").and_then(|v| v.last()).is_some_and(|v| ["true", "yes", "1", "on", "t"].contains(&v.to_lowercase().as_str()));
    // api.ValidateOptions: contradictions fleet refused.
    for peer in &peers {
        for conflict in &conflicts {
            if glob_match(conflict, peer) {
                problems.push(format!("{instance}: unresolvable requirements: peer {peer:?} matches conflict {conflict:?}"));
            }
        }
        for replace in &replaces {
            if glob_match(replace, peer) {
                problems.push(format!("{instance}: unresolvable requirements: peer {peer:?} matches replace {replace:?}"));
            }
        }
    }
    for (both, why) in [
        (target && !peers.is_empty(), "MachineID cannot be used with Peers"),
        (target && !conflicts.is_empty(), "MachineID cannot be used with Conflicts"),
        (target && global, "MachineID cannot be used with Global"),
        (target && !replaces.is_empty(), "MachineID cannot be used with Replaces"),
        (global && !peers.is_empty(), "Global cannot be used with Peers"),
        (global && !replaces.is_empty(), "Global cannot be used with Replaces"),
        (!conflicts.is_empty() && !replaces.is_empty(), "Conflicts cannot be used with Replaces"),
    ] {
        if both {
            problems.push(format!("{instance}: {why}"));
        }
    }
    // What fleet would act on: no specifier left that fleet does not replace
    // (it would be taken literally), metadata as key=value (fleet silently
    // drops anything else, so the unit would run on every machine).
    for (key, values) in &reqs {
        for value in values {
            if value.contains('%') {
                problems.push(format!("{instance}: [X-Fleet] {key}={value}: fleet replaces only %n %N %p %i"));
            }
        }
    }
    for pair in get(&["X-ConditionMachineMetadata", "MachineMetadata"]) {
        if !pair.split_once('=').is_some_and(|(k, v)| !k.is_empty() && !v.is_empty() && !v.contains('=')) {
            problems.push(format!("{instance}: MachineMetadata {pair:?} is not key=value"));
        }
    }
    problems.extend(systemd_side(&unit, instance));
    problems
}

// ---------------------------------------------------------------------------
// What systemd then does with [Unit] and [Service] on the machine.

/// A machine as fleet's era had them: a fully qualified host name with capitals
/// (cloud images' names often are), its /etc/machine-id and boot id.
const HOST: &str = "Redis-Host-1.us-east-1.compute.internal";
const MACHINE_ID: &str = "5f1c2e0d9b8a47e6a3c2b1d0e9f8a7b6";
const BOOT_ID: &str = "0d9b8a47e6a3c2b15f1c2e0de9f8a7b6";

/// Specifiers systemd knew in fleet's era (Container Linux shipped systemd
/// 229-238 while it shipped fleet), expanded for `instance` on [`HOST`]; None for
/// one it did not know or a lone `%`.
fn systemd_printf(value: &str, instance: &str) -> Option<String> {
    let (full, name, prefix, inst) = name_info(instance);
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let specifier = chars.next()?;
        out.push_str(&match specifier {
            'n' => full.clone(),
            'N' => name.clone(),
            'p' | 'P' => prefix.clone(),
            'i' | 'I' => inst.clone(),
            'H' => HOST.to_string(),
            'm' => MACHINE_ID.to_string(),
            'b' => BOOT_ID.to_string(),
            '%' => "%".to_string(),
            // Known, and nothing here depends on their values.
            'f' | 'c' | 'r' | 'R' | 't' | 'u' | 'U' | 'h' | 's' | 'v' => format!("<%{specifier}>"),
            _ => return None,
        });
    }
    Some(out)
}

/// Every specifier in [Unit]/[Service] is one systemd knew; etcd is etcd v3's
/// unit; the node-agent's `--cluster` and `--node`, expanded on [`HOST`], are
/// names the node-agent accepts (single lowercase DNS labels).
fn systemd_side(unit: &BTreeMap<String, BTreeMap<String, Vec<String>>>, instance: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for section in ["Unit", "Service"] {
        for (key, values) in unit.get(section).into_iter().flatten() {
            for value in values {
                if systemd_printf(value, instance).is_none() {
                    problems.push(format!("{instance}: [{section}] {key}={value}: a specifier systemd does not know"));
                }
                // etcd2.service (etcd 2.x) never served the v3 gRPC API these
                // services speak; Container Linux ran etcd v3 as etcd-member.service.
                if value.split_whitespace().any(|w| w == "etcd2.service" || w == "etcd.service") {
                    problems.push(format!("{instance}: [{section}] {key}={value}: etcd v3 is etcd-member.service"));
                }
            }
        }
    }
    let exec: Vec<&String> = unit.get("Service").and_then(|s| s.get("ExecStart")).into_iter().flatten().collect();
    for line in exec {
        let Some(expanded) = systemd_printf(line, instance) else { continue };
        let words: Vec<&str> = expanded.split_whitespace().collect();
        for (flag, kind) in [("--cluster", "cluster"), ("--node", "node")] {
            if let Some(value) = words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1))
                && let Err(e) = topology::validate_label(kind, value)
            {
                problems.push(format!("{instance}: ExecStart {flag} {value} (on host {HOST}): {e}"));
            }
        }
    }
    problems
}

/// The instances the README starts of each template.
fn instances(template: &str) -> Vec<String> {
    let (prefix, suffix) = template.split_once("@.").unwrap();
    let names: &[&str] = if prefix.starts_with("redis-") { &["redis-1", "redis-2"] } else { &["1", "2"] };
    names.iter().map(|i| format!("{prefix}@{i}.{suffix}")).collect()
}

// ---------------------------------------------------------------------------

#[test]
fn every_fleet_unit_passes_fleets_checks_with_specifiers_expanded() {
    let mut problems = Vec::new();
    let mut used_keys = BTreeSet::new();
    for (template, text) in fleet_units() {
        let options = deserialize(&text).unwrap_or_else(|e| panic!("{template}: {e}"));
        used_keys.extend(options.iter().filter(|o| o.section == "X-Fleet").map(|o| o.name.clone()));
        for instance in instances(&template) {
            problems.extend(fleet_check(&text, &instance));
        }
    }
    assert!(problems.is_empty(), "fleet would not run these as meant:\n{}", problems.join("\n"));
    assert_eq!(used_keys, ["Conflicts", "Global", "MachineMetadata"].map(String::from).into_iter().collect());
}

#[test]
fn fleet_schedules_replicas_apart_and_redis_on_its_clusters_machines() {
    for (template, text) in fleet_units() {
        let unit = contents(&deserialize(&text).unwrap());
        for instance in instances(&template) {
            let reqs = requirements(&unit, &instance);
            if template.starts_with("redis-") {
                // fleet replaced %i: every machine with metadata hosts=<cluster>.
                let cluster = name_info(&instance).3;
                assert_eq!(reqs["MachineMetadata"], [format!("hosts={cluster}")], "{instance}");
                assert_eq!(reqs["Global"], ["true"], "{instance}");
            } else {
                let conflicts = &reqs["Conflicts"];
                let prefix = name_info(&instance).2;
                let sibling = format!("{prefix}@9.service");
                assert!(conflicts.iter().any(|c| glob_match(c, &sibling)), "{instance}: kept off the machine of {sibling}");
                assert!(!conflicts.iter().any(|c| glob_match(c, "redis-server@redis-1.service")), "{instance}: only its own kind");
            }
        }
    }
}

#[test]
fn the_node_agent_names_its_node_by_machine_id_on_a_host_with_a_qualified_name() {
    let text = std::fs::read_to_string(repo().join("deploy/fleet/redis-node-agent@.service")).unwrap();
    let unit = contents(&deserialize(&text).unwrap());
    let exec = systemd_printf(&unit["Service"]["ExecStart"][0], "redis-node-agent@redis-1.service").unwrap();
    assert!(exec.contains(&format!("--cluster redis-1 --node {MACHINE_ID} ")), "{exec}");
}

#[test]
fn the_checks_catch_what_fleet_or_the_agent_would_get_wrong() {
    let unit = |service: &str, fleet: &str| format!("[Unit]\nDescription=x\n\n[Service]\n{service}\n\n[X-Fleet]\n{fleet}\n");
    let agent = "redis-node-agent@redis-1.service";
    let errors = |text: &str, instance: &str| fleet_check(text, instance).join("\n");
    assert_eq!(errors(&unit("ExecStart=/opt/bin/node-agent --cluster %i --node %m", "Global=true"), agent), "");
    // The host name as node name: refused on a host with a qualified name.
    let e = errors(&unit("ExecStart=/opt/bin/node-agent --cluster %i --node %H", "Global=true"), agent);
    assert!(e.contains(&format!("--node {HOST}")), "{e}");
    // etcd 2.x's unit.
    let e = errors(&unit("ExecStart=/opt/bin/dnsd", "Conflicts=dnsd@*.service").replace("[Unit]\n", "[Unit]\nAfter=etcd2.service\n"), "dnsd@1.service");
    assert!(e.contains("etcd-member.service"), "{e}");
    // A key fleet did not know (a typo), a specifier fleet does not replace, bad metadata.
    assert!(errors(&unit("ExecStart=/x", "MachineMetaData=hosts=%i"), agent).contains("unrecognized requirement"));
    assert!(errors(&unit("ExecStart=/x", "MachineMetadata=hosts=%H"), agent).contains("fleet replaces only"));
    assert!(errors(&unit("ExecStart=/x", "MachineMetadata=hosts"), agent).contains("not key=value"));
    // Contradictions fleet refused.
    assert!(errors(&unit("ExecStart=/x", "Global=true\nMachineOf=a.service"), agent).contains("Global cannot be used with Peers"));
    assert!(errors(&unit("ExecStart=/x", "Conflicts=a*.service\nMachineOf=ab.service"), "x@1.service").contains("peer"));
    assert!(errors(&unit("ExecStart=/x", "Conflicts=a.service\nReplaces=b.service"), "x@1.service").contains("Conflicts cannot be used with Replaces"));
    // A specifier systemd did not know, a bad unit name, unparseable text.
    assert!(errors(&unit("ExecStart=/x %Z", "Global=true"), agent).contains("systemd does not know"));
    assert!(errors(&unit("ExecStart=/x", "Global=true"), "x@1.socketz").contains("invalid unit type"));
    assert!(errors("[Unit] trailing\nA=b\n", agent).contains("garbage after section name"));
}

#[test]
fn the_parser_reads_units_as_go_systemd_does() {
    let text = "ignored before any section\n[Unit]\n  # indented comment \\\n  still the comment\nDescription = a b \nExecStart=/x \\\n  --y\n\n[X-Fleet]\nMachineMetadata=\"a=b\" \"c=d\"\n;c\n";
    let options = deserialize(text).unwrap();
    let got: Vec<(&str, &str, &str)> = options.iter().map(|o| (o.section.as_str(), o.name.as_str(), o.value.as_str())).collect();
    assert_eq!(got, [("Unit", "Description", "a b"), ("Unit", "ExecStart", "/x \\\n  --y"), ("X-Fleet", "MachineMetadata", "\"a=b\" \"c=d\"")]);
    assert_eq!(contents(&options)["X-Fleet"]["MachineMetadata"], ["a=b", "c=d"]);
    assert_eq!(multivalue("hosts=redis-1"), ["hosts=redis-1"]);
    assert!(deserialize("[Unit\n").is_err());
    assert!(deserialize("[Unit]\nName\nmore=1\n").unwrap_err().contains("unexpected newline"));
    assert!(deserialize(&format!("[Unit]\nA={}\n", "x".repeat(LINE_MAX))).unwrap_err().contains("line too long"));
    assert!(glob_match("dnsd@*.service", "dnsd@2.service") && !glob_match("dnsd@*.service", "dnsd@2.socket"));
    assert!(!glob_match("a*", "a/b") && glob_match("a?c", "abc"));
}
