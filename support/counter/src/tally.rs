//! What the writer saw, and the verdict once the list is read back.
//!
//! Every write ends in one of three outcomes, as in a Jepsen history:
//! *acknowledged* (redis answered OK), *rejected* (redis answered with an error,
//! or the command was never sent because no connection could be opened) and
//! *unknown* (timed out, or the connection died after the command was sent).
//! *Missing* ids were acknowledged but are gone (lost writes); *phantom* ids were
//! rejected but were applied anyway. A lossless topology change has neither. An
//! unknown write may or may not have landed: both are correct, so the ones that
//! did are only counted (*landed*).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Every write's outcome, in order within each bucket.
#[derive(Debug, Clone)]
pub struct Tally {
    pub started: Instant,
    /// When the writer stopped: a gap still open then ends here.
    pub stopped: Instant,
    /// Acknowledged ids with the instant of their acknowledgement.
    pub acked: Vec<(String, Instant)>,
    /// Ids redis refused (an error reply) or that were never sent, with the instant.
    pub rejected: Vec<(String, Instant)>,
    /// Ids whose write timed out or lost its connection after being sent.
    pub unknown: Vec<(String, Instant)>,
}

impl Tally {
    /// An empty tally of a writer starting now.
    pub fn new() -> Tally {
        let now = Instant::now();
        Tally { started: now, stopped: now, acked: Vec::new(), rejected: Vec::new(), unknown: Vec::new() }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Tally::new()
    }
}

/// The verdict of [`Tally::check`]; prints as the original design's tally line
/// with the unknown writes after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub acked: usize,
    pub missing: usize,
    pub rejected: usize,
    pub phantom: usize,
    pub unknown: usize,
    /// Unknown writes found in the list: applied, which is allowed.
    pub landed: usize,
}

impl Verdict {
    /// Nothing acknowledged was lost and nothing rejected was applied. A run
    /// that got no acknowledgement at all tested nothing, so it is not lossless.
    pub fn lossless(&self) -> bool {
        self.failure().is_none()
    }

    /// Why the verdict is not lossless, in words; `None` when it is.
    pub fn failure(&self) -> Option<String> {
        let mut reasons = Vec::new();
        if self.acked == 0 {
            reasons.push("no write was acknowledged, so nothing was tested".to_string());
        }
        if self.missing > 0 {
            reasons.push(format!("{} acknowledged writes are missing", self.missing));
        }
        if self.phantom > 0 {
            reasons.push(format!("{} rejected writes were applied", self.phantom));
        }
        (!reasons.is_empty()).then(|| reasons.join("; "))
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ack'd: {} ({} missing) err'd: {} ({} phantom) unknown: {} ({} landed)",
            self.acked, self.missing, self.rejected, self.phantom, self.unknown, self.landed
        )
    }
}

/// A stretch without acknowledgements, longer than the writer's own pacing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// From the writer's start to the last acknowledgement before the gap.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Writes rejected inside the window.
    pub rejected: usize,
    /// Writes with an unknown outcome inside the window.
    pub unknown: usize,
}

impl Tally {
    /// Compares with the list as read back from the final master.
    pub fn check(&self, list: &[String]) -> Verdict {
        let present: HashSet<&str> = list.iter().map(String::as_str).collect();
        let found = |ids: &[(String, Instant)]| ids.iter().filter(|(id, _)| present.contains(id.as_str())).count();
        Verdict {
            acked: self.acked.len(),
            missing: self.acked.len() - found(&self.acked),
            rejected: self.rejected.len(),
            phantom: found(&self.rejected),
            unknown: self.unknown.len(),
            landed: found(&self.unknown),
        }
    }

    /// Each stretch without an acknowledgement: between consecutive
    /// acknowledgements, and from the last one (or the start, if there was none)
    /// to the stop, so a writer that never resumed shows its outage in full.
    fn gaps(&self) -> impl Iterator<Item = (Instant, Instant)> + '_ {
        let last = self.acked.last().map_or(self.started, |(_, at)| *at);
        self.acked.windows(2).map(|w| (w[0].1, w[1].1)).chain(std::iter::once((last, self.stopped.max(last))))
    }

    /// The longest time without an acknowledgement around `[from, to]`: the
    /// write-unavailable window a client saw during a change made in that span.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.gaps().filter(|(a, b)| *b >= from && *a <= to).map(|(a, b)| b - a).max().unwrap_or_default()
    }

    /// Every gap without an acknowledgement longer than `threshold`.
    pub fn windows(&self, threshold: Duration) -> Vec<Window> {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let inside = |ids: &[(String, Instant)], a: Instant, b: Instant| ids.iter().filter(|(_, t)| *t > a && *t < b).count();
        self.gaps()
            .filter(|(a, b)| *b - *a > threshold)
            .map(|(a, b)| Window {
                start_ms: ms(a - self.started),
                duration_ms: ms(b - a),
                rejected: inside(&self.rejected, a, b),
                unknown: inside(&self.unknown, a, b),
            })
            .collect()
    }
}

