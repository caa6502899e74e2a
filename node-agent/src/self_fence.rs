//! The rule for fencing our own redis when etcd is out of reach. Pure.
//!
//! The observer fails a master over once its registration is gone, that is once
//! etcd expired the agent's lease, and then only after `--failover-after-ms`. etcd
//! cannot expire the lease before the newest renewal it answered was *sent* plus
//! the TTL (it received it later). So an agent that counts `--self-fence-after-ms`
//! from that send, on its own monotonic clock, fences its master at least
//! `TTL - self_fence_after` before any failover can start, whatever the machines'
//! clocks say: only the rates of two clocks enter, not their readings. Fenced, the
//! master takes no writes that the promoted slave would lack, and its last writes
//! reach the slaves that still stream from it.
//!
//! Only the dictator lifts the fence, in an apply: the agent registers `fenced`,
//! and the observer re-applies a topology whose master is fenced.

use std::time::{Duration, Instant};

use topology::records::Role;

use crate::tracker::RedisState;

/// Whether the agent must fence its redis now: it is an unfenced master, and etcd
/// last answered a renewal sent at `reached`, `after` or more ago. `after` of zero
/// turns self-fencing off.
pub fn due(reached: Instant, now: Instant, after: Duration, redis: &RedisState) -> bool {
    !after.is_zero() && redis.role == Role::Master && !redis.fenced && now.saturating_duration_since(reached) >= after
}

/// Why a `--self-fence-after-ms` cannot keep its promise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadDelay {
    #[error(
        "--self-fence-after-ms ({after_ms}) must be shorter than the lease TTL ({ttl_ms} ms): etcd may expire the \
         lease, and the observer fail the master over, before the agent fences it"
    )]
    TooLate { after_ms: u128, ttl_ms: u128 },
    #[error(
        "--self-fence-after-ms ({after_ms}) must be at least half the lease TTL ({ttl_ms} ms): renewals go out \
         every third of it, and one must have time to be answered, or a healthy master fences itself"
    )]
    TooSoon { after_ms: u128, ttl_ms: u128 },
}

/// The delay to use: `given`, or by default two thirds of the lease TTL, when
/// the agent counts its lease lost (`service::etcd::KeptLease`); that leaves a
/// third of it, plus the observer's failover delay, before the earliest failover.
pub fn delay(given: Option<Duration>, lease_ttl: Duration) -> Result<Duration, BadDelay> {
    let after = given.unwrap_or(lease_ttl * 2 / 3);
    let (after_ms, ttl_ms) = (after.as_millis(), lease_ttl.as_millis());
    if after.is_zero() {
        Ok(after)
    } else if after >= lease_ttl {
        Err(BadDelay::TooLate { after_ms, ttl_ms })
    } else if after < lease_ttl / 2 {
        Err(BadDelay::TooSoon { after_ms, ttl_ms })
    } else {
        Ok(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER: Duration = Duration::from_millis(2500);

    fn redis(role: Role, fenced: bool) -> RedisState {
        RedisState { run_id: "r".into(), role, offset: 10, upstream: None, fenced }
    }

    #[test]
    fn a_master_is_fenced_once_etcd_has_been_out_of_reach_long_enough() {
        let t0 = Instant::now();
        let master = redis(Role::Master, false);
        assert!(!due(t0, t0, AFTER, &master));
        assert!(!due(t0, t0 + AFTER - Duration::from_millis(1), AFTER, &master));
        assert!(due(t0, t0 + AFTER, AFTER, &master));
        assert!(due(t0, t0 + AFTER * 10, AFTER, &master));
    }

    #[test]
    fn slaves_fenced_masters_and_unknown_roles_are_left_alone() {
        let t0 = Instant::now();
        let late = t0 + AFTER * 2;
        assert!(!due(t0, late, AFTER, &redis(Role::Slave, false)));
        assert!(!due(t0, late, AFTER, &redis(Role::Master, true)), "already fenced: nothing to do");
        assert!(!due(t0, late, AFTER, &redis(Role::Unknown, false)));
    }

    #[test]
    fn zero_turns_it_off() {
        let t0 = Instant::now();
        assert!(!due(t0, t0 + Duration::from_secs(3600), Duration::ZERO, &redis(Role::Master, false)));
    }

    #[test]
    fn a_renewal_newer_than_now_is_no_outage() {
        // `reached` is read from another task; it may be a hair ahead of `now`.
        let t0 = Instant::now();
        assert!(!due(t0 + Duration::from_millis(5), t0, AFTER, &redis(Role::Master, false)));
    }

    #[test]
    fn the_delay_defaults_to_when_the_lease_counts_as_lost_and_stays_between_half_and_all_of_it() {
        let ttl = Duration::from_secs(6);
        assert_eq!(delay(None, ttl), Ok(Duration::from_millis(4000)));
        assert_eq!(delay(Some(Duration::from_millis(3000)), ttl), Ok(Duration::from_millis(3000)));
        assert_eq!(delay(Some(Duration::from_millis(5999)), ttl), Ok(Duration::from_millis(5999)));
        assert_eq!(delay(Some(Duration::ZERO), ttl), Ok(Duration::ZERO), "off");
        let late = delay(Some(ttl), ttl).unwrap_err();
        assert_eq!(late, BadDelay::TooLate { after_ms: 6000, ttl_ms: 6000 });
        assert!(late.to_string().contains("must be shorter than the lease TTL (6000 ms)"));
        let soon = delay(Some(Duration::from_millis(2999)), ttl).unwrap_err();
        assert_eq!(soon, BadDelay::TooSoon { after_ms: 2999, ttl_ms: 6000 });
        assert!(soon.to_string().contains("at least half the lease TTL"));
    }
}
