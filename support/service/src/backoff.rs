//! Capped exponential backoff between reconnection attempts (etcd, mostly), shared
//! by every service so they all retry the same way.

use std::time::Duration;

/// 100 ms, 200 ms, 400 ms, ... up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, next: initial, failures: 0 }
    }

    /// The delay before the next attempt, and doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        self.failures += 1;
        delay
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
        self.failures = 0;
    }
}

/// Spreads `delay` over `[delay/2, delay]` by `fraction` (0..1), so that agents
/// that lost etcd together do not all come back in the same millisecond.
pub fn jittered(delay: Duration, fraction: f64) -> Duration {
    let fraction = fraction.clamp(0.0, 1.0);
    delay.mul_f64(0.5 + 0.5 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.failures(), 9);
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        let d = Duration::from_millis(1000);
        assert_eq!(jittered(d, 0.0), Duration::from_millis(500));
        assert_eq!(jittered(d, 1.0), d);
        assert_eq!(jittered(d, 7.0), d);
        assert_eq!(jittered(d, -1.0), Duration::from_millis(500));
    }
}
