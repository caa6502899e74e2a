//! What the writer saw, and the verdict once the list is read back.
//!
//! *Missing* ids were acknowledged but are gone (lost writes); *phantom* ids
//! errored but were applied anyway. A lossless topology change has neither.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Every write's outcome, in order.
#[derive(Debug, Clone)]
pub struct Tally {
    pub started: Instant,
    /// Acknowledged ids with the instant of their acknowledgement.
    pub acked: Vec<(String, Instant)>,
    /// Ids whose write failed (or whose outcome is unknown), with the instant.
    pub errored: Vec<(String, Instant)>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { started: Instant::now(), acked: Vec::new(), errored: Vec::new() }
    }
}

/// The verdict of [`Tally::check`]; prints as the original design's tally line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub acked: usize,
    pub missing: usize,
    pub errored: usize,
    pub phantom: usize,
}

impl Verdict {
    pub fn lossless(&self) -> bool {
        self.missing == 0 && self.phantom == 0
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ack'd: {} ({} missing) err'd: {} ({} phantom)", self.acked, self.missing, self.errored, self.phantom)
    }
}

/// A stretch without acknowledgements, longer than the writer's own pacing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Window {
    /// From the writer's start to the last acknowledgement before the gap.
    pub start_ms: f64,
    pub duration_ms: f64,
    /// Writes that errored inside the window.
    pub errors: usize,
}

impl Tally {
    /// Compares with the list as read back from the final master.
    pub fn check(&self, list: &[String]) -> Verdict {
        let present: HashSet<&str> = list.iter().map(String::as_str).collect();
        Verdict {
            acked: self.acked.len(),
            missing: self.acked.iter().filter(|(id, _)| !present.contains(id.as_str())).count(),
            errored: self.errored.len(),
            phantom: self.errored.iter().filter(|(id, _)| present.contains(id.as_str())).count(),
        }
    }

    /// The longest time without an acknowledgement around `[from, to]`: the
    /// write-unavailable window a client saw during a change made in that span.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        self.acked
            .windows(2)
            .map(|w| (w[0].1, w[1].1))
            .filter(|(a, b)| *b >= from && *a <= to)
            .map(|(a, b)| b - a)
            .max()
            .unwrap_or_default()
    }

    /// Every gap between consecutive acknowledgements longer than `threshold`.
    pub fn windows(&self, threshold: Duration) -> Vec<Window> {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        self.acked
            .windows(2)
            .filter(|w| w[1].1 - w[0].1 > threshold)
            .map(|w| Window {
                start_ms: ms(w[0].1 - self.started),
                duration_ms: ms(w[1].1 - w[0].1),
                errors: self.errored.iter().filter(|(_, t)| *t > w[0].1 && *t < w[1].1).count(),
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

    fn tally(acks: &[(u64, &str)], errors: &[(u64, &str)]) -> Tally {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        Tally {
            started: t0,
            acked: acks.iter().map(|(ms, id)| (id.to_string(), at(*ms))).collect(),
            errored: errors.iter().map(|(ms, id)| (id.to_string(), at(*ms))).collect(),
        }
    }

    #[test]
    fn verdict_counts_missing_and_phantom() {
        let t = tally(&[(0, "a"), (1, "b"), (2, "c")], &[(3, "d"), (4, "e")]);
        let list: Vec<String> = ["a", "c", "e"].iter().map(|s| s.to_string()).collect();
        let v = t.check(&list);
        assert_eq!(v, Verdict { acked: 3, missing: 1, errored: 2, phantom: 1 });
        assert_eq!(v.to_string(), "ack'd: 3 (1 missing) err'd: 2 (1 phantom)");
        assert!(!v.lossless());
        assert!(t.check(&["a", "b", "c"].map(String::from)).lossless());
    }

    #[test]
    fn windows_and_gaps() {
        let t = tally(&[(0, "a"), (1, "b"), (50, "c"), (51, "d")], &[(10, "x"), (20, "y")]);
        let w = t.windows(Duration::from_millis(5));
        assert_eq!(w, [Window { start_ms: 1.0, duration_ms: 49.0, errors: 2 }]);
        let t0 = t.started;
        assert_eq!(t.longest_gap(t0 + Duration::from_millis(10), t0 + Duration::from_millis(11)), Duration::from_millis(49));
        assert_eq!(t.longest_gap(t0 + Duration::from_millis(50), t0 + Duration::from_millis(51)), Duration::from_millis(49));
    }

    #[test]
    fn median_and_max() {
        let d = |ms: u64| Duration::from_millis(ms);
        assert_eq!(median_max_ms(&[d(3), d(1), d(2)]), (2.0, 3.0));
        assert_eq!(median_max_ms(&[d(4), d(1), d(2), d(3)]), (2.5, 4.0));
        assert_eq!(median_max_ms(&[]), (0.0, 0.0));
    }
}
