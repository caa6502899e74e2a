//! Pure decisions of a cluster's worker: whether applying the topology is due.

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

#[cfg(test)]
mod tests {
    use super::*;

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
