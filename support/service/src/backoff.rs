//! Capped exponential backoff, the one policy every retry loop uses: etcd
//! reconnections, the observer's campaigns and its failed rounds.
//!
//! [`delay_after`] is the pure rule (the delay after N consecutive failures), for
//! callers that keep the failure count themselves, as the observer's status
//! records do; [`Backoff`] carries the count for plain loops.

use std::time::Duration;

/// The delay after `failures` consecutive failures: `initial`, then doubling, up to
/// `max`. Zero failures wait `initial` too.
pub fn delay_after(failures: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// 100 ms, 200 ms, 400 ms, ... up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { initial, max, failures: 0 }
    }

    /// Counts a failure and returns the delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay_after(self.failures, self.initial, self.max)
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn reset(&mut self) {
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
    fn delay_after_doubles_up_to_the_cap_and_never_overflows() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let got: Vec<u128> = (1..=7).map(|f| delay_after(f, min, max).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(delay_after(0, min, max), min);
        assert_eq!(delay_after(u32::MAX, min, max), max);
        assert_eq!(delay_after(u32::MAX, Duration::MAX, Duration::MAX), Duration::MAX);
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
