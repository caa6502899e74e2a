//! Which runtime-API commands bring a backend's server slots to the published
//! state. Pure: the slots come from `show servers state <backend>`, the wanted
//! addresses from dnsd's records.
//!
//! Write backend (one slot): when the wanted master is not the slot's address, the
//! slot is taken out of service (unless a hold already did), its sessions (to the old master) are shut, it gets
//! the new address, is marked healthy and made ready, in that order: no new session
//! can reach the old master once the first command ran, and none is shut on the new
//! one. A slot already at the master but held in maintenance is made ready.
//!
//! Read backend (several slots): every wanted slave not in a ready slot gets one
//! (preferring a slot already at its address, then a slot in maintenance); every
//! ready slot at an address no longer wanted is taken out of service and its
//! sessions shut. A slot that is already right gets no command: pushing the same
//! state twice is a no-op.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// `srv_admin_state` bits (HAProxy `enum srv_admin`): forced, inherited,
/// configuration and resolution maintenance. Any of them keeps a slot from taking
/// sessions. (0x40, `HMAINT`, only says the FQDN came from an SRV record.)
const ADMIN_MAINT_BITS: u32 = ADMIN_FORCED_MAINT | 0x02 | 0x04 | 0x20;
/// `SRV_ADMF_FMAINT`: maintenance forced from the runtime API.
const ADMIN_FORCED_MAINT: u32 = 0x01;
/// `srv_op_state` of a server that is down (`SRV_ST_STOPPED`).
const OP_STOPPED: u32 = 0;

/// One server slot, as `show servers state` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    /// `None` before the slot ever had an address (`init-addr none`).
    pub address: Option<SocketAddr>,
    pub op_state: u32,
    pub admin_state: u32,
}

impl Slot {
    /// In maintenance of any kind: takes no sessions whatever its checks say.
    pub fn in_maintenance(&self) -> bool {
        self.admin_state & ADMIN_MAINT_BITS != 0
    }

    /// In maintenance set through the runtime API (`FMAINT`), which only the runtime API
    /// lifts; resolution maintenance comes and goes with DNS answers (and HAProxy 2.6
    /// even lifts it on a refused `set server addr`).
    pub fn forced_maintenance(&self) -> bool {
        self.admin_state & ADMIN_FORCED_MAINT != 0
    }

    /// Takes new sessions (not in maintenance, and its checks do not say it is down).
    pub fn ready(&self) -> bool {
        !self.in_maintenance() && self.op_state != OP_STOPPED
    }
}

/// One runtime-API command on `backend/server`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `set server B/S state maint`: no new sessions.
    Maint { backend: String, server: String },
    /// `shutdown sessions server B/S`.
    ShutdownSessions { backend: String, server: String },
    /// `set server B/S addr IP port P`.
    Addr { backend: String, server: String, address: SocketAddr },
    /// `set server B/S health up`: the member was just checked by the dictator (or
    /// is published live); do not wait for HAProxy's next check.
    HealthUp { backend: String, server: String },
    /// `set server B/S state ready`.
    Ready { backend: String, server: String },
}

impl Command {
    /// Whether HAProxy's answer to this command means it was done: `set server …
    /// addr` answers with what changed, the others with nothing.
    pub fn accepts(&self, response: &str) -> bool {
        let response = response.trim();
        match self {
            Command::Addr { .. } => {
                response.starts_with("IP changed from") || response.starts_with("no need to change the addr")
            }
            _ => response.is_empty(),
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Maint { backend, server } => write!(f, "set server {backend}/{server} state maint"),
            Command::ShutdownSessions { backend, server } => write!(f, "shutdown sessions server {backend}/{server}"),
            Command::Addr { backend, server, address } => {
                write!(f, "set server {backend}/{server} addr {} port {}", address.ip(), address.port())
            }
            Command::HealthUp { backend, server } => write!(f, "set server {backend}/{server} health up"),
            Command::Ready { backend, server } => write!(f, "set server {backend}/{server} state ready"),
        }
    }
}

/// `show servers state` output could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unexpected `show servers state` output: {0}")]
pub struct StateError(pub String);