/// Median and maximum of durations, in ms.
pub fn median_max_ms(values: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = values.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let median = match ms.len() {
        0 => 0.0,
        n if n % 2 == 1 => ms[n / 2],
        n => (ms[n / 2 - 1] + ms[n / 2]) / 2.0,
    };
    (median, ms.last().copied().unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Acknowledged, rejected and unknown writes at ms offsets; the writer stops at `stop` ms.
    fn tally(acks: &[(u64, &str)], rejects: &[(u64, &str)], unknowns: &[(u64, &str)], stop: u64) -> Tally {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let bucket = |ids: &[(u64, &str)]| ids.iter().map(|(ms, id)| (id.to_string(), at(*ms))).collect();
        Tally { started: t0, stopped: at(stop), acked: bucket(acks), rejected: bucket(rejects), unknown: bucket(unknowns) }
    }

    fn list(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn verdict_counts_missing_and_phantom() {
        let t = tally(&[(0, "a"), (1, "b"), (2, "c")], &[(3, "d"), (4, "e")], &[], 5);
        let v = t.check(&list(&["a", "c", "e"]));
        assert_eq!(v, Verdict { acked: 3, missing: 1, rejected: 2, phantom: 1, unknown: 0, landed: 0 });
        assert_eq!(v.to_string(), "ack'd: 3 (1 missing) err'd: 2 (1 phantom) unknown: 0 (0 landed)");
        assert!(!v.lossless());
        assert!(t.check(&list(&["a", "b", "c"])).lossless());
    }

    #[test]
    fn an_unknown_write_that_landed_is_not_a_phantom() {
        let t = tally(&[(0, "a")], &[(1, "r")], &[(2, "u1"), (3, "u2")], 4);
        let v = t.check(&list(&["a", "u2"]));
        assert_eq!(v, Verdict { acked: 1, missing: 0, rejected: 1, phantom: 0, unknown: 2, landed: 1 });
        assert_eq!(v.to_string(), "ack'd: 1 (0 missing) err'd: 1 (0 phantom) unknown: 2 (1 landed)");
        assert!(v.lossless(), "{v}");
        assert_eq!(v.failure(), None);
    }

    #[test]
    fn the_tally_line_starts_with_the_original_design() {
        let v = tally(&[(0, "a")], &[], &[], 1).check(&list(&["a"]));
        assert!(v.to_string().starts_with("ack'd: 1 (0 missing) err'd: 0 (0 phantom)"), "{v}");
    }

    #[test]
    fn nothing_acknowledged_is_not_lossless() {
        let v = tally(&[], &[(1, "r")], &[(2, "u")], 3).check(&[]);
        assert_eq!((v.missing, v.phantom), (0, 0));
        assert!(!v.lossless());
        assert!(v.failure().is_some_and(|f| f.contains("no write was acknowledged")), "{:?}", v.failure());
    }

    #[test]
    fn windows_and_gaps() {
        let t = tally(&[(0, "a"), (1, "b"), (50, "c"), (51, "d")], &[(10, "x")], &[(20, "y")], 52);
        let w = t.windows(Duration::from_millis(5));
        assert_eq!(w, [Window { start_ms: 1.0, duration_ms: 49.0, rejected: 1, unknown: 1 }]);
        let t0 = t.started;
        assert_eq!(t.longest_gap(t0 + Duration::from_millis(10), t0 + Duration::from_millis(11)), Duration::from_millis(49));
        assert_eq!(t.longest_gap(t0 + Duration::from_millis(50), t0 + Duration::from_millis(51)), Duration::from_millis(49));
    }

    #[test]
    fn a_writer_that_never_resumed_is_unavailable_until_it_stopped() {
        let t = tally(&[(0, "a"), (1, "b")], &[(10, "x")], &[(20, "y")], 500);
        let t0 = t.started;
        assert_eq!(t.longest_gap(t0 + Duration::from_millis(5), t0 + Duration::from_millis(6)), Duration::from_millis(499));
        assert_eq!(t.windows(Duration::from_millis(5)), [Window { start_ms: 1.0, duration_ms: 499.0, rejected: 1, unknown: 1 }]);
    }

    #[test]
    fn a_writer_that_never_got_an_acknowledgement_was_unavailable_throughout() {
        let t = tally(&[], &[(10, "x")], &[], 300);
        let t0 = t.started;
        assert_eq!(t.longest_gap(t0 + Duration::from_millis(100), t0 + Duration::from_millis(200)), Duration::from_millis(300));
    }

    #[test]
    fn median_and_max() {
        let d = |ms: u64| Duration::from_millis(ms);
        assert_eq!(median_max_ms(&[d(3), d(1), d(2)]), (2.0, 3.0));
        assert_eq!(median_max_ms(&[d(4), d(1), d(2), d(3)]), (2.5, 4.0));
        assert_eq!(median_max_ms(&[]), (0.0, 0.0));
    }
}
