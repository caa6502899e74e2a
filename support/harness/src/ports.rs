//! Free loopback ports.
//!
//! Asking the kernel for port 0 and releasing it races with other tests doing the
//! same, and the ephemeral range is also where outgoing connections get their
//! source ports. So ports come from 15000..32000 (below Linux's ephemeral range),
//! starting at a per-process offset and never handed out twice in one process, and
//! each is checked free for both TCP and UDP (dnsd serves both on one port).

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

const FIRST: u32 = 15000;
const COUNT: u32 = 17000;

static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);

/// A port on 127.0.0.1 that is free for TCP and UDP right now.
pub fn free_port() -> u16 {
    // Spread processes (nextest runs each test in its own) across the range.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % COUNT,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..COUNT {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % COUNT) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{}", FIRST + COUNT);
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = super::free_port();
        let b = super::free_port();
        assert_ne!(a, b);
        std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
    }
}
