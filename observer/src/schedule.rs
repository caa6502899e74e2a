//! Pure decisions of a cluster's worker: whether a round is due.

/// What a round applies: the topology and trigger as last seen in etcd. A new
/// trigger value or topology revision makes a round due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    /// etcd mod revision of `/config/<cluster>/topology` (0: not defined).
    pub topology_revision: i64,
    /// etcd mod revision of the trigger (0: none), and its value.
    pub trigger_revision: i64,
    pub trigger: Option<String>,
}

impl Target {
    pub fn has_topology(&self) -> bool {
        self.topology_revision > 0
    }
}

/// A round is due when what etcd holds differs from what was last applied.
/// Level-triggered: a missed event, a restart or a new leader still converges.
pub fn round_due(target: &Target, last_applied: Option<&Target>) -> bool {
    target.has_topology() && last_applied != Some(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(topology: i64, trigger: i64) -> Target {
        Target { topology_revision: topology, trigger_revision: trigger, trigger: Some(format!("t{trigger}")) }
    }

    #[test]
    fn a_round_is_due_for_anything_new() {
        assert!(round_due(&target(5, 0), None));
        assert!(!round_due(&target(5, 7), Some(&target(5, 7))));
        assert!(round_due(&target(5, 8), Some(&target(5, 7))), "new trigger");
        assert!(round_due(&target(6, 7), Some(&target(5, 7))), "new topology");
        assert!(!round_due(&Target::default(), None), "nothing defined yet");
        assert!(!round_due(&target(0, 3), None), "a trigger without a topology");
    }
}
