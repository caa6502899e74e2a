//! Pure decisions of a cluster's worker: whether applying the topology is due,
//! and when to look again.

use std::time::Duration;

use service::backoff::delay_after;

/// What the operator asked for, by etcd revision: the topology and trigger as
/// last seen. A new trigger value or topology revision makes applying due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DesiredRevision {
    /// etcd mod revision of `/config/<cluster>/topology` (0: not defined).
    pub topology_revision: i64,
    /// etcd mod revision of the trigger (0: none), and its value.
    pub trigger_revision: i64,
    pub trigger: Option<String>,
}

impl DesiredRevision {
    pub fn has_topology(&self) -> bool {
        self.topology_revision > 0
    }
}

/// Applying is due when what etcd holds differs from what was last applied.
/// Level-triggered: a missed event, a restart or a new leader still converges.
pub fn apply_due(desired: &DesiredRevision, applied: Option<&DesiredRevision>) -> bool {
    desired.has_topology() && applied != Some(desired)
}

/// What a reconcile pass asks for: when to look again. A wake-up from the
/// leader's watch always comes sooner; it is only a hint to look now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing pending: look again on the next change in etcd.
    AwaitChange,
    /// Something is pending (a retry, a master that is down): look again after
    /// this long even if etcd does not change.
    Requeue(Duration),
}

impl Action {
    /// The earlier of two wishes, when one pass has several reasons to come back.
    pub fn sooner(self, other: Action) -> Action {
        match (self, other) {
            (Action::Requeue(a), Action::Requeue(b)) => Action::Requeue(a.min(b)),
            (Action::AwaitChange, other) | (other, Action::AwaitChange) => other,
        }
    }

    pub fn requeue_after(self) -> Option<Duration> {
        match self {
            Action::AwaitChange => None,
            Action::Requeue(after) => Some(after),
        }
    }
}

/// The retry policy, apart from reconciling: after `failures` consecutive
/// failures, back off from `min`, doubling up to `max`.
pub fn error_policy(failures: u32, min: Duration, max: Duration) -> Action {
    Action::Requeue(delay_after(failures, min, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn ms(n: u64) -> Action {
        Action::Requeue(Duration::from_millis(n))
    }

    #[test]
    fn the_sooner_wish_wins_and_awaiting_a_change_is_the_latest() {
        assert_eq!(ms(300).sooner(ms(200)), ms(200));
        assert_eq!(ms(200).sooner(ms(300)), ms(200));
        assert_eq!(Action::AwaitChange.sooner(ms(300)), ms(300));
        assert_eq!(ms(300).sooner(Action::AwaitChange), ms(300));
        assert_eq!(Action::AwaitChange.sooner(Action::AwaitChange), Action::AwaitChange);
    }

    #[test]
    fn failures_back_off_doubling_up_to_the_cap() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(500));
        let got: Vec<Action> = (1..=5).map(|f| error_policy(f, min, max)).collect();
        assert_eq!(got, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(ms(100).requeue_after(), Some(Duration::from_millis(100)));
        assert_eq!(Action::AwaitChange.requeue_after(), None);
    }

    fn desired(topology: i64, trigger: i64) -> DesiredRevision {
        DesiredRevision { topology_revision: topology, trigger_revision: trigger, trigger: Some(format!("t{trigger}")) }
    }

    #[test]
    fn applying_is_due_for_anything_new() {
        assert!(apply_due(&desired(5, 0), None));
        assert!(!apply_due(&desired(5, 7), Some(&desired(5, 7))));
        assert!(apply_due(&desired(5, 8), Some(&desired(5, 7))), "new trigger");
        assert!(apply_due(&desired(6, 7), Some(&desired(5, 7))), "new topology");
        assert!(!apply_due(&DesiredRevision::default(), None), "nothing defined yet");
        assert!(!apply_due(&desired(0, 3), None), "a trigger without a topology");
    }
}