/// The slots of `backend` named `<prefix><n>` (a `server-template`), in the order
/// HAProxy lists them. Fails on anything but the version-1 format it documents, so
/// a changed format is reported instead of misread.
pub fn parse_servers_state(text: &str, backend: &str, prefix: &str) -> Result<Vec<Slot>, StateError> {
    let mut lines = text.lines();
    match lines.next().map(str::trim) {
        Some("1") => {}
        other => return Err(StateError(format!("expected format version 1, got {other:?}"))),
    }
    let mut slots = Vec::new();
    for line in lines.map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port (19th)
        let [_, be_name, _, name, addr, op, admin, ..] = fields[..] else {
            return Err(StateError(format!("short line {line:?}")));
        };
        let port = fields.get(18).ok_or_else(|| StateError(format!("no srv_port in {line:?}")))?;
        if be_name != backend || !is_template_slot(name, prefix) {
            continue;
        }
        let number = |field: &str| field.parse::<u32>().map_err(|_| StateError(format!("{field:?} in {line:?}")));
        let port: u16 = port.parse().map_err(|_| StateError(format!("port {port:?} in {line:?}")))?;
        let address = match addr {
            "-" => None,
            addr => {
                let ip: IpAddr = addr.parse().map_err(|_| StateError(format!("address {addr:?} in {line:?}")))?;
                Some(SocketAddr::new(ip, port))
            }
        };
        slots.push(Slot { name: name.to_string(), address, op_state: number(op)?, admin_state: number(admin)? });
    }
    Ok(slots)
}

fn is_template_slot(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Commands that point the write backend's (first) slot at `master`. `None` (the
/// master is a host name dnsd cannot give an address for, or nothing is published)
/// pushes nothing: DNS resolution handles it. While a move to `hold` is under way
/// and not yet published, the slot only goes (or stays) out of service.
pub fn plan_write(backend: &str, slots: &[Slot], master: Option<SocketAddr>, hold: Option<SocketAddr>) -> Vec<Command> {
    let Some(slot) = slots.first() else { return Vec::new() };
    let (b, s) = (backend.to_string(), slot.name.clone());
    if hold.is_some() && hold != master {
        return if slot.forced_maintenance() { Vec::new() } else { vec![Command::Maint { backend: b, server: s }] };
    }
    let Some(master) = master else { return Vec::new() };
    // A slot that never had an address cannot be given one at run time (HAProxy 2.6
    // refuses: no address family yet); DNS resolution gives it its first.
    if slot.address.is_none() {
        return Vec::new();
    }
    if slot.address == Some(master) {
        return if slot.in_maintenance() { vec![Command::Ready { backend: b, server: s }] } else { Vec::new() };
    }
    // A held slot is already out of service: one command less mid-move.
    let maint = (!slot.forced_maintenance()).then(|| Command::Maint { backend: b.clone(), server: s.clone() });
    maint.into_iter().chain([
        Command::ShutdownSessions { backend: b.clone(), server: s.clone() },
        Command::Addr { backend: b.clone(), server: s.clone(), address: master },
        Command::HealthUp { backend: b.clone(), server: s.clone() },
        Command::Ready { backend: b, server: s },
    ])
    .collect()
}

/// Commands that make the read backend's slots serve exactly `slaves`. Slaves
/// beyond the slots are left out (and logged by the caller).
pub fn plan_read(backend: &str, slots: &[Slot], slaves: &[SocketAddr]) -> Vec<Command> {
    let wanted: BTreeSet<SocketAddr> = slaves.iter().copied().collect();
    let mut commands = Vec::new();
    let mut served = BTreeSet::new();
    let mut free: Vec<&Slot> = Vec::new();
    let command = |slot: &Slot| (backend.to_string(), slot.name.clone());
    // Slots at a wanted address keep it (one per address); the rest are free.
    for slot in slots {
        match slot.address {
            Some(address) if wanted.contains(&address) && !served.contains(&address) => {
                served.insert(address);
                if slot.in_maintenance() {
                    let (backend, server) = command(slot);
                    commands.push(Command::Ready { backend, server });
                }
            }
            _ => free.push(slot),
        }
    }
    // Leaving (or duplicate) slots that still take sessions stop taking them.
    for slot in &free {
        if !slot.in_maintenance() && slot.address.is_some() {
            let (backend, server) = command(slot);
            commands.push(Command::Maint { backend: backend.clone(), server: server.clone() });
            commands.push(Command::ShutdownSessions { backend, server });
        }
    }
    // Joining slaves take free slots, in order. A slot that never had an address
    // cannot be given one at run time (HAProxy refuses: no address family yet);
    // it is left to DNS resolution.
    let mut free = free.into_iter().filter(|slot| slot.address.is_some());
    for address in wanted.iter().filter(|a| !served.contains(a)) {
        let Some(slot) = free.next() else { break };
        let (backend, server) = command(slot);
        commands.push(Command::Addr { backend: backend.clone(), server: server.clone(), address: *address });
        commands.push(Command::HealthUp { backend: backend.clone(), server: server.clone() });
        commands.push(Command::Ready { backend, server });
    }
    commands
}
